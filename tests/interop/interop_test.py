#!/usr/bin/python3
"""Interoperability test: an independent client (Debian's python3-grpcio,
with stubs generated from the project's .proto files) drives a real consentd.

Run by ctest; by hand:
  /usr/bin/python3 tests/interop/interop_test.py --consentd build/server/consentd \
      --policy deploy/policy/default.textproto --proto_root proto \
      --protoc /usr/bin/protoc --grpc_python_plugin /usr/bin/grpc_python_plugin
"""
import os
import shutil
import signal
import tempfile
import unittest

from consentd_fixture import Consentd, run_tests

ARGS = None


class InteropTest(unittest.TestCase):
    def setUp(self):
        import grpc
        self.grpc = grpc
        self.tmp = tempfile.mkdtemp(prefix="consent-interop-")
        self.server = Consentd(ARGS, os.path.join(self.tmp, "data"))
        self.connect()

    def connect(self):
        from consent.v1 import registry_pb2_grpc
        self.channel = self.grpc.insecure_channel(self.server.address)
        self.stub = registry_pb2_grpc.ConsentRegistryStub(self.channel)

    def tearDown(self):
        self.channel.close()
        if not self.server.log.closed:
            self.server.stop(signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # Helpers -------------------------------------------------------------
    def make_uk_adult(self, user):
        from consent.v1 import registry_pb2, types_pb2
        request = registry_pb2.UpdateSubjectRequest(
            user_id=user,
            attributes=types_pb2.SubjectAttributes(
                jurisdiction="GB", birth_date=types_pb2.Date(year=1985, month=3, day=9)))
        request.update_mask.paths.extend(["jurisdiction", "birth_date"])
        self.stub.UpdateSubject(request, timeout=10)

    def set_pref(self, user, state):
        from consent.v1 import registry_pb2
        return self.stub.SetPreference(
            registry_pb2.SetPreferenceRequest(user_id=user, purpose="ai_training", state=state),
            timeout=10).revision

    @staticmethod
    def post(content_id, visibility=None):
        from consent.v1 import types_pb2
        content = types_pb2.Content(
            content_id=content_id, content_type=types_pb2.CONTENT_TYPE_POST,
            visibility=visibility or types_pb2.VISIBILITY_PUBLIC)
        content.create_time.FromSeconds(1_700_000_000)
        return content

    def check(self, user, purpose="ai_training"):
        from consent.v1 import registry_pb2
        return self.stub.Check(
            registry_pb2.CheckRequest(purpose=purpose, user_id=user, content=self.post("p1")),
            timeout=10).decision

    # Tests ---------------------------------------------------------------
    def test_health_is_serving(self):
        check = self.channel.unary_unary("/grpc.health.v1.Health/Check")
        # HealthCheckRequest{} encodes to nothing; SERVING is status=1.
        self.assertEqual(check(b"", timeout=10), b"\x08\x01")

    def test_reflection_lists_the_services(self):
        info = self.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        # ServerReflectionRequest{list_services: ""}: field 7, length 0.
        responses = list(info(iter([b"\x3a\x00"]), timeout=10))
        self.assertEqual(len(responses), 1)
        for service in (b"consent.v1.ConsentRegistry", b"consent.v1.ConsentAdmin",
                        b"grpc.health.v1.Health"):
            self.assertIn(service, responses[0])

    def test_object_check_clear(self):
        from consent.v1 import types_pb2
        self.make_uk_adult("alice")
        self.assertEqual(self.check("alice").reason, types_pb2.DECISION_REASON_ALLOWED_DEFAULT)
        revision = self.set_pref("alice", types_pb2.PREFERENCE_STATE_OBJECTED)
        decision = self.check("alice", "ai_training.generative")
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.reason, types_pb2.DECISION_REASON_DENIED_OBJECTION)
        self.assertEqual(decision.revision, revision)
        self.assertEqual(self.set_pref("alice", types_pb2.PREFERENCE_STATE_CLEARED), revision + 1)
        decision = self.check("alice")
        self.assertTrue(decision.allowed)
        self.assertEqual(decision.reason, types_pb2.DECISION_REASON_ALLOWED_DEFAULT)

    def test_batch_order(self):
        from consent.v1 import registry_pb2, types_pb2
        self.make_uk_adult("alice")
        self.make_uk_adult("carol")
        written = self.set_pref("carol", types_pb2.PREFERENCE_STATE_OBJECTED)
        users = ["carol", "alice", "zed", "alice", "carol"]
        request = registry_pb2.BatchCheckRequest(purpose="ai_training")
        for i, user in enumerate(users):
            request.items.add(user_id=user, content=self.post("p%d" % i))
        response = self.stub.BatchCheck(request, timeout=10)
        # The registry's revision when the items were read: the objection's.
        self.assertEqual(response.revision, written)
        reasons = [d.reason for d in response.decisions]
        self.assertEqual(reasons, [
            types_pb2.DECISION_REASON_DENIED_OBJECTION,
            types_pb2.DECISION_REASON_ALLOWED_DEFAULT,
            types_pb2.DECISION_REASON_DENIED_MINOR,  # age unknown
            types_pb2.DECISION_REASON_ALLOWED_DEFAULT,
            types_pb2.DECISION_REASON_DENIED_OBJECTION,
        ])

    def test_notices_and_summary(self):
        from consent.v1 import registry_pb2, types_pb2
        self.make_uk_adult("dana")
        recorded = self.stub.RecordNotice(registry_pb2.RecordNoticeRequest(
            user_id="dana", notice_id="ai-notice", notice_version="2026-11",
            purposes=["ai_training"], channel=types_pb2.NOTICE_CHANNEL_IN_APP,
            request_id="notice-dana"), timeout=10)
        self.assertEqual(recorded.revision, 2)
        self.assertEqual(recorded.notice.channel, types_pb2.NOTICE_CHANNEL_IN_APP)
        batch = registry_pb2.BatchRecordNoticesRequest()
        for user in ("erin", "finn"):
            batch.requests.add(user_id=user, notice_id="ai-notice", notice_version="2026-11",
                               purposes=["ai_training"], channel=types_pb2.NOTICE_CHANNEL_EMAIL)
        self.assertEqual(list(self.stub.BatchRecordNotices(batch, timeout=10).revisions), [3, 4])
        summary = self.stub.GetSubjectSummary(
            registry_pb2.GetSubjectSummaryRequest(user_id="dana"), timeout=10)
        self.assertTrue(summary.recorded)
        self.assertEqual(summary.purposes[0].purpose, "ai_training")
        self.assertEqual(summary.purposes[0].reason, types_pb2.DECISION_REASON_ALLOWED_DEFAULT)
        self.assertEqual(summary.purposes[0].notice.notice_id, "ai-notice")
        events = self.stub.ListHistory(
            registry_pb2.ListHistoryRequest(user_id="dana"), timeout=10).events
        self.assertEqual([e.kind for e in events],
                         [types_pb2.CHANGE_KIND_SUBJECT_ATTRIBUTES, types_pb2.CHANGE_KIND_NOTICE])
        with self.assertRaises(self.grpc.RpcError) as error:
            self.stub.RecordNotice(registry_pb2.RecordNoticeRequest(
                user_id="dana", notice_id="ai-notice", notice_version="2026-12",
                purposes=["ai_training"]), timeout=10)
        self.assertEqual(error.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("channel: is required", error.exception.details())

    def test_bad_input_names_the_field(self):
        from consent.v1 import registry_pb2
        from google.rpc import error_details_pb2, status_pb2
        with self.assertRaises(self.grpc.RpcError) as raised:
            self.stub.Check(registry_pb2.CheckRequest(
                purpose="ai_training", user_id="", content=self.post("p1")), timeout=10)
        error = raised.exception
        self.assertEqual(error.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(error.details(), "user_id: is required")
        trailers = dict(error.trailing_metadata())
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        self.assertEqual(status.code, 3)
        self.assertEqual(len(status.details), 1)
        bad_request = error_details_pb2.BadRequest()
        self.assertTrue(status.details[0].Unpack(bad_request))
        self.assertEqual([(v.field, v.description) for v in bad_request.field_violations],
                         [("user_id", "is required")])

        with self.assertRaises(self.grpc.RpcError) as raised:
            self.check("alice", purpose="ai_training.mind_reading")
        self.assertEqual(raised.exception.code(), self.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("purpose:", raised.exception.details())

    def test_kill9_then_restart_keeps_objection(self):
        from consent.v1 import types_pb2
        self.make_uk_adult("alice")
        revision = self.set_pref("alice", types_pb2.PREFERENCE_STATE_OBJECTED)
        self.assertEqual(self.server.stop(signal.SIGKILL), -signal.SIGKILL)
        self.channel.close()
        self.server = Consentd(ARGS, self.server.data_dir)
        self.connect()
        decision = self.check("alice")
        self.assertEqual(decision.reason, types_pb2.DECISION_REASON_DENIED_OBJECTION)
        self.assertEqual(decision.revision, revision)


def set_args(args):
    global ARGS
    ARGS = args


if __name__ == "__main__":
    run_tests(set_args)
