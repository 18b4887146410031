#!/usr/bin/env python3
"""The shape of a Spark mapPartitions: a process pool (fork) filters the
partitions of a JSON lines file in parallel, each worker streaming its
partition through the one Client made before the pool forked, and the
allowed posts are written in input order.

  parallel_filter.py --purpose ai_training --workers 4 posts.jsonl > allowed.jsonl
"""
import argparse
import itertools
import json
import multiprocessing
import sys

import consent_registry

CLIENT = None  # made before fork; each worker process gets its own channel
PURPOSE = None


def filter_partition(lines):
    """One partition: its allowed lines, in order."""
    def key(line):
        post = json.loads(line)
        return (post["user_id"], post["content_id"], post["content_type"], post["visibility"],
                post.get("create_time"))
    return list(CLIENT.filter_allowed(lines, PURPOSE, key=key))


def partitions(lines, size):
    it = iter(lines)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def main():
    global CLIENT, PURPOSE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--purpose", required=True)
    parser.add_argument("--target")
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--partition_size", type=int, default=50_000)
    args = parser.parse_args()
    CLIENT = consent_registry.Client(args.target)
    PURPOSE = args.purpose
    with open(args.file) as f, multiprocessing.get_context("fork").Pool(args.workers) as pool:
        rows = (line for line in f if line.strip())
        kept = 0
        # imap keeps the partitions' order.
        for part, allowed in enumerate(pool.imap(filter_partition,
                                                 partitions(rows, args.partition_size))):
            sys.stdout.writelines(allowed)
            kept += len(allowed)
            print("partition %d done: %d allowed so far" % (part, kept), file=sys.stderr)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
