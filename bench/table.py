"""bench/run.sh's table: the median of each row's runs, and its ratios.

  table.py RESULTS.jsonl

Each row is compared with its ceiling, the same calls answered by
consent-empty-server (which validates, stores and decides nothing), and
with its peer, what a user would run instead (Redis, bench/peers.sh), by
decisions/s (items/s for writes: one per SetPreference or SADD, the
batch's size per BatchSetPreferences). A peer runs with uniformly random
users only, so zipf rows are compared with it as well.
"""
import json
import statistics
import sys

# row: (its ceiling, its peer)
COMPARED = {
    "Check, closed loop": ("Check, closed loop, empty handler", "Redis SISMEMBER, 64 clients"),
    "Check (h2load)": ("Check (h2load), empty handler", None),
    "BatchCheck 1,000 items": ("BatchCheck 1,000 items, empty handler",
                               "Redis SMISMEMBER 1,000, 8 clients"),
    "BatchCheck 1,000 at 1,500/s": ("BatchCheck 1,000 at 1,500/s, empty handler", None),
    "StreamCheck 1,000 per message": ("StreamCheck 1,000 per message, empty handler",
                                      "Redis SMISMEMBER 1,000, 8 clients"),
    "BatchCheck 10,000 items": ("BatchCheck 10,000 items, empty handler",
                                "Redis SMISMEMBER 10,000, 8 clients"),
    "StreamCheck 10,000 per message": ("StreamCheck 10,000 per message, empty handler",
                                       "Redis SMISMEMBER 10,000, 8 clients"),
    "SetPreference, 64 in flight, empty handler answering from another thread": (
        "SetPreference, 64 in flight, empty handler", None),
    "SetPreference, 64 in flight": ("SetPreference, 64 in flight, empty handler",
                                    "Redis SADD, appendfsync always, 64 clients"),
    "BatchSetPreferences of 100": ("BatchSetPreferences of 100, empty handler", None),
}


def number(value, digits=0):
    return "—" if value is None else f"{value:,.{digits}f}"


def main(path):
    rows = {}
    for line in open(path):
        r = json.loads(line)
        if "label" in r:
            rows.setdefault((r["label"], r["distribution"]), []).append(r)

    def median(rs, field):
        values = [field(r) for r in rs]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def rate(label, dist):
        rs = rows.get((label, dist)) or rows.get((label, "uniform"))
        return median(rs, lambda r: r["decisions_per_s"]) if rs else None

    print("| row | users | calls/s | decisions/s | p50 µs | p99 µs | p99.9 µs | errors "
          "| RYW violations | / ceiling | / peer |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (label, dist), rs in rows.items():
        latency = lambda key: median(rs, lambda r: r["latency_us"].get(key))
        ratios = []
        mine = rate(label, dist)
        for other in COMPARED.get(label, (None, None)):  # its ceiling, its peer
            theirs = rate(other, dist) if other is not None else None
            ratios.append(f"{mine / theirs:.2f}" if mine and theirs else "")
        errors = sum(sum(r["errors"].values()) for r in rs)
        p50 = latency("p50")
        if p50 is None and latency("mean") is not None:
            p50_text = f"mean {number(latency('mean'))}"
        else:
            p50_text = number(p50)
        print(f"| {label} | {dist} | {number(median(rs, lambda r: r['calls_per_s']))} | "
              f"{number(median(rs, lambda r: r['decisions_per_s']))} | {p50_text} | "
              f"{number(latency('p99'))} | {number(latency('p99.9'))} | {errors} | "
              f"{sum(r['read_your_writes_violations'] for r in rs)} | {ratios[0]} | {ratios[1]} |")
    runs = max((len(rs) for rs in rows.values()), default=0)
    print(f"\n({runs} runs per row, median; results in {path})")


if __name__ == "__main__":
    main(sys.argv[1])
