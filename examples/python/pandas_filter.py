#!/usr/bin/env python3
"""A pandas job: reads a CSV of posts, keeps the rows the registry allows
for PURPOSE (allowed_mask), writes them to OUT, and prints a summary by
decision on stderr.

  pandas_filter.py --purpose ai_training posts.csv allowed.csv

Columns: author, post_id, kind, visibility, created_at (ISO 8601).
"""
import argparse
import sys

import consent_registry  # before pandas and grpc: gRPC's fork support

import pandas as pd


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("out")
    parser.add_argument("--purpose", required=True)
    parser.add_argument("--target")
    args = parser.parse_args()

    df = pd.read_csv(args.csv, parse_dates=["created_at"])
    client = consent_registry.Client(args.target)
    mask = client.allowed_mask(df, args.purpose, columns={
        "user_id": "author", "content_id": "post_id", "content_type": "kind",
        "visibility": "visibility", "create_time": "created_at"})
    df[mask].to_csv(args.out, index=False)
    print("%d of %d rows allowed for %s" % (mask.sum(), len(df), args.purpose), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
