"""Offline decisions per second from one Python process
(consent_registry.offline.Snapshot.check_many), over a snapshot that
bench/offline_bench wrote: 1,000,000 random users of it (uniform), public
posts made in 2023, purpose ai_training, RUNS calls each of the whole
array, for ids given as a list of str (with and without content ids) and
as numpy arrays (dtype bytes and object). Prints each run and the median.

Usage: /path/to/venv/bin/python bench/offline_python_bench.py SNAPSHOT PUBLIC_KEY [RUNS]
(a virtual environment where consent_registry is installed with its
compiled module: client/python/install.sh with CONSENT_OFFLINE_MODULE)."""
import random
import statistics
import sys
import time

import numpy

from consent_registry import offline

path, public_key = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
start = time.perf_counter()
snapshot = offline.Snapshot(path, public_key)
print("loaded %d subjects in %.3f s" % (snapshot.subjects, time.perf_counter() - start))
n = snapshot.subjects
rng = random.Random(7)
ids = ["user-%d" % rng.randrange(n) for _ in range(1_000_000)]
content_ids = ["post-%d" % i for i in range(len(ids))]
cases = [("list of str", ids, None), ("list of str + content ids", ids, content_ids),
         ("numpy bytes ('S')", numpy.array(ids, dtype="S"), None),
         ("numpy object", numpy.array(ids, dtype=object), None)]
for name, users, contents in cases:
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        allowed = snapshot.check_many(users, contents, purpose="ai_training",
                                      create_times=1_700_000_000)
        rates.append(len(ids) / (time.perf_counter() - t))
    print("%-28s median %10.0f decisions/s  runs %s  allowed %.3f" % (
        name, statistics.median(rates), " ".join("%.0f" % r for r in rates), allowed.mean()))
