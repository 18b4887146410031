"""Fail-closed on every kind of failure: the server down, a deadline,
UNAVAILABLE in the middle of a stream; and retries that never write twice."""
import signal
import threading
import unittest
from concurrent import futures

import support  # first: the package sets up gRPC's fork support before grpc loads
from support import post

import grpc

import consent_registry


def stream_of(n):
    """n posts, alice (allowed) at even positions and carol (objected) at
    odd ones, made lazily."""
    return (post("alice" if i % 2 == 0 else "carol", "p%d" % i) for i in range(n))


def stopped_state(pid):
    """Waits until process pid is stopped (state T in /proc/PID/stat)."""
    while True:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        threading.Event().wait(0.001)


def expected_reason(i):
    return "ALLOWED_DEFAULT" if i % 2 == 0 else "DENIED_OBJECTION"


class ServerDownTest(unittest.TestCase):
    def setUp(self):
        address = "127.0.0.1:%d" % support.free_port()
        self.client = consent_registry.Client(address, timeout=2, retries=False)
        self.retrying = consent_registry.Client(address, timeout=2)

    def tearDown(self):
        self.client.close()
        self.retrying.close()

    def test_every_call_fails_closed(self):
        with self.assertRaises(consent_registry.Unavailable):
            self.client.check("ai_training", "alice", "p1", content_type="POST",
                              visibility="PUBLIC")
        denied = self.client.check("ai_training", "alice", "p1", content_type="POST",
                                   visibility="PUBLIC", on_error="deny")
        self.assertFalse(denied.allowed)
        self.assertIsInstance(denied.error, consent_registry.Unavailable)
        self.assertTrue(denied.error.retryable)
        yielded = []
        with self.assertRaises(consent_registry.Unavailable):
            for d in self.client.check_many(stream_of(10), "ai_training", retries=1):
                yielded.append(d)
        self.assertEqual(yielded, [])
        with self.assertRaises(consent_registry.Unavailable):
            list(self.client.filter_allowed(stream_of(10), "ai_training", retries=0))
        with self.assertRaises(consent_registry.Unavailable):
            self.client.set_preference("alice", "ai_training", "OBJECTED")
        # Retried until the deadline: UNAVAILABLE or DEADLINE_EXCEEDED,
        # whichever comes first, never a decision.
        with self.assertRaises((consent_registry.Unavailable,
                                consent_registry.DeadlineExceeded)) as caught:
            self.retrying.check("ai_training", "alice", "p1", content_type="POST",
                                visibility="PUBLIC")
        self.assertTrue(caught.exception.retryable)


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection refused"

    def trailing_metadata(self):
        return ()


class _CallThatFailedBeforeAskingForAMessage:
    """A StreamCheck call whose server was gone: it failed before gRPC read
    the first message from the request iterator, and never will read one."""

    def __init__(self, requests, timeout=None):
        pass

    def done(self):
        return True

    def add_done_callback(self, callback):
        callback(self)  # done already: called at once, as grpc.Future does

    def cancel(self):
        return False

    def __iter__(self):
        return self

    def __next__(self):
        raise _Unavailable()


class StreamThatFailsAtOnceTest(unittest.TestCase):
    def test_a_call_that_never_asks_for_a_message_raises_instead_of_waiting(self):
        client = consent_registry.Client("127.0.0.1:%d" % support.free_port(), timeout=2)
        client.channel()
        client._stream_check = _CallThatFailedBeforeAskingForAMessage
        outcome = []

        def run():
            try:
                list(client.check_many(stream_of(10), "ai_training", retries=0))
                outcome.append("no error")
            except consent_registry.Unavailable:
                outcome.append("unavailable")

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(10)
        client.close()
        self.assertFalse(worker.is_alive(), "check_many waited for a message never asked for")
        self.assertEqual(outcome, ["unavailable"])


