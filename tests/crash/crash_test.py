#!/usr/bin/python3
"""kill -9 under load: 8 concurrent writers (SetPreference, BatchSetPreferences,
UpdateSubject, DeleteSubject and request_id replays) against a real consentd,
SIGKILLed at a random moment, restarted, and checked, ROUNDS times:

  * every acknowledged write is there, at the revision it was acknowledged
    with (its event carries its request_id, user and kind);
  * a write in flight at the kill is all or nothing: a batch's items are
    all in the history or none is;
  * revisions are never reused or going backwards: the events are exactly
    revisions 1..current, each acknowledged revision names one request, and
    the registry's revision after a restart is at least every revision
    acknowledged before it;
  * a replay of an acknowledged request returns its first revisions;
  * the audit chain verifies, over the whole history.

Usage (scripts/crash-test.sh N builds and runs it):
  /usr/bin/python3 tests/crash/crash_test.py --rounds N --consentd build/server/consentd \
      --policy deploy/policy/default.textproto --proto_root proto \
      --protoc /usr/bin/protoc --grpc_python_plugin /usr/bin/grpc_python_plugin [--seed S]
Prints one line per round and a closing "N passed, M failed" line; exits 1 on
any failure.
"""
import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
from consentd_fixture import Consentd, generate_stubs  # noqa: E402

WRITERS = 8
USERS = 300
PURPOSES = ("ai_training", "ai_training.generative", "ai_training.ranking", "ai_training.safety")


