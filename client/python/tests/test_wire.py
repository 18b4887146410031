"""The hand-written request bytes are protobuf's, byte for byte."""
import datetime
import random
import unittest

import support  # noqa: F401  (imports the package first)
from google.protobuf import timestamp_pb2
from consent_registry import _wire
from consent_registry._proto.consent.v1 import registry_pb2, types_pb2


def expected(purpose, items, as_of=None, min_revision=0, cls=registry_pb2.StreamCheckRequest):
    message = cls(purpose=purpose, min_revision=min_revision)
    for user_id, content_id, ctype, vis, ts, sensitive in items:
        item = message.items.add(user_id=user_id)
        item.content.SetInParent()
        item.content.content_id = content_id
        item.content.content_type = ctype
        item.content.visibility = vis
        if ts is not None:
            item.content.create_time.SetInParent()
            item.content.create_time.seconds, item.content.create_time.nanos = ts
        item.content.sensitive_categories.extend(sensitive)
    if as_of is not None:
        message.as_of.SetInParent()
        message.as_of.seconds, message.as_of.nanos = as_of
    return message.SerializeToString()


class WireTest(unittest.TestCase):
    def test_random_requests_encode_as_protobuf_does(self):
        rng = random.Random(20261204)
        alphabet = "abcXYZ09-_.é中🙂"
        text = lambda: "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 40, 130])))
        for _ in range(300):
            items = []
            for _ in range(rng.randint(1, 40)):
                ts = rng.choice([None, (0, 0), (1_700_000_000, 0), (1_700_000_000, 999_999_999),
                                 (-86_400, 5), (2 ** 40, 1)])
                sensitive = rng.sample([1, 2, 3, 4, 5, 6, 7, 8, 9], rng.randint(0, 3))
                items.append((text(), text(), rng.randint(0, 5), rng.randint(0, 4), ts, sensitive))
            encoder = _wire.ItemEncoder()
            encoded = [encoder.encode(_wire_item(i)) for i in items]
            as_of = rng.choice([None, (1_700_000_000, 0), (1_700_000_000, 1)])
            min_revision = rng.choice([0, 1, 127, 128, 2 ** 35])
            purpose = rng.choice(["ai_training", "ai_training.generative", ""])
            as_of_time = None if as_of is None else _time(*as_of)
            got = _wire.encode_request(purpose, encoded, as_of_time, min_revision)
            self.assertEqual(got, expected(purpose, items, as_of, min_revision))
            self.assertEqual(got, expected(purpose, items, as_of, min_revision,
                                           registry_pb2.BatchCheckRequest))

    def test_responses_split_as_protobuf_reads_them(self):
        rng = random.Random(7)
        for _ in range(200):
            response = registry_pb2.StreamCheckResponse(
                revision=rng.choice([0, 1, 300, 2 ** 40]))
            for _ in range(rng.choice([0, 1, 3, 200])):
                d = response.decisions.add()
                if rng.random() < 0.1:
                    d.error.code = 3
                    d.error.message = "items[1].user_id: " + "x" * rng.choice([1, 200])
                else:
                    d.allowed = rng.random() < 0.5
                    d.reason = rng.randint(0, 12)
                    d.policy_version = "v" * rng.choice([0, 12, 140])
                    d.revision = rng.choice([0, 5, 2 ** 33])
            data = response.SerializeToString()
            answers, revision = _wire.split_response(data)
            self.assertEqual(answers, [d.SerializeToString() for d in response.decisions])
            self.assertEqual(revision, response.revision)
        # Bytes it does not expect (an unknown field) go through protobuf.
        odd = registry_pb2.StreamCheckResponse(revision=9).SerializeToString() + b"\x18\x01"
        self.assertEqual(_wire.split_response(odd), ([], 9))

    def test_item_forms_and_names(self):
        encoder = _wire.ItemEncoder(content_type="POST", visibility="VISIBILITY_PUBLIC")
        when = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
        want = encoder.encode(("u", "c", "CONTENT_TYPE_POST", "public", when, ("HEALTH",)))
        for form in (("u", "c", None, None, when, ["health"]),
                     {"user_id": "u", "content_id": "c", "create_time": "2024-05-01T12:00:00Z",
                      "sensitive": "HEALTH"},
                     ("u", "c", 1, 1, when.timestamp(), [types_pb2.SENSITIVE_CATEGORY_HEALTH]),
                     ("u", "c", "POST", "PUBLIC", datetime.datetime(2024, 5, 1, 12), ["HEALTH"])):
            self.assertEqual(encoder.encode(form), want, form)
        message = types_pb2.CheckItem(user_id="u")
        self.assertEqual(encoder.encode(message), message.SerializeToString())

    def test_items_that_cannot_be_encoded_name_their_field(self):
        encoder = _wire.ItemEncoder()
        for item, field in ((("u", "c", "BLOG"), "content.content_type"),
                            (("u", "c", "POST", "SECRET"), "content.visibility"),
                            (("u", "c", "POST", "PUBLIC", "yesterday"), "content.create_time"),
                            (("u", "c", "POST", "PUBLIC", None, ["GOSSIP"]),
                             "content.sensitive_categories"),
                            ((7, "c"), "user_id"),
                            (3.5, "item")):
            with self.assertRaises(_wire.ItemError) as caught:
                encoder.encode(item)
            self.assertEqual(caught.exception.field, field)


def _time(seconds, nanos):
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def _wire_item(item):
    user_id, content_id, ctype, vis, ts, sensitive = item
    return (user_id, content_id, ctype, vis, None if ts is None else _time(*ts), sensitive)


if __name__ == "__main__":
    unittest.main()
