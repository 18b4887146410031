#!/usr/bin/env python3
"""Posts in, allowed posts out: reads JSON lines (one post each) on stdin or
from FILE, writes the posts the registry allows for PURPOSE to stdout, in
order, with progress on stderr. Fail-closed: a post whose fields are
invalid is left out (and counted); a failed call stops the run with a
non-zero exit, and what was written before it stays valid.

  filter_jsonl.py --purpose ai_training posts.jsonl > allowed.jsonl

Each post names its author, id, type, visibility and creation time; the
field names are options (--user_field and so on).
"""
import argparse
import json
import sys
import time

import consent_registry


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help="JSON lines (default: stdin)")
    parser.add_argument("--purpose", required=True)
    parser.add_argument("--target", help="consentd host:port (default: $CONSENT_TARGET)")
    parser.add_argument("--ca_file")
    parser.add_argument("--token_file")
    parser.add_argument("--user_field", default="user_id")
    parser.add_argument("--id_field", default="content_id")
    parser.add_argument("--type_field", default="content_type")
    parser.add_argument("--visibility_field", default="visibility")
    parser.add_argument("--time_field", default="create_time")
    parser.add_argument("--progress_every", type=float, default=2.0, help="seconds")
    args = parser.parse_args()

    client = consent_registry.Client(args.target, ca_file=args.ca_file,
                                     token_file=args.token_file)
    source = open(args.file) if args.file else sys.stdin
    fields = (args.user_field, args.id_field, args.type_field, args.visibility_field,
              args.time_field)

    def rows():
        for line in source:
            if line.strip():
                yield line

    def key(line):
        post = json.loads(line)
        return tuple(post.get(f) for f in fields)

    started = last = time.monotonic()
    kept = client.filter_allowed(rows(), args.purpose, key=key)
    out = sys.stdout
    try:
        for line in kept:
            out.write(line if line.endswith("\n") else line + "\n")
            now = time.monotonic()
            if now - last >= args.progress_every:
                last = now
                report(kept, now - started)
    except consent_registry.ConsentError as e:
        print("filter_jsonl: stopped after %d posts: %s" % (kept.checked, e), file=sys.stderr)
        return 1
    finally:
        out.flush()
    report(kept, time.monotonic() - started, final=True)
    return 0


def report(kept, elapsed, final=False):
    rate = kept.checked / elapsed if elapsed > 0 else 0
    print("%s%d posts checked, %d allowed, %d invalid; %.0f posts/s; registry revision %d" % (
        "done: " if final else "", kept.checked, kept.allowed, kept.invalid, rate, kept.revision),
        file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
