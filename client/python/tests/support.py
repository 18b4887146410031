"""What the package's tests share: a real consentd on loopback (the binary
in $CONSENTD, the policy in $CONSENT_POLICY), started with the fixture of
the project's interop tests."""
import os
import shutil
import signal
import socket
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))

from consentd_fixture import Consentd  # noqa: E402

import consent_registry  # noqa: E402  (before grpc: fork support)


class Args:
    consentd = os.environ.get("CONSENTD", os.path.join(ROOT, "build", "server", "consentd"))
    policy = os.environ.get("CONSENT_POLICY",
                            os.path.join(ROOT, "deploy", "policy", "default.textproto"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerTest(unittest.TestCase):
    """A fresh consentd (and data directory) per test class; self.client
    talks to it."""

    extra_args = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="consent-python-")
        cls.port = free_port()
        cls.server = cls.start_server()
        cls.client = consent_registry.Client(cls.server.address, timeout=10)

    @classmethod
    def start_server(cls):
        return Consentd(Args, os.path.join(cls.tmp, "data"),
                        ["--listen=127.0.0.1:%d" % cls.port] + list(cls.extra_args))

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        if cls.server.proc.poll() is None:
            cls.server.stop(signal.SIGTERM)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def adult(cls, user, jurisdiction="GB"):
        return cls.client.update_subject(user, jurisdiction=jurisdiction, birth_date=(1980, 1, 1))

    @classmethod
    def seed(cls):
        """alice and carol, UK adults; carol objects to ai_training (so
        alice's public posts are allowed, carol's denied). Returns the
        objection's revision."""
        cls.adult("alice")
        cls.adult("carol")
        return cls.client.set_preference("carol", "ai_training", "OBJECTED")


def post(user, content_id, visibility="PUBLIC", content_type="POST"):
    return consent_registry.Item(user, content_id, content_type, visibility, 1_700_000_000)