class Ledger:
    """What the writers sent and what was acknowledged, shared by threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}      # request id -> (kind, [(user, revision)])
        self.in_flight = {}  # request id -> (kind, [users]) sent, no answer
        self.requests = {}   # request id -> the SetPreferenceRequest, for replays
        self.replays = 0
        self.failures = []

    def fail(self, message):
        with self.lock:
            self.failures.append(message)


def writer(stub, pb, ledger, prefix, stop, rng):
    """Writes until `stop` is set or the server goes away."""
    import grpc
    n = 0
    while not stop.is_set():
        n += 1
        rid = "%s-%d" % (prefix, n)
        kind = rng.random()
        try:
            if kind < 0.08 and ledger.acked:
                # A replay of an acknowledged request: same revisions back.
                with ledger.lock:
                    old_id = rng.choice(list(ledger.acked))
                    old_kind, old_writes = ledger.acked[old_id]
                    request = ledger.requests.get(old_id)
                if old_kind != "preference":
                    continue
                response = stub.SetPreference(request, timeout=10)
                if response.revision != old_writes[0][1]:
                    ledger.fail("replay of %s answered revision %d, first was %d" %
                                (old_id, response.revision, old_writes[0][1]))
                with ledger.lock:
                    ledger.replays += 1
            elif kind < 0.55:
                user = "u-%d" % rng.randrange(USERS)
                state = rng.choice([pb["types"].PREFERENCE_STATE_OBJECTED,
                                    pb["types"].PREFERENCE_STATE_CONSENTED,
                                    pb["types"].PREFERENCE_STATE_CLEARED])
                request = pb["registry"].SetPreferenceRequest(
                    user_id=user, purpose=rng.choice(PURPOSES), state=state, request_id=rid)
                with ledger.lock:
                    ledger.in_flight[rid] = ("preference", [user])
                response = stub.SetPreference(request, timeout=10)
                with ledger.lock:
                    del ledger.in_flight[rid]
                    ledger.acked[rid] = ("preference", [(user, response.revision)])
                    ledger.requests[rid] = request
            elif kind < 0.80:
                size = rng.randrange(2, 21)
                users = ["u-%d" % rng.randrange(USERS) for _ in range(size)]
                request = pb["registry"].BatchSetPreferencesRequest(request_id=rid)
                for i, user in enumerate(users):
                    request.requests.add(
                        user_id=user, purpose=rng.choice(PURPOSES),
                        state=pb["types"].PREFERENCE_STATE_OBJECTED,
                        request_id="%s#%d" % (rid, i))
                with ledger.lock:
                    ledger.in_flight[rid] = ("batch", users)
                response = stub.BatchSetPreferences(request, timeout=10)
                if len(response.revisions) != size:
                    ledger.fail("batch %s: %d revisions for %d items" %
                                (rid, len(response.revisions), size))
                with ledger.lock:
                    del ledger.in_flight[rid]
                    ledger.acked[rid] = ("batch", list(zip(users, response.revisions)))
            elif kind < 0.97:
                user = "u-%d" % rng.randrange(USERS)
                request = pb["registry"].UpdateSubjectRequest(
                    user_id=user, request_id=rid,
                    attributes=pb["types"].SubjectAttributes(
                        jurisdiction=rng.choice(["GB", "FR", "US", "JP"])))
                request.update_mask.paths.append("jurisdiction")
                with ledger.lock:
                    ledger.in_flight[rid] = ("attributes", [user])
                response = stub.UpdateSubject(request, timeout=10)
                with ledger.lock:
                    del ledger.in_flight[rid]
                    ledger.acked[rid] = ("attributes", [(user, response.revision)])
            else:
                # Deletions on users of their own: later writes to them fail.
                user = "gone-%s" % rid
                stub.SetPreference(pb["registry"].SetPreferenceRequest(
                    user_id=user, purpose="ai_training",
                    state=pb["types"].PREFERENCE_STATE_OBJECTED), timeout=10)
                with ledger.lock:
                    ledger.in_flight[rid] = ("deletion", [user])
                response = stub.DeleteSubject(
                    pb["registry"].DeleteSubjectRequest(user_id=user, request_id=rid), timeout=10)
                with ledger.lock:
                    del ledger.in_flight[rid]
                    ledger.acked[rid] = ("deletion", [(user, response.revision)])
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL):
                return  # the server is gone; what is in flight stays in flight
            ledger.fail("%s: %s %s" % (rid, e.code(), e.details()))
            return


def read_events(stub, pb, start, end):
    """Events with revision start..end, from the change feed."""
    events = {}
    if end < start:
        return events
    stream = stub.WatchChanges(pb["registry"].WatchChangesRequest(start_revision=start),
                               timeout=120)
    for message in stream:
        if message.HasField("event"):
            events[message.event.revision] = message.event
            if message.event.revision >= end:
                break
        elif message.checkpoint.revision >= end:
            break
    stream.cancel()
    return events


def check_round(stub, admin, pb, ledger, checked, previous_max):
    """Checks the state after a restart; returns the new checked revision."""
    failures = []
    report = admin.VerifyAuditLog(pb["admin"].VerifyAuditLogRequest(), timeout=120)
    if not report.ok:
        failures.append("audit chain: %s" % report.detail)
    current = report.verified_count
    if current < previous_max:
        failures.append("revision went back: %d after %d was acknowledged" %
                        (current, previous_max))
    events = read_events(stub, pb, checked + 1, current)
    if sorted(events) != list(range(checked + 1, current + 1)):
        failures.append("events %d..%d are not contiguous" % (checked + 1, current))
    by_revision = {}
    with ledger.lock:
        acked = dict(ledger.acked)
        in_flight = dict(ledger.in_flight)
    for rid, (kind, writes) in acked.items():
        for i, (user, revision) in enumerate(writes):
            if revision in by_revision:
                failures.append("revision %d acknowledged twice (%s and %s)" %
                                (revision, by_revision[revision], rid))
            by_revision[revision] = rid
            if revision <= checked:
                continue  # verified in an earlier round
            event = events.get(revision)
            want_id = "%s#%d" % (rid, i) if kind == "batch" else rid
            if event is None:
                failures.append("acknowledged %s (revision %d) is lost" % (rid, revision))
            elif event.user_id != user or event.request_id != want_id:
                failures.append("revision %d is %s/%s, acknowledged as %s/%s" %
                                (revision, event.user_id, event.request_id, user, want_id))
    # In flight at the kill: all of a request, or nothing of it.
    by_request = {}
    for event in events.values():
        by_request.setdefault(event.request_id.split("#")[0], []).append(event)
    for rid, (kind, users) in in_flight.items():
        found = by_request.get(rid, [])
        if found and len(found) != len(users):
            failures.append("in-flight %s %s is half applied: %d of %d events" %
                            (kind, rid, len(found), len(users)))
    with ledger.lock:
        ledger.in_flight.clear()
    return failures, current, len(in_flight)


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--consentd", "--policy", "--proto_root", "--protoc", "--grpc_python_plugin"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    stubs = tempfile.mkdtemp(prefix="consent-stubs-")
    tmp = tempfile.mkdtemp(prefix="consent-crash-")
    generate_stubs(args, stubs)
    import grpc
    from consent.v1 import admin_pb2, admin_pb2_grpc, registry_pb2, registry_pb2_grpc, types_pb2
    pb = {"registry": registry_pb2, "admin": admin_pb2, "types": types_pb2}
    rng = random.Random(args.seed)
    print("crash test: %d rounds, seed %d" % (args.rounds, args.seed), flush=True)
    ledger = Ledger()
    data = os.path.join(tmp, "data")
    passed = failed = 0
    checked = 0        # revisions verified so far
    max_acked = 0
    totals = {"acked": 0, "in_flight": 0}
    try:
        for round_number in range(1, args.rounds + 1):
            server = Consentd(args, data)
            channel = grpc.insecure_channel(server.address)
            stub = registry_pb2_grpc.ConsentRegistryStub(channel)
            admin = admin_pb2_grpc.ConsentAdminStub(channel)
            # Check what the last kill left, then load and kill again.
            failures, current, in_flight = check_round(stub, admin, pb, ledger, checked, max_acked)
            checked = current
            totals["in_flight"] += in_flight
            acked_before = len(ledger.acked)
            stop = threading.Event()
            threads = [threading.Thread(target=writer, args=(
                stub, pb, ledger, "r%d-w%d" % (round_number, w), stop,
                random.Random(rng.random()))) for w in range(WRITERS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 1.5))
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=30)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            channel.close()
            server.proc.stdout.close()
            server.log.close()
            with ledger.lock:
                failures += ledger.failures
                ledger.failures = []
                for _, writes in ledger.acked.values():
                    for _, revision in writes:
                        max_acked = max(max_acked, revision)
            new_acks = len(ledger.acked) - acked_before
            totals["acked"] += new_acks
            status = "ok" if not failures else "FAILED"
            print("round %d: %s; revision %d verified, %d writes acknowledged, %d in flight at "
                  "the kill" % (round_number, status, current, new_acks, len(ledger.in_flight)),
                  flush=True)
            for f in failures[:20]:
                print("  " + f, flush=True)
            if failures:
                failed += 1
            else:
                passed += 1
        # The last kill, checked too.
        server = Consentd(args, data)
        channel = grpc.insecure_channel(server.address)
        failures, current, in_flight = check_round(
            registry_pb2_grpc.ConsentRegistryStub(channel), admin_pb2_grpc.ConsentAdminStub(channel),
            pb, ledger, checked, max_acked)
        totals["in_flight"] += in_flight
        channel.close()
        server.stop(signal.SIGTERM)
        print("after the last kill: %s; revision %d verified" %
              ("ok" if not failures else "FAILED", current), flush=True)
        for f in failures[:20]:
            print("  " + f, flush=True)
        if failures:
            failed += 1
        print("crash test: %d writes acknowledged, %d replays, %d writes in flight at kills" %
              (totals["acked"], ledger.replays, totals["in_flight"]), flush=True)
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
