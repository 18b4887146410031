#!/usr/bin/python3
"""Checks deploy/grafana/consentd-dashboard.json: valid JSON, the shape
Grafana imports (unique panel ids, a Prometheus query with a refId in every
panel, panels within the 24-column grid), and only metric names consentd
exports or the recording rules define. prometheus_test.py runs every query
against a real Prometheus.

Usage: check_dashboard.py DASHBOARD_JSON RULES_YML
"""
import json
import re
import sys

EXPORTED = {
    "up", "grpc_server_handled_total", "grpc_server_started_total",
    "grpc_server_handling_seconds_bucket", "consent_decisions_total", "consent_batch_items_bucket",
    "consent_writes_total", "consent_wal_sync_seconds_bucket", "consent_registry_revision",
    "consent_policy_info", "consent_policy_reloads_total", "consent_build_info",
    "consent_rocksdb_live_sst_bytes", "consent_rocksdb_memtable_bytes",
    "consent_rocksdb_pending_compaction_bytes", "consent_rocksdb_block_cache_hits_total",
    "consent_rocksdb_block_cache_misses_total", "consent_rocksdb_write_stall_seconds_total",
    "consent_rocksdb_write_stopped", "consent_rocksdb_estimated_subjects",
    "consent_subject_index_ready", "consent_subject_index_subjects", "consent_subject_index_bytes",
    "consent_history_index_pending_entries", "consent_history_index_write_failures_total",
    "consent_store_writes_refused", "consent_store_write_failures_total",
    "consent_store_reopens_total", "consent_rejected_total",
    "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
    "process_max_fds",
}
FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "by", "label_values"}


def main(dashboard_path, rules_path):
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    with open(rules_path) as f:
        recorded = set(re.findall(r"^\s*- record: (\S+)", f.read(), re.M))
    problems = []
    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    queries = 0
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        if grid["x"] + grid["w"] > 24:
            problems.append("%s: wider than the grid" % panel["title"])
        if panel["type"] == "row":
            continue
        if not panel.get("targets"):
            problems.append("%s: no query" % panel["title"])
        for target in panel.get("targets", []):
            queries += 1
            if not target.get("expr") or not target.get("refId"):
                problems.append("%s: a target without expr or refId" % panel["title"])
                continue
            # Names: identifiers followed by { or [ or ) or space, not inside quotes.
            expr = re.sub(r'"[^"]*"', '""', target["expr"])
            for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*[{\[])", expr):
                if name not in EXPORTED and name not in recorded and name not in FUNCTIONS:
                    problems.append("%s: unknown metric %s" % (panel["title"], name))
    if queries == 0:
        problems.append("no queries at all")
    for p in problems:
        print("check_dashboard: " + p)
    if not problems:
        print("check_dashboard: %d panels, %d queries, all metrics known" %
              (len(dashboard["panels"]), queries))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
