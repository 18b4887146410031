"""The network path: TLS with a bearer token or a client certificate,
against consentd with an auth file (certificates made with openssl)."""
import hashlib
import os
import unittest

import support
from tls_test import make_certificates  # tests/interop

import consent_registry

TOKEN = "python-package-token-5f1c"


class TlsTest(support.ServerTest):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.certs = tempfile.mkdtemp(prefix="consent-python-tls-")
        cls.path = staticmethod(make_certificates(cls.certs))
        with open(cls.path("auth.textproto"), "w") as auth:
            auth.write('callers { name: "pipeline" roles: ROLE_CHECKER '
                       'certificate_identities: "spiffe://example.org/pipeline" }\n'
                       'callers { name: "settings" roles: [ROLE_WRITER, ROLE_CHECKER] '
                       'token_sha256: "%s" }\n' % hashlib.sha256(TOKEN.encode()).hexdigest())
        with open(cls.path("token"), "w") as f:
            f.write(TOKEN + "\n")
        cls.extra_args = ("--tls_cert_file=" + cls.path("server.pem"),
                          "--tls_key_file=" + cls.path("server.key"),
                          "--tls_client_ca_file=" + cls.path("ca.pem"),
                          "--tls_client_auth=optional",
                          "--auth_file=" + cls.path("auth.textproto"))
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        import shutil
        shutil.rmtree(cls.certs, ignore_errors=True)

    def client_with(self, **kwargs):
        return consent_registry.Client("localhost:%d" % self.port, ca_file=self.path("ca.pem"),
                                       **kwargs)

    def test_token_over_tls(self):
        client = self.client_with(token_file=self.path("token"))
        client.update_subject("alice", jurisdiction="GB", birth_date=(1980, 1, 1))
        self.assertGreater(client.set_preference("alice", "ai_training", "OBJECTED"), 0)
        d = client.check("ai_training", "alice", "p", content_type="POST", visibility="PUBLIC",
                         create_time=1_700_000_000)
        self.assertEqual(d.reason, "DENIED_OBJECTION")
        client.close()

    def test_client_certificate(self):
        client = self.client_with(cert_file=self.path("pipeline.pem"),
                                  key_file=self.path("pipeline.key"))
        decisions = list(client.check_many([("bob", "p", "POST", "PUBLIC")], "ai_training"))
        self.assertEqual(decisions[0].reason, "DENIED_MINOR")
        # A checker may not write.
        with self.assertRaises(consent_registry.PermissionDenied):
            client.set_preference("bob", "ai_training", "OBJECTED")
        client.close()

    def test_without_credentials_or_tls(self):
        client = self.client_with()
        with self.assertRaises(consent_registry.Unauthenticated):
            client.check("ai_training", "alice", "p", content_type="POST", visibility="PUBLIC")
        client.close()
        plain = consent_registry.Client("localhost:%d" % self.port, retries=False, timeout=2)
        with self.assertRaises(consent_registry.Unavailable):
            plain.check("ai_training", "alice", "p", content_type="POST", visibility="PUBLIC")
        plain.close()
        with self.assertRaises(ValueError):
            consent_registry.Client("localhost:1", token=TOKEN)  # never in the clear


if __name__ == "__main__":
    unittest.main()
