#!/usr/bin/python3
"""An independent client over the network path: Debian's python3-grpcio,
with stubs generated from the project's .proto files, against a real
consentd with TLS, optional client certificates and an auth file. Callers
connect with a client certificate (mTLS) and with a bearer token; the
certificates are made here with the openssl command line.

Run by ctest; by hand:
  /usr/bin/python3 tests/interop/tls_test.py --consentd build/server/consentd \
      --policy deploy/policy/default.textproto --proto_root proto \
      --protoc /usr/bin/protoc --grpc_python_plugin /usr/bin/grpc_python_plugin
"""
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import unittest

from consentd_fixture import Consentd, run_tests

ARGS = None
WRITER_TOKEN = "writer-token-from-python-2b7e"


def openssl(*args):
    subprocess.run(("/usr/bin/openssl",) + args, check=True, capture_output=True)


def make_certificates(directory):
    """A CA, consentd's certificate for localhost, and a client certificate
    whose identity is spiffe://example.org/pipeline."""
    path = lambda name: os.path.join(directory, name)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", path("ca.key"), "-out", path("ca.pem"),
            "-days", "30", "-subj", "/CN=test-ca")
    for name, extensions in (
            ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("pipeline", "subjectAltName=URI:spiffe://example.org/pipeline\n"
                         "extendedKeyUsage=clientAuth\n")):
        openssl("req", *ec, "-keyout", path(name + ".key"), "-out", path(name + ".csr"),
                "-subj", "/CN=" + name)
        with open(path(name + ".ext"), "w") as ext:
            ext.write(extensions)
        openssl("x509", "-req", "-in", path(name + ".csr"), "-CA", path("ca.pem"),
                "-CAkey", path("ca.key"), "-CAcreateserial", "-out", path(name + ".pem"),
                "-days", "30", "-extfile", path(name + ".ext"))
    return path


class TlsInteropTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import grpc
        cls.grpc = grpc
        cls.tmp = tempfile.mkdtemp(prefix="consent-tls-interop-")
        cls.path = staticmethod(make_certificates(cls.tmp))
        digest = hashlib.sha256(WRITER_TOKEN.encode()).hexdigest()
        with open(cls.path("auth.textproto"), "w") as auth:
            auth.write('callers { name: "pipeline" roles: ROLE_CHECKER '
                       'certificate_identities: "spiffe://example.org/pipeline" }\n'
                       'callers { name: "settings" roles: [ROLE_WRITER, ROLE_AUDITOR] '
                       'token_sha256: "%s" }\n' % digest)
        cls.server = Consentd(ARGS, os.path.join(cls.tmp, "data"), [
            "--tls_cert_file=" + cls.path("server.pem"),
            "--tls_key_file=" + cls.path("server.key"),
            "--tls_client_ca_file=" + cls.path("ca.pem"),
            "--tls_client_auth=optional",
            "--auth_file=" + cls.path("auth.textproto")])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(signal.SIGTERM)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def stub(self, certificate=None, token=None):
        """A ConsentRegistry stub over TLS, with the client certificate
        `certificate` (a name made above) and/or a bearer token."""
        from consent.v1 import registry_pb2_grpc
        grpc = self.grpc
        kwargs = {"root_certificates": self.read("ca.pem")}
        if certificate:
            kwargs["private_key"] = self.read(certificate + ".key")
            kwargs["certificate_chain"] = self.read(certificate + ".pem")
        credentials = grpc.ssl_channel_credentials(**kwargs)
        if token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token))
        channel = grpc.secure_channel(self.server.address, credentials,
                                      options=[("grpc.ssl_target_name_override", "localhost")])
        self.addCleanup(channel.close)
        return registry_pb2_grpc.ConsentRegistryStub(channel)

    @staticmethod
    def check_request(user):
        from consent.v1 import registry_pb2, types_pb2
        content = types_pb2.Content(content_id="p1", content_type=types_pb2.CONTENT_TYPE_POST,
                                    visibility=types_pb2.VISIBILITY_PUBLIC)
        content.create_time.FromSeconds(1_700_000_000)
        return registry_pb2.CheckRequest(purpose="ai_training", user_id=user, content=content)

    def test_token_writes_and_certificate_checks(self):
        from consent.v1 import registry_pb2, types_pb2
        settings = self.stub(token=WRITER_TOKEN)
        update = registry_pb2.UpdateSubjectRequest(
            user_id="ada", attributes=types_pb2.SubjectAttributes(
                jurisdiction="GB", birth_date=types_pb2.Date(year=1980, month=1, day=2)))
        update.update_mask.paths.extend(["jurisdiction", "birth_date"])
        settings.UpdateSubject(update, timeout=10)
        pipeline = self.stub(certificate="pipeline")
        decision = pipeline.Check(self.check_request("ada"), timeout=10).decision
        self.assertEqual(decision.reason, types_pb2.DECISION_REASON_ALLOWED_DEFAULT)
        revision = settings.SetPreference(registry_pb2.SetPreferenceRequest(
            user_id="ada", purpose="ai_training", state=types_pb2.PREFERENCE_STATE_OBJECTED),
            timeout=10).revision
        decision = pipeline.Check(self.check_request("ada"), timeout=10).decision
        self.assertEqual(decision.reason, types_pb2.DECISION_REASON_DENIED_OBJECTION)
        self.assertEqual(decision.revision, revision)
        # History names the token's caller.
        events = settings.ListHistory(registry_pb2.ListHistoryRequest(user_id="ada"),
                                      timeout=10).events
        self.assertEqual([e.caller for e in events], ["settings", "settings"])

    def test_refusals(self):
        from consent.v1 import registry_pb2, types_pb2
        grpc = self.grpc
        objection = registry_pb2.SetPreferenceRequest(
            user_id="bo", purpose="ai_training", state=types_pb2.PREFERENCE_STATE_OBJECTED)
        cases = (
            (self.stub(), grpc.StatusCode.UNAUTHENTICATED),
            (self.stub(token="not-a-known-token"), grpc.StatusCode.UNAUTHENTICATED),
            # A checker's certificate may not write.
            (self.stub(certificate="pipeline"), grpc.StatusCode.PERMISSION_DENIED),
        )
        for stub, code in cases:
            with self.assertRaises(grpc.RpcError) as raised:
                stub.SetPreference(objection, timeout=10)
            self.assertEqual(raised.exception.code(), code)
        # A server certificate the client does not trust: the handshake fails.
        from consent.v1 import registry_pb2_grpc
        channel = grpc.secure_channel(
            self.server.address,
            grpc.ssl_channel_credentials(root_certificates=self.read("pipeline.pem")),
            options=[("grpc.ssl_target_name_override", "localhost")])
        self.addCleanup(channel.close)
        with self.assertRaises(grpc.RpcError) as raised:
            registry_pb2_grpc.ConsentRegistryStub(channel).Check(self.check_request("bo"),
                                                                 timeout=10)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_log_names_callers_and_never_a_token(self):
        from consent.v1 import registry_pb2, types_pb2
        self.stub(token=WRITER_TOKEN).SetPreference(registry_pb2.SetPreferenceRequest(
            user_id="cy", purpose="ai_training", state=types_pb2.PREFERENCE_STATE_CONSENTED,
            request_id="python-tls-log"), timeout=10)
        with self.assertRaises(self.grpc.RpcError):
            self.stub(token="not-a-known-token-either").Check(self.check_request("cy"),
                                                              timeout=10)
        with open(self.server.log_path) as log:
            text = log.read()
        writes = [line for line in text.splitlines() if "request_id=python-tls-log" in line]
        self.assertEqual(len(writes), 1, text)
        self.assertIn(" INFO write method=SetPreference caller=settings code=OK", writes[0])
        self.assertNotIn("user_id", writes[0])
        for secret in (WRITER_TOKEN, "not-a-known-token-either"):
            self.assertNotIn(secret, text)


def set_args(args):
    global ARGS
    ARGS = args


if __name__ == "__main__":
    run_tests(set_args)