class StreamFailureTest(support.ServerTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.seed()

    def restart(self):
        """SIGKILL, then consentd again on the same port and data."""
        if self.server.proc.poll() is None:
            self.server.stop(signal.SIGKILL)
        type(self).server = self.start_server()

    def test_deadline_exceeded(self):
        # A server that stopped answering (SIGSTOP): the deadline ends the
        # wait, and nothing is allowed.
        self.server.proc.send_signal(signal.SIGSTOP)
        stopped_state(self.server.proc.pid)  # the signal is delivered asynchronously
        try:
            with self.assertRaises(consent_registry.DeadlineExceeded):
                self.client.check("ai_training", "alice", "p1", content_type="POST",
                                  visibility="PUBLIC", timeout=0.3)
            denied = self.client.check("ai_training", "alice", "p1", content_type="POST",
                                       visibility="PUBLIC", timeout=0.3, on_error="deny")
            self.assertFalse(denied.allowed)
            self.assertIsInstance(denied.error, consent_registry.DeadlineExceeded)
            with self.assertRaises(consent_registry.DeadlineExceeded):
                list(self.client.check_many(stream_of(10), "ai_training", timeout=0.3))
        finally:
            self.server.proc.send_signal(signal.SIGCONT)
        # A stream's deadline covers the whole stream.
        with self.assertRaises(consent_registry.DeadlineExceeded):
            list(self.client.check_many(stream_of(1_000_000), "ai_training", timeout=0.05))

    def test_server_killed_mid_stream_raises_after_what_was_answered(self):
        yielded = 0
        with self.assertRaises(consent_registry.Unavailable):
            for i, d in enumerate(self.client.check_many(stream_of(2_000_000), "ai_training",
                                                         retries=2)):
                self.assertEqual(d.reason, expected_reason(i))
                yielded += 1
                if yielded == 5_000:
                    self.server.stop(signal.SIGKILL)
        self.assertGreaterEqual(yielded, 5_000)
        self.assertLess(yielded, 2_000_000)
        self.restart()

    def test_server_restarted_mid_stream_every_item_answered_once_in_order(self):
        n = 300_000
        count = 0
        restarted = threading.Event()
        for i, d in enumerate(self.client.check_many(stream_of(n), "ai_training", retries=50)):
            self.assertEqual(d.reason, expected_reason(i), i)
            count += 1
            if count == 20_000:
                threading.Thread(target=lambda: (self.restart(), restarted.set())).start()
        self.assertTrue(restarted.wait(60))
        self.assertEqual(count, n)


class FlakyProxy:
    """A gRPC proxy in front of consentd passing raw bytes, that answers
    the first attempt of each SetPreference with UNAVAILABLE after
    forwarding it: the write happened, the answer was lost."""

    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)
        self.attempts = []
        proxy = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                method = details.method
                forward = proxy.channel.unary_unary(method)

                def behavior(request, context):
                    response = forward(request, timeout=10)
                    if method.endswith("/SetPreference"):
                        proxy.attempts.append(request)
                        if len(proxy.attempts) == 1:
                            context.abort(grpc.StatusCode.UNAVAILABLE, "answer lost")
                    return response

                return grpc.unary_unary_rpc_method_handler(behavior)

        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers([Handler()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(None)
        self.channel.close()


class RetryTest(support.ServerTest):
    def test_a_write_whose_answer_was_lost_is_retried_and_written_once(self):
        proxy = FlakyProxy(self.server.address)
        try:
            client = consent_registry.Client("127.0.0.1:%d" % proxy.port)
            revision = client.set_preference("dora", "ai_training", "OBJECTED")
            self.assertEqual(len(proxy.attempts), 2)
            self.assertEqual(proxy.attempts[0], proxy.attempts[1])  # the same request_id
            events = self.client.list_history("dora")
            self.assertEqual([e.revision for e in events], [revision])
            client.close()
        finally:
            proxy.stop()

    def test_retries_off_surfaces_the_lost_answer(self):
        proxy = FlakyProxy(self.server.address)
        try:
            client = consent_registry.Client("127.0.0.1:%d" % proxy.port, retries=False)
            with self.assertRaises(consent_registry.Unavailable):
                client.set_preference("erin", "ai_training", "OBJECTED", request_id="erin-1")
            # Sent again by hand with the same request_id: the first result.
            first = self.client.list_history("erin")[0].revision
            self.assertEqual(client.set_preference("erin", "ai_training", "OBJECTED",
                                                   request_id="erin-1"), first)
            self.assertEqual(len(self.client.list_history("erin")), 1)
            client.close()
        finally:
            proxy.stop()


if __name__ == "__main__":
    unittest.main()
