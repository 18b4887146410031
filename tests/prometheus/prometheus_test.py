#!/usr/bin/python3
"""consentd scraped by a real Prometheus server (Debian's prometheus package)
on loopback, with deploy/prometheus/consentd.rules.yml loaded.

Drives checks and writes through an independent client (python3-grpcio,
stubs from proto/) and asserts through Prometheus's HTTP API: the target is
up, decisions have a non-zero rate, a histogram_quantile over
grpc_server_handling_seconds is a number, every recording and alerting rule
evaluates, and every query of deploy/grafana/consentd-dashboard.json runs.
Also runs `promtool check metrics` on a scrape.

Run by ctest; by hand (from the repository root, after a build):
  /usr/bin/python3 tests/prometheus/prometheus_test.py --consentd build/server/consentd \
      --policy deploy/policy/default.textproto --proto_root proto --protoc /usr/bin/protoc \
      --grpc_python_plugin /usr/bin/grpc_python_plugin --prometheus /usr/bin/prometheus \
      --promtool /usr/bin/promtool --deploy deploy
"""
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
from consentd_fixture import Consentd, run_tests  # noqa: E402

ARGS = None
# How long to wait for Prometheus to see something (it scrapes every second).
WAIT_S = 90


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


class Load(threading.Thread):
    """Checks (single and batched) and writes, until stopped."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.address = address
        self.stopped = threading.Event()
        self.calls = 0

    def run(self):
        import grpc
        from consent.v1 import registry_pb2, registry_pb2_grpc, types_pb2
        channel = grpc.insecure_channel(self.address)
        stub = registry_pb2_grpc.ConsentRegistryStub(channel)
        content = types_pb2.Content(content_id="p1", content_type=types_pb2.CONTENT_TYPE_POST,
                                    visibility=types_pb2.VISIBILITY_PUBLIC)
        content.create_time.FromSeconds(1_700_000_000)
        # UK adults: ai_training is allowed unless they object.
        for j in range(50):
            request = registry_pb2.UpdateSubjectRequest(
                user_id="user-%d" % j,
                attributes=types_pb2.SubjectAttributes(
                    jurisdiction="GB", birth_date=types_pb2.Date(year=1985, month=3, day=9)))
            request.update_mask.paths.extend(["jurisdiction", "birth_date"])
            stub.UpdateSubject(request, timeout=10)
        i = 0
        while not self.stopped.is_set():
            user = "user-%d" % (i % 50)
            state = (types_pb2.PREFERENCE_STATE_OBJECTED if i % 2 == 0
                     else types_pb2.PREFERENCE_STATE_CLEARED)
            stub.SetPreference(registry_pb2.SetPreferenceRequest(
                user_id=user, purpose="ai_training", state=state), timeout=10)
            stub.Check(registry_pb2.CheckRequest(purpose="ai_training", user_id=user,
                                                 content=content), timeout=10)
            batch = registry_pb2.BatchCheckRequest(purpose="ai_training")
            for j in range(10):
                batch.items.add(user_id="user-%d" % j, content=content)
            stub.BatchCheck(batch, timeout=10)
            self.calls += 3
            i += 1
            self.stopped.wait(0.005)  # a steady trickle, leaving CPU to the servers
        channel.close()


class PrometheusTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="consent-prometheus-")
        cls.server = Consentd(ARGS, os.path.join(cls.tmp, "data"),
                              ["--metrics_listen=127.0.0.1:0", "--rocksdb_statistics"])
        cls.metrics = cls.server.metrics_address()
        rules = os.path.abspath(os.path.join(ARGS.deploy, "prometheus", "consentd.rules.yml"))
        config = os.path.join(cls.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: consentd
    static_configs:
      - targets: ["%s"]
""" % (rules, cls.metrics))
        cls.prometheus_address = "127.0.0.1:%d" % free_port()
        cls.prometheus_log = open(os.path.join(cls.tmp, "prometheus.log"), "wb")
        cls.prometheus = subprocess.Popen(
            [ARGS.prometheus, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(cls.tmp, "tsdb"),
             "--web.listen-address=" + cls.prometheus_address, "--log.level=warn"],
            stdout=cls.prometheus_log, stderr=cls.prometheus_log)
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                http_get("http://%s/-/ready" % cls.prometheus_address, timeout=2)
                break
            except OSError:
                if cls.prometheus.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("prometheus did not start: %s" % open(
                        os.path.join(cls.tmp, "prometheus.log")).read())
                time.sleep(0.2)
        cls.load = Load(cls.server.address)
        cls.load.start()

    @classmethod
    def tearDownClass(cls):
        cls.load.stopped.set()
        cls.load.join(timeout=30)
        cls.prometheus.send_signal(signal.SIGTERM)
        cls.prometheus.wait(timeout=30)
        cls.prometheus_log.close()
        cls.server.stop(signal.SIGTERM)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def api(self, path, **params):
        url = "http://%s/api/v1/%s?%s" % (self.prometheus_address, path,
                                           urllib.parse.urlencode(params))
        body = json.loads(http_get(url))
        self.assertEqual(body["status"], "success", body)
        return body["data"]

    def query(self, expr):
        data = self.api("query", query=expr)
        self.assertEqual(data["resultType"], "vector", expr)
        return data["result"]

    def wait_for(self, expr, accept):
        """Polls `expr` until one of its samples satisfies accept(value)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            result = self.query(expr)
            values = [float(sample["value"][1]) for sample in result]
            if any(accept(v) for v in values):
                return values
            if time.monotonic() > deadline:
                self.fail("%s never satisfied the condition; last result: %s" % (expr, result))
            time.sleep(0.5)

    def test_target_is_up(self):
        self.wait_for('up{job="consentd"}', lambda v: v == 1)

    def test_decisions_have_a_nonzero_rate(self):
        self.wait_for('sum(rate(consent_decisions_total{job="consentd"}[10s]))', lambda v: v > 0)
        self.wait_for('sum by (reason) (rate(consent_decisions_total{reason="DENIED_OBJECTION"}[10s]))',
                      lambda v: v > 0)

    def test_histogram_quantile_is_a_number(self):
        values = self.wait_for(
            'histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket'
            '{job="consentd",grpc_method="Check"}[10s])))',
            lambda v: math.isfinite(v) and v > 0)
        self.assertTrue(any(0 < v <= 5 for v in values), values)

    def test_every_rule_evaluates(self):
        # As many as the rule file defines.
        with open(os.path.join(ARGS.deploy, "prometheus", "consentd.rules.yml")) as f:
            expected = len(re.findall(r"^\s*- (?:record|alert):", f.read(), re.M))
        deadline = time.monotonic() + WAIT_S
        while True:
            rules = [rule for group in self.api("rules")["groups"] for rule in group["rules"]]
            healthy = [r for r in rules if r["health"] == "ok"]
            if len(rules) == expected and len(healthy) == len(rules):
                break
            if time.monotonic() > deadline:
                self.fail("rules not all healthy: %s" % [
                    (r["name"], r["health"], r.get("lastError")) for r in rules
                    if r["health"] != "ok"])
            time.sleep(0.5)
        self.wait_for("consent:decisions:rate5m", lambda v: v > 0)
        self.wait_for('consent:grpc_server_handled:rate5m{grpc_method="SetPreference"}',
                      lambda v: v > 0)
        # A healthy server under load pages no one.
        firing = self.query('ALERTS{alertstate="firing"}')
        self.assertEqual(firing, [])

    def test_every_dashboard_query_runs(self):
        with open(os.path.join(ARGS.deploy, "grafana", "consentd-dashboard.json")) as f:
            dashboard = json.load(f)
        self.wait_for('up{job="consentd"}', lambda v: v == 1)
        self.wait_for('sum(rate(consent_decisions_total{job="consentd"}[10s]))', lambda v: v > 0)
        count = 0
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = (target["expr"].replace("$__rate_interval", "10s")
                        .replace("$instance", ".*"))
                count += 1
                # Every query has data: consentd exposes every series from
                # the start (zeros included), so even "failed calls" does
                # while nothing fails; recording rules within a second or two.
                self.wait_for(expr, lambda v: True)
        self.assertGreaterEqual(count, 25)

    def test_promtool_finds_no_problem_in_a_scrape(self):
        exposition = http_get("http://%s/metrics" % self.metrics)
        self.assertIn("consent_decisions_total{", exposition)
        result = subprocess.run([ARGS.promtool, "check", "metrics"], input=exposition.encode(),
                                capture_output=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout + result.stderr, b"")


def set_args(args):
    global ARGS
    ARGS = args


if __name__ == "__main__":
    run_tests(set_args, ("--prometheus", "--promtool", "--deploy"))
