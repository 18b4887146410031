"""consent_registry.offline against a real consentd: a snapshot exported by
the Client, loaded with its signature checked, answering as the server does
(lists and numpy arrays, plain and pseudonymized), caught up from the change
feed; and the errors a job sees for a wrong key or file.

Run by ctest as python_offline (the compiled module is built outside the
sanitizer builds)."""
import os
import subprocess
import unittest

import numpy

from support import ServerTest

import consent_registry
from consent_registry import offline

PSEUDONYM_KEY = b"a-key-the-training-job-holds-32b"
PURPOSES = ["ai_training", "ai_training.generative", "ai_training.ranking"]
CREATED = 1_700_000_000  # the posts' create_time: without one, age must be known now


class OfflineTest(ServerTest):

    @classmethod
    def start_server(cls):
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
                        os.path.join(cls.tmp, "sign.pem")], check=True)
        subprocess.run(["openssl", "pkey", "-in", os.path.join(cls.tmp, "sign.pem"), "-pubout",
                        "-out", os.path.join(cls.tmp, "sign.pub")], check=True)
        with open(os.path.join(cls.tmp, "pseudonym.key"), "wb") as f:
            f.write(PSEUDONYM_KEY)
        cls.extra_args = ("--snapshot_signing_key_file=" + os.path.join(cls.tmp, "sign.pem"),
                          "--pseudonymize_key_file=" + os.path.join(cls.tmp, "pseudonym.key"))
        return super().start_server()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.public_key = os.path.join(cls.tmp, "sign.pub")
        c = cls.client
        for user in ("alice", "carol", "dave"):
            cls.adult(user)
        c.update_subject("bob", jurisdiction="GB", birth_date=(2015, 3, 1))
        c.set_preference("carol", "ai_training", "OBJECTED")
        c.set_preference("dave", "ai_training.generative", "OBJECTED")
        c.update_subject("erin", jurisdiction="US-CA", birth_date=(1985, 1, 1))
        c.set_preference("erin", "ai_training.ranking", "CONSENTED")

    def export(self, name, pseudonymize=False):
        path = os.path.join(self.tmp, name)
        revision, subjects, size = self.client.export_snapshot(path, pseudonymize=pseudonymize)
        self.assertEqual(os.path.getsize(path), size)
        self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith(".snapshot-")], [])
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        return path, revision, subjects

    def server_reasons(self, users, purpose, content_ids):
        items = [consent_registry.Item(u, c, "POST", "PUBLIC", CREATED)
                 for u, c in zip(users, content_ids)]
        return [d.reason for d in self.client.check_many(items, purpose)]

    def test_answers_as_the_server(self):
        path, revision, subjects = self.export("plain.snap")
        self.assertEqual(subjects, 5)
        snapshot = offline.Snapshot(path, self.public_key)
        self.assertEqual(snapshot.revision, revision)
        self.assertEqual(snapshot.subjects, 5)
        self.assertFalse(snapshot.pseudonymized)
        self.assertEqual(snapshot.policy_version, self.client.check(
            "ai_training", "alice", "p", content_type="POST", visibility="PUBLIC").policy_version)
        users = ["alice", "bob", "carol", "dave", "erin", "nobody"]
        content_ids = ["p%d" % i for i in range(len(users))]
        for purpose in PURPOSES:
            expected = self.server_reasons(users, purpose, content_ids)
            # Lists, numpy object arrays and numpy bytes arrays.
            for ids in (users, numpy.array(users, dtype=object), numpy.array(users, dtype="S")):
                allowed, codes = snapshot.check_many(ids, content_ids, purpose=purpose,
                                                     create_times=CREATED, reasons=True)
                self.assertEqual(offline.reason_names(codes), expected, purpose)
                self.assertEqual(allowed.tolist(),
                                 [r.startswith("ALLOWED") for r in expected])
                self.assertEqual(allowed.dtype, numpy.bool_)
            for user, reason in zip(users, expected):
                d = snapshot.check(purpose, user, "p", create_time=CREATED)
                self.assertEqual(d.reason, reason)
                self.assertEqual(d.revision, revision)
        self.assertEqual(offline.reason_names(
            snapshot.check_many(["carol", "alice"], purpose="ai_training", create_times=CREATED,
                                reasons=True)[1]),
            ["DENIED_OBJECTION", "ALLOWED_DEFAULT"])
        # Content columns, one per item: a friends-only post and a message.
        allowed, codes = snapshot.check_many(
            ["alice", "alice", "alice"], purpose="ai_training",
            visibility=["PUBLIC", "FRIENDS", "PUBLIC"],
            content_type=numpy.array([1, 1, 7]), create_times=[1_700_000_000.0, None, None],
            reasons=True)
        self.assertEqual(offline.reason_names(codes),
                         ["ALLOWED_DEFAULT", "DENIED_NOT_PUBLIC", "DENIED_CONTENT_TYPE"])

    def test_catch_up_honours_what_the_server_acknowledged(self):
        path, revision, _ = self.export("before.snap")
        snapshot = offline.Snapshot(path, self.public_key)
        self.assertEqual(snapshot.check("ai_training", "alice", "p", create_time=CREATED).reason, "ALLOWED_DEFAULT")
        objection = self.client.set_preference("alice", "ai_training", "OBJECTED")
        self.client.set_preference("frank", "ai_training", "CONSENTED")
        try:
            applied = snapshot.catch_up(self.client)
            self.assertEqual(applied, 2)
            self.assertEqual(snapshot.revision, objection + 1)
            self.assertEqual(snapshot.changed_subjects, 2)
            self.assertEqual(snapshot.check("ai_training", "alice", "p", create_time=CREATED).reason,
                             "DENIED_OBJECTION")
            users = ["alice", "frank", "carol"]
            for purpose in PURPOSES:
                self.assertEqual(
                    offline.reason_names(snapshot.check_many(
                        users, ["p"] * 3, purpose=purpose, create_times=CREATED,
                        reasons=True)[1]),
                    self.server_reasons(users, purpose, ["p"] * 3))
            # Nothing new: catch_up returns at once.
            self.assertEqual(snapshot.catch_up(self.client), 0)
        finally:
            self.client.set_preference("alice", "ai_training", "CLEARED")

    def test_pseudonymized_snapshot_and_feed(self):
        path, _, _ = self.export("pseudo.snap", pseudonymize=True)
        snapshot = offline.Snapshot(path, self.public_key)
        self.assertTrue(snapshot.pseudonymized)
        with open(path, "rb") as f:
            self.assertNotIn(b"carol", f.read())
        hashed = [offline.pseudonym(PSEUDONYM_KEY, u) for u in ("carol", "alice", "gina")]
        self.assertEqual(len(hashed[0]), 64)
        self.assertEqual(offline.reason_names(
            snapshot.check_many(hashed, purpose="ai_training", create_times=CREATED,
                                reasons=True)[1]),
            ["DENIED_OBJECTION", "ALLOWED_DEFAULT", "DENIED_MINOR"])
        self.adult("gina")
        self.client.set_preference("gina", "ai_training", "OBJECTED")
        snapshot.catch_up(self.client)
        self.assertEqual(snapshot.check("ai_training", hashed[2], "p", create_time=CREATED).reason,
                         "DENIED_OBJECTION")
        self.assertEqual(snapshot.check("ai_training", "gina", "p", create_time=CREATED).reason,
                         "DENIED_MINOR",
                         "a raw id is no one in a pseudonymized copy")

    def test_refuses_a_wrong_key_or_file(self):
        path, _, _ = self.export("k.snap")
        other = os.path.join(self.tmp, "other.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", other], check=True)
        pub = subprocess.run(["openssl", "pkey", "-in", other, "-pubout"], check=True,
                             capture_output=True).stdout
        with self.assertRaisesRegex(ValueError, "signed by another key"):
            offline.Snapshot(path, pub)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 1
        changed = os.path.join(self.tmp, "changed.snap")
        with open(changed, "wb") as f:
            f.write(data)
        with self.assertRaisesRegex(ValueError, "changed after signing"):
            offline.Snapshot(changed, self.public_key)
        with self.assertRaises(FileNotFoundError):
            offline.Snapshot(os.path.join(self.tmp, "missing.snap"), self.public_key)
        snapshot = offline.Snapshot(path, self.public_key)
        with self.assertRaisesRegex(ValueError, "is not defined by policy version"):
            snapshot.check_many(["alice"], purpose="no_such_purpose")
        with self.assertRaisesRegex(ValueError, "user_id"):
            snapshot.check("ai_training", "", "p")


if __name__ == "__main__":
    unittest.main()
