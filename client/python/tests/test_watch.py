"""Writes carry a request_id; the change feed resumes from its checkpoint
file across restarts of the caller and of the server, with no gap and no
duplicate."""
import os
import queue
import signal
import threading
import unittest

import support

import consent_registry


class WritesTest(support.ServerTest):
    def test_a_repeated_request_id_writes_once(self):
        first = self.client.set_preference("alice", "ai_training", "OBJECTED", request_id="r-1")
        again = self.client.set_preference("alice", "ai_training", "OBJECTED", request_id="r-1")
        self.assertEqual(first, again)
        self.assertEqual([e.revision for e in self.client.list_history("alice")], [first])

    def test_writes_without_a_request_id_get_one(self):
        self.client.set_preference("bob", "ai_training", "CONSENTED")
        self.client.update_subject("bob", jurisdiction="GB")
        self.client.delete_subject("bob")
        events = self.client.list_history("bob")
        self.assertEqual(len(events), 3)
        for event in events:
            self.assertEqual(len(event.request_id), 32, event)

    def test_bad_writes_raise_typed_errors(self):
        with self.assertRaises(consent_registry.InvalidArgument) as caught:
            self.client.set_preference("", "ai_training", "OBJECTED")
        self.assertEqual(caught.exception.field_violations, [("user_id", "is required")])
        revision = self.client.set_preference("carl", "ai_training", "OBJECTED")
        with self.assertRaises(consent_registry.Aborted):
            self.client.set_preference("carl", "ai_training", "CLEARED",
                                       expected_revision=revision - 1)


class WatchTest(support.ServerTest):
    extra_args = ("--watch_checkpoint_interval=100ms",)

    def test_resumes_from_the_checkpoint_across_restarts(self):
        checkpoint = os.path.join(self.tmp, "feed.checkpoint")
        written = [self.client.set_preference("u%d" % i, "ai_training", "OBJECTED")
                   for i in range(5)]

        # A worker handles two events and stops (a crash after the second
        # one's handling counts it as not handled: it comes again).
        watch = self.client.watch(written[0], "ai_training", checkpoint=checkpoint)
        self.assertEqual(next(watch).revision, written[0])
        self.assertEqual(next(watch).revision, written[1])
        watch.close()
        with open(checkpoint) as f:
            self.assertEqual(f.read(), "%d\n" % written[0])

        # Resumed by a new worker, which follows the feed on a thread while
        # consentd restarts and new writes arrive.
        seen = queue.Queue()
        resumed = self.client.watch(written[0], "ai_training", checkpoint=checkpoint,
                                    max_backoff=0.2, idle_timeout=2)

        looked = threading.Event()

        def follow():
            for n, event in enumerate(resumed, 1):
                seen.put(event.revision)
                if n == 7:  # the last: still being handled until the test has looked
                    looked.wait(30)

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        got = [seen.get(timeout=20) for _ in range(4)]
        self.assertEqual(got, written[1:])
        self.server.stop(signal.SIGTERM)
        type(self).server = self.start_server()
        more = [self.client.set_preference("v%d" % i, "ai_training", "OBJECTED")
                for i in range(3)]
        got += [seen.get(timeout=30) for _ in range(3)]
        self.assertEqual(got, written[1:] + more)
        self.assertEqual(got, list(range(written[1], more[-1] + 1)))  # no gap
        self.assertTrue(seen.empty())  # no duplicate
        with open(checkpoint) as f:
            self.assertEqual(int(f.read()), more[-2])  # the last one is being handled
        looked.set()
        resumed.close()

    def test_a_checkpoint_moves_past_filtered_events(self):
        checkpoint = os.path.join(self.tmp, "filtered.checkpoint")
        kept = self.client.set_preference("w", "ai_training.safety", "OBJECTED")
        # Neither an ancestor nor a descendant of ai_training.safety: not in
        # its feed.
        other = self.client.set_preference("w", "ai_training.generative", "OBJECTED")
        watch = self.client.watch(1, "ai_training.safety", checkpoint=checkpoint,
                                  checkpoints=True)
        self.assertEqual(next(watch).revision, kept)
        mark = next(watch)  # the server's checkpoint, once the feed is idle
        self.assertIsInstance(mark, consent_registry.Checkpoint)
        self.assertEqual(mark.revision, other)
        with open(checkpoint) as f:
            self.assertEqual(int(f.read()), other)
        watch.close()


if __name__ == "__main__":
    unittest.main()
