"""A Client made before fork works in the children of a multiprocessing
pool (the shape of a Spark mapPartitions), and in the parent after. The
scenario runs in a fresh interpreter, as a pipeline's driver would: the
other tests' state (a Python gRPC server among them) stays out of it."""
import json
import multiprocessing
import os
import subprocess
import sys
import unittest

import support
from support import post

import consent_registry

CLIENT = None


def check_partition(bounds):
    start, end = bounds
    items = [post("alice" if i % 2 == 0 else "carol", "p%d" % i) for i in range(start, end)]
    return os.getpid(), [d.reason for d in CLIENT.check_many(items, "ai_training")]


def driver(target):
    """The pipeline's driver: uses its Client, forks a pool that uses the
    same Client, then uses it again. Prints what it saw as JSON."""
    global CLIENT
    CLIENT = consent_registry.Client(target)
    before = CLIENT.check("ai_training", "alice", "p", content_type="POST", visibility="PUBLIC",
                          create_time=1_700_000_000).reason
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(check_partition, [(i, i + 1_000) for i in range(0, 8_000, 1_000)])
    after = CLIENT.check("ai_training", "carol", "p", content_type="POST", visibility="PUBLIC",
                         create_time=1_700_000_000).reason
    print(json.dumps({"before": before, "after": after, "parent": os.getpid(),
                      "children": sorted({pid for pid, _ in results}),
                      "reasons": [r for _, partition in results for r in partition],
                      "fork_support": os.environ.get("GRPC_ENABLE_FORK_SUPPORT")}))


class ForkTest(support.ServerTest):
    def test_a_client_used_across_fork(self):
        self.seed()
        run = subprocess.run([sys.executable, __file__, self.server.address],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        seen = json.loads(run.stdout)
        self.assertEqual(seen["fork_support"], "true")  # set by importing the package
        self.assertEqual(seen["before"], "ALLOWED_DEFAULT")
        self.assertTrue(seen["children"])
        self.assertNotIn(seen["parent"], seen["children"])
        self.assertEqual(seen["reasons"], ["ALLOWED_DEFAULT", "DENIED_OBJECTION"] * 4_000)
        self.assertEqual(seen["after"], "DENIED_OBJECTION")


if __name__ == "__main__":
    if len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
        driver(sys.argv[1])
    else:
        unittest.main()
