"""A Client made before fork works in the children of a multiprocessing
pool (the shape of a Spark mapPartitions), and in the parent after."""
import multiprocessing
import os
import unittest

import support
from support import post

import consent_registry

CLIENT = None


def check_partition(bounds):
    start, end = bounds
    items = [post("alice" if i % 2 == 0 else "carol", "p%d" % i) for i in range(start, end)]
    return os.getpid(), [d.reason for d in CLIENT.check_many(items, "ai_training")]


class ForkTest(support.ServerTest):
    def test_a_client_used_across_fork(self):
        global CLIENT
        self.adult("alice")
        self.adult("carol")
        self.client.set_preference("carol", "ai_training", "OBJECTED")
        CLIENT = self.client
        # The parent's channel is open and in use when the pool forks.
        self.assertEqual(self.client.check("ai_training", "alice", "p", content_type="POST",
                                           visibility="PUBLIC", create_time=1_700_000_000).reason,
                         "ALLOWED_DEFAULT")
        self.assertEqual(os.environ.get("GRPC_ENABLE_FORK_SUPPORT"), "true")
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(check_partition, [(i, i + 1_000) for i in range(0, 8_000, 1_000)])
        self.assertNotIn(os.getpid(), {pid for pid, _ in results})
        reasons = [r for _, partition in results for r in partition]
        self.assertEqual(reasons, ["ALLOWED_DEFAULT", "DENIED_OBJECTION"] * 4_000)
        # And the parent goes on with its own channel.
        self.assertEqual(self.client.check("ai_training", "carol", "p", content_type="POST",
                                           visibility="PUBLIC", create_time=1_700_000_000).reason,
                         "DENIED_OBJECTION")


if __name__ == "__main__":
    unittest.main()
