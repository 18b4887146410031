"""The examples of examples/python, run as a user runs them against a real
consentd: their output checked line by line."""
import json
import os
import subprocess
import sys
import unittest

import support

EXAMPLES = os.path.join(support.ROOT, "examples", "python")


class ExamplesTest(support.ServerTest):
    extra_args = ("--watch_checkpoint_interval=100ms",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.seed()
        cls.posts = []
        for i in range(1_000):
            cls.posts.append({"user_id": ["alice", "carol", "nobody"][i % 3],
                              "content_id": "p%d" % i, "content_type": "POST",
                              "visibility": "PUBLIC" if i % 4 else "FRIENDS",
                              "create_time": "2024-05-01T12:00:00Z", "text": "post %d" % i})
        cls.posts.insert(500, {"user_id": "", "content_id": "bad", "content_type": "POST",
                               "visibility": "PUBLIC"})
        cls.allowed = [p for p in cls.posts
                       if p["user_id"] == "alice" and p["visibility"] == "PUBLIC"]
        cls.jsonl = os.path.join(cls.tmp, "posts.jsonl")
        with open(cls.jsonl, "w") as f:
            f.writelines(json.dumps(p) + "\n" for p in cls.posts)

    def run_example(self, name, *args, check=True):
        env = dict(os.environ, CONSENT_TARGET=self.server.address)
        return subprocess.run([sys.executable, os.path.join(EXAMPLES, name)] + list(args),
                              env=env, capture_output=True, text=True, check=check, timeout=120)

    def test_filter_jsonl(self):
        result = self.run_example("filter_jsonl.py", "--purpose", "ai_training", self.jsonl)
        self.assertEqual([json.loads(line) for line in result.stdout.splitlines()], self.allowed)
        self.assertIn("done: 1001 posts checked, %d allowed, 1 invalid" % len(self.allowed),
                      result.stderr)

    def test_filter_jsonl_fails_closed_when_the_server_is_unreachable(self):
        env = dict(os.environ, CONSENT_TARGET="127.0.0.1:%d" % support.free_port())
        result = subprocess.run([sys.executable, os.path.join(EXAMPLES, "filter_jsonl.py"),
                                 "--purpose", "ai_training", self.jsonl],
                                env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertIn("filter_jsonl: stopped after 0 posts: UNAVAILABLE", result.stderr)

    def test_pandas_filter(self):
        import pandas as pd

        csv = os.path.join(self.tmp, "posts.csv")
        pd.DataFrame({
            "author": [p["user_id"] for p in self.posts],
            "post_id": [p["content_id"] for p in self.posts],
            "kind": [p["content_type"] for p in self.posts],
            "visibility": [p["visibility"] for p in self.posts],
            "created_at": ["2024-05-01T12:00:00Z"] * len(self.posts),
        }).to_csv(csv, index=False)
        out = os.path.join(self.tmp, "allowed.csv")
        result = self.run_example("pandas_filter.py", "--purpose", "ai_training", csv, out)
        kept = pd.read_csv(out)
        self.assertEqual(kept["post_id"].tolist(), [p["content_id"] for p in self.allowed])
        self.assertIn("%d of 1001 rows allowed for ai_training" % len(self.allowed), result.stderr)

    def test_parallel_filter(self):
        result = self.run_example("parallel_filter.py", "--purpose", "ai_training", "--workers",
                                  "3", "--partition_size", "97", self.jsonl)
        self.assertEqual([json.loads(line) for line in result.stdout.splitlines()], self.allowed)
        self.assertIn("partition 10 done", result.stderr)

    def test_purge_worker_writes_each_user_exactly_once_across_a_crash(self):
        first = self.client.set_preference("erin", "ai_training", "OBJECTED")
        self.client.delete_subject("frank")
        self.client.set_preference("gina", "ai_training.generative", "OBJECTED")
        self.client.set_preference("hal", "ai_training", "CONSENTED")  # nothing to purge
        last = self.client.set_preference("ivan", "ai_training", "OBJECTED")
        out = os.path.join(self.tmp, "purge.jsonl")
        state = os.path.join(self.tmp, "purge.state")
        common = ["--purpose", "ai_training", "--state", state, "--start_revision", str(first)]
        # Dies right after writing its second record, before committing it.
        crashed = self.run_example("purge_worker.py", out, *common, "--crash_after_write", "2",
                                   check=False)
        self.assertEqual(crashed.returncode, -9, crashed.stderr)
        with open(out) as f:
            self.assertEqual(len(f.read().splitlines()), 2)  # one of them uncommitted
        self.run_example("purge_worker.py", out, *common, "--stop_at_revision", str(last))
        with open(out) as f:
            records = [json.loads(line) for line in f]
        self.assertEqual([(r["user_id"], r["reason"]) for r in records], [
            ("erin", "objection"), ("frank", "account_deleted"), ("gina", "objection"),
            ("ivan", "objection")])
        self.assertEqual(records[-1]["revision"], last)
        with open(state) as f:
            self.assertGreaterEqual(json.load(f)["revision"], last)


if __name__ == "__main__":
    unittest.main()
