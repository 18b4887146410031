"""Checks against a real consentd: one, streamed (order, per-item errors,
the revision), filtered, and a pandas mask."""
import unittest

import support
from support import post

import consent_registry


class ChecksTest(support.ServerTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.objection_revision = cls.seed()

    def test_check_answers_with_the_reason(self):
        allowed = self.client.check("ai_training", "alice", "p1", content_type="POST",
                                    visibility="PUBLIC", create_time=1_700_000_000)
        self.assertTrue(allowed.allowed)
        self.assertEqual(allowed.reason, "ALLOWED_DEFAULT")
        self.assertEqual(allowed.policy_version, "2026-11-27.1")
        self.assertIsNone(allowed.error)
        denied = self.client.check("ai_training", "carol", "p1", content_type="POST",
                                   visibility="PUBLIC", create_time=1_700_000_000)
        self.assertEqual((denied.allowed, denied.reason), (False, "DENIED_OBJECTION"))
        self.assertEqual(denied.revision, self.objection_revision)

    def test_a_bad_check_raises_or_denies_naming_the_field(self):
        with self.assertRaises(consent_registry.InvalidArgument) as caught:
            self.client.check("ai_training.telepathy", "alice", "p1", content_type="POST",
                              visibility="PUBLIC")
        self.assertEqual(caught.exception.field_violations, [
            ("purpose", '"ai_training.telepathy" is not defined by policy version 2026-11-27.1')])
        denied = self.client.check("ai_training.telepathy", "alice", "p1", content_type="POST",
                                   visibility="PUBLIC", on_error="deny")
        self.assertFalse(denied.allowed)
        self.assertIsInstance(denied.error, consent_registry.InvalidArgument)

    def test_check_many_keeps_order_across_messages_and_answers_bad_items(self):
        users = ["alice", "carol", "nobody", "alice"]
        items = []
        for i in range(2_503):
            if i == 7:
                items.append(("", "p7", "POST", "PUBLIC"))  # the server's error
            elif i == 1_500:
                items.append(("alice", "p1500", "BLOG", "PUBLIC"))  # the client's error
            elif i % 10 == 3:
                items.append(post("alice", "p%d" % i, visibility="FRIENDS"))
            else:
                items.append(post(users[i % 4], "p%d" % i))
        results = self.client.check_many(iter(items), "ai_training", batch_size=100,
                                         max_in_flight=3)
        decisions = list(results)
        self.assertEqual(len(decisions), len(items))
        expected = {"alice": "ALLOWED_DEFAULT", "carol": "DENIED_OBJECTION",
                    "nobody": "DENIED_MINOR"}
        for i, (item, d) in enumerate(zip(items, decisions)):
            if i in (7, 1_500):
                self.assertFalse(d.allowed)
                self.assertEqual(d.reason, "UNSPECIFIED")
                self.assertIsInstance(d.error, consent_registry.InvalidArgument)
                continue
            want = "DENIED_NOT_PUBLIC" if i % 10 == 3 else expected[item[0]]
            self.assertEqual(d.reason, want, i)
            self.assertEqual(d.allowed, want == "ALLOWED_DEFAULT", i)
        # The server's error names the item's field within its message.
        self.assertEqual(decisions[7].error.field_violations, [("items[7].user_id", "is required")])
        self.assertEqual(decisions[1_500].error.field_violations, [])
        self.assertIn("content.content_type: unknown value 'BLOG'", str(decisions[1_500].error))
        self.assertEqual(results.checked, len(items))
        self.assertEqual(results.invalid, 2)
        self.assertEqual(results.allowed, sum(d.allowed for d in decisions))
        self.assertEqual(results.revision, self.objection_revision)

    def test_item_errors_can_raise(self):
        items = [post("alice", "a"), ("", "b", "POST", "PUBLIC"), post("alice", "c")]
        seen = []
        with self.assertRaises(consent_registry.InvalidArgument) as caught:
            for d in self.client.check_many(items, "ai_training", on_item_error="raise"):
                seen.append(d.reason)
        self.assertEqual(seen, ["ALLOWED_DEFAULT"])
        self.assertEqual(caught.exception.field_violations, [("items[1].user_id", "is required")])

    def test_a_bad_request_fails_the_stream(self):
        with self.assertRaises(consent_registry.InvalidArgument) as caught:
            list(self.client.check_many([post("alice", "a")], "Not A Purpose"))
        self.assertEqual([f for f, _ in caught.exception.field_violations], ["purpose"])
        with self.assertRaises(consent_registry.FailedPrecondition):
            list(self.client.check_many([post("alice", "a")], "ai_training",
                                        min_revision=10 ** 9))

    def test_filter_allowed_yields_the_allowed_rows_in_order(self):
        rows = [{"author": ["alice", "carol", "nobody"][i % 3], "id": "p%d" % i,
                 "public": i % 5 != 0} for i in range(3_000)]
        rows.append({"author": "", "id": "bad", "public": True})
        kept = self.client.filter_allowed(
            rows, "ai_training", content_type="POST", batch_size=500,
            key=lambda r: (r["author"], r["id"], None, "PUBLIC" if r["public"] else "FRIENDS",
                           1_700_000_000))
        out = list(kept)
        self.assertEqual(out, [r for r in rows if r["author"] == "alice" and r["public"]])
        self.assertEqual((kept.checked, kept.allowed, kept.invalid), (3_001, len(out), 1))
        self.assertEqual(kept.revision, self.objection_revision)

    def test_allowed_mask_for_a_dataframe(self):
        import pandas as pd

        df = pd.DataFrame({
            "author": ["alice", "carol", "alice", "nobody", ""],
            "post_id": ["a", "b", "c", "d", "e"],
            "kind": ["POST", "POST", "MESSAGE", "POST", "POST"],
            "visibility": ["PUBLIC"] * 5,
            "created": pd.to_datetime(["2024-05-01T12:00:00Z"] * 4 + [None], utc=True),
        }, index=[10, 11, 12, 13, 14])
        mask = self.client.allowed_mask(df, "ai_training", columns={
            "user_id": "author", "content_id": "post_id", "content_type": "kind",
            "visibility": "visibility", "create_time": "created"})
        self.assertEqual(list(mask.index), [10, 11, 12, 13, 14])
        self.assertEqual(mask.tolist(), [True, False, False, False, False])
        self.assertEqual(df[mask]["post_id"].tolist(), ["a"])

    def test_batch_check(self):
        decisions, revision = self.client.batch_check(
            [post("alice", "a"), post("carol", "b"), ("alice", "c", "BLOG", "PUBLIC")],
            "ai_training")
        self.assertEqual([d.reason for d in decisions],
                         ["ALLOWED_DEFAULT", "DENIED_OBJECTION", "UNSPECIFIED"])
        self.assertIsNotNone(decisions[2].error)
        self.assertEqual(revision, self.objection_revision)


if __name__ == "__main__":
    unittest.main()
