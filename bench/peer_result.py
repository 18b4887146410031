"""A peer's output as one result line in consent-bench's JSON shape.

  peer_result.py redis LABEL RUN ITEMS CLIENTS  < redis-benchmark --csv output
  peer_result.py h2load LABEL RUN               < h2load output

Used by bench/peers.sh; bench/run.sh prints the table from these lines.
Latency fields a peer does not report are null.
"""
import csv
import io
import json
import re
import sys


def redis(label, run, items, clients, text):
    csv.field_size_limit(sys.maxsize)  # the test name is the whole command
    r = list(csv.DictReader(io.StringIO(text)))[-1]
    rps = float(r["rps"])
    return {"label": label, "run": int(run), "mode": "redis", "distribution": "uniform",
            "concurrency": int(clients), "batch": int(items), "calls_per_s": rps,
            "decisions_per_s": rps * int(items),
            "latency_us": {"p50": float(r["p50_latency_ms"]) * 1000,
                           "p99": float(r["p99_latency_ms"]) * 1000, "p99.9": None},
            "errors": {}, "read_your_writes_violations": 0}


def h2load(label, run, text):
    rps = float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", text).group(1))
    failed, errored = map(int, re.search(
        r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, "
        r"(\d+) errored", text).groups())
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text).group(1)
    unit = {"ms": 1000.0, "us": 1.0, "s": 1e6}[re.search(r"[a-z]+$", mean).group(0)]
    mean_us = float(re.sub(r"[a-z]+$", "", mean)) * unit
    errors = {k: v for k, v in (("failed", failed), ("errored", errored)) if v}
    return {"label": label, "run": int(run), "mode": "h2load", "distribution": "uniform",
            "concurrency": 64, "calls_per_s": rps, "decisions_per_s": rps,
            "latency_us": {"p50": None, "p99": None, "p99.9": None, "mean": mean_us},
            "errors": errors, "read_your_writes_violations": 0}


def main(argv):
    kind, args = argv[1], argv[2:]
    text = sys.stdin.read()
    if kind == "redis":
        print(json.dumps(redis(*args, text)))
    elif kind == "h2load":
        print(json.dumps(h2load(*args, text)))
    else:
        sys.exit(f"peer_result.py: unknown peer {kind}")


if __name__ == "__main__":
    main(sys.argv)
