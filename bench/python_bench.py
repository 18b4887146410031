"""Decisions per second from one Python process through the
consent_registry package (check_many, filter_allowed), against a consentd
preloaded by consent-bench (users user-0 .. user-N-1); and, with
--mode=encode, the package's own cost without a server: encoding the
requests and reading canned responses. Prints one JSON line in
consent-bench's shape, for bench/run.sh's table.

  python bench/python_bench.py --target=127.0.0.1:50051 --users=1000000 \\
      --mode=check_many --duration=10
"""
import argparse
import json
import random
import sys
import time

import consent_registry
from consent_registry import _wire


def posts(users, distribution, rng):
    """An endless stream of (user, post) items like consent-bench's."""
    n = 0
    if distribution == "uniform":
        pick = lambda: rng.randrange(users)
    else:  # zipf-like: a few users much more often
        pick = lambda: min(users - 1, int(rng.paretovariate(1.1)) - 1)
    while True:
        yield ("user-%d" % pick(), "post-%d" % n, "POST", "PUBLIC", 1_714_564_800)
        n += 1


def timed(iterator, duration, warmup, done=None):
    """Consumes iterator for warmup + duration seconds: the decisions made
    in the last `duration` seconds (done(): how many so far; default: the
    items yielded) and the seconds measured."""
    yielded = 0
    done = done or (lambda: yielded)
    end_warmup = time.monotonic() + warmup
    for _ in iterator:
        yielded += 1
        if time.monotonic() >= end_warmup:
            break
    first, start = done(), time.monotonic()
    end = start + duration
    for _ in iterator:
        yielded += 1
        if yielded & 1023 == 0 and time.monotonic() >= end:
            break
    return done() - first, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=["check_many", "filter_allowed", "encode"],
                        default="check_many")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--in_flight", type=int, default=4)
    seconds = lambda text: float(text[:-1]) if text.endswith("s") else float(text)
    parser.add_argument("--duration", type=seconds, default=10.0, help="seconds (10 or 10s)")
    parser.add_argument("--warmup", type=seconds, default=2.0)
    parser.add_argument("--distribution", choices=["uniform", "zipf"], default="uniform")
    args = parser.parse_args()
    rng = random.Random(1)
    items = posts(args.users, args.distribution, rng)
    client = consent_registry.Client(args.target)
    errors = {}
    if args.mode == "encode":
        # The client's side alone: encode messages of --batch items and
        # read a canned response of as many decisions, as check_many does.
        encoder = _wire.ItemEncoder()
        response = consent_registry._client.registry_pb2.StreamCheckResponse()
        for i in range(args.batch):
            response.decisions.add(allowed=True, reason=1, policy_version="2026-11-27.1",
                                   revision=12345)
        canned = response.SerializeToString()

        def encoded():
            while True:
                message = [encoder.encode(next(items)) for _ in range(args.batch)]
                _wire.encode_request("ai_training", message)
                # As check_many reads them: split, each distinct one parsed once.
                answers, _ = _wire.split_response(canned)
                for raw in answers:
                    decision = cache.get(raw)
                    if decision is None:
                        decision = cache[raw] = consent_registry.Decision.from_proto(
                            consent_registry._client.types_pb2.Decision.FromString(raw))
                    yield decision.allowed
        cache = {}
        stream = encoded()
    elif args.mode == "check_many":
        stream = client.check_many(items, "ai_training", batch_size=args.batch,
                                   max_in_flight=args.in_flight)
    else:
        stream = client.filter_allowed(items, "ai_training", batch_size=args.batch,
                                       max_in_flight=args.in_flight)
    # filter_allowed yields the allowed posts only: count the checked ones.
    done = (lambda: stream.checked) if args.mode == "filter_allowed" else None
    try:
        decisions, elapsed = timed(stream, args.duration, args.warmup, done)
    except consent_registry.ConsentError as e:
        errors[e.code.name] = errors.get(e.code.name, 0) + 1
        decisions, elapsed = 0, args.duration
    stream.close()
    print(json.dumps({
        "mode": "python-" + args.mode, "distribution": args.distribution,
        "calls_per_s": decisions / elapsed / args.batch, "decisions_per_s": decisions / elapsed,
        "latency_us": {"p50": 0, "p99": 0, "p99.9": 0}, "errors": errors,
        "read_your_writes_violations": 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
