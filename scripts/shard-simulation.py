#!/usr/bin/python3
"""Sharding by user id, simulated at small scale on loopback
(docs/scale-out.md): a three-node NATS cluster, N shard groups of
replicated consentd (each group its own JetStream stream and subject, its
own revisions), and a client-side router that sends each user's calls to
the user's group and keeps one revision per shard for read-your-writes.

It checks that:
  - every write lands on its user's group only, and each group's
    revisions count its own writes, contiguous from 1;
  - after each write, a check on the group's *other* replica with that
    shard's revision as min_revision sees it (read-your-writes per shard);
  - a BatchCheck across all users, split by group and merged back in
    request order with each group's revision, agrees with a model;
  - a read sent to the wrong group does not see the user (routing
    matters: the wrong group has no record of them).

Usage (from the repository, after scripts/build.sh):
  /usr/bin/python3 scripts/shard-simulation.py [--groups 3] [--replicas 2]
      [--users 300] [--writes 600]
Exit status 0 when every check agreed. ctest runs it as shard_simulation.
"""
import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
import consentd_fixture  # noqa: E402  (stubs and a consentd process)

SLOTS = 1024  # hash slots; a routing table maps each to a shard group


def fnv1a64(text):
    h = 0xcbf29ce484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


class Router:
    """The client side of sharding: slot = FNV-1a(user_id) mod SLOTS, and a
    table of slot ranges to groups. Keeps the highest revision each shard
    answered (the min_revision vector)."""

    def __init__(self, groups):
        self.groups = groups  # [[stub per replica], ...]
        self.vector = [0] * len(groups)

    def group_of(self, user):
        return fnv1a64(user) % SLOTS * len(self.groups) // SLOTS

    def stub(self, user, replica):
        group = self.groups[self.group_of(user)]
        return group[replica % len(group)]

    def saw(self, user, revision):
        g = self.group_of(user)
        self.vector[g] = max(self.vector[g], revision)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats(nats_server, directory):
    client = [free_port() for _ in range(3)]
    route = [free_port() for _ in range(3)]
    routes = ", ".join("nats-route://127.0.0.1:%d" % p for p in route)
    procs = []
    for i in range(3):
        conf = os.path.join(directory, "n%d.conf" % i)
        with open(conf, "w") as f:
            f.write("server_name: n%d\nhost: 127.0.0.1\nport: %d\nmax_payload: 8388608\n"
                    "jetstream { store_dir: \"%s\" }\n"
                    "cluster {\n  name: sim\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n" %
                    (i, client[i], os.path.join(directory, "n%d" % i), route[i], routes))
        log = open(os.path.join(directory, "n%d.log" % i), "wb")
        procs.append(subprocess.Popen([nats_server, "-c", conf], stdout=log, stderr=log))
    deadline = time.monotonic() + 20
    for port in client:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nats-server did not start")
                time.sleep(0.05)
    return procs, ["nats://127.0.0.1:%d" % p for p in client]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--writes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--consentd", default=os.path.join(ROOT, "build/server/consentd"))
    parser.add_argument("--policy", default=os.path.join(ROOT, "deploy/policy/default.textproto"))
    parser.add_argument("--proto_root", default=os.path.join(ROOT, "proto"))
    parser.add_argument("--protoc", default=shutil.which("protoc") or "protoc")
    parser.add_argument("--grpc_python_plugin",
                        default=shutil.which("grpc_python_plugin") or "grpc_python_plugin")
    parser.add_argument("--nats_server", default="/usr/sbin/nats-server")
    args = parser.parse_args()
    if args.groups < 2 or args.replicas < 2:
        parser.error("the simulation needs at least 2 groups of at least 2 replicas")

    work = tempfile.mkdtemp(prefix="consent-shards-")
    os.makedirs(os.path.join(work, "stubs"))
    consentd_fixture.generate_stubs(args, os.path.join(work, "stubs"))
    import grpc
    from consent.v1 import registry_pb2, registry_pb2_grpc, types_pb2
    from google.protobuf import field_mask_pb2

    nats, urls = start_nats(args.nats_server, work)
    servers, failures = [], []
    start = time.monotonic()
    try:
        groups = []
        for g in range(args.groups):
            stubs = []
            for r in range(args.replicas):
                server = consentd_fixture.Consentd(
                    args, os.path.join(work, "g%d-r%d" % (g, r)),
                    ["--replication=jetstream", "--nats_url=" + ",".join(urls),
                     "--nats_stream=CONSENT_G%d" % g, "--nats_subject=consent.g%d.commands" % g,
                     "--min_revision_wait=5s"])
                servers.append(server)
                stubs.append(registry_pb2_grpc.ConsentRegistryStub(
                    grpc.insecure_channel(server.address)))
            groups.append(stubs)
        router = Router(groups)
        rng = random.Random(args.seed)
        users = ["user-%d" % i for i in range(args.users)]
        per_group_users = [0] * args.groups
        for u in users:
            per_group_users[router.group_of(u)] += 1

        # Every user a UK adult: no preference means ALLOWED_DEFAULT.
        for u in users:
            request = registry_pb2.UpdateSubjectRequest(user_id=u)
            request.attributes.jurisdiction = "GB"
            request.attributes.birth_date.year, request.attributes.birth_date.month = 1990, 4
            request.attributes.birth_date.day = 1
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=["jurisdiction",
                                                                         "birth_date"]))
            router.saw(u, router.stub(u, rng.randrange(args.replicas)).UpdateSubject(
                request).revision)

        expected = {
            types_pb2.PREFERENCE_STATE_OBJECTED: types_pb2.DECISION_REASON_DENIED_OBJECTION,
            types_pb2.PREFERENCE_STATE_CONSENTED: types_pb2.DECISION_REASON_ALLOWED_CONSENT,
            types_pb2.PREFERENCE_STATE_CLEARED: types_pb2.DECISION_REASON_ALLOWED_DEFAULT,
        }
        model = {u: types_pb2.DECISION_REASON_ALLOWED_DEFAULT for u in users}
        writes = [0] * args.groups
        for u in users:
            writes[router.group_of(u)] += 1

        def post(user, content_id):
            item = types_pb2.CheckItem(user_id=user)
            item.content.content_id = content_id
            item.content.content_type = types_pb2.CONTENT_TYPE_POST
            item.content.visibility = types_pb2.VISIBILITY_PUBLIC
            item.content.create_time.seconds = 1714564800  # 2024-05-01
            return item

        ryw = 0
        for n in range(args.writes):
            u = rng.choice(users)
            state = rng.choice(list(expected))
            replica = rng.randrange(args.replicas)
            request = registry_pb2.SetPreferenceRequest(user_id=u, purpose="ai_training",
                                                        state=state)
            request.request_id = "sim-%d" % n
            response = router.stub(u, replica).SetPreference(request)
            router.saw(u, response.revision)
            writes[router.group_of(u)] += 1
            model[u] = expected[state]
            # Read-your-writes on the group's other replica, through the
            # shard's revision.
            item = post(u, "post-%d" % n)
            check = registry_pb2.CheckRequest(purpose="ai_training", user_id=u,
                                              content=item.content,
                                              min_revision=router.vector[router.group_of(u)])
            decision = router.stub(u, replica + 1).Check(check).decision
            if decision.reason != model[u]:
                failures.append("write %d: %s on group %d read %s, expected %s" % (
                    n, u, router.group_of(u), types_pb2.DecisionReason.Name(decision.reason),
                    types_pb2.DecisionReason.Name(model[u])))
            ryw += 1

        # Each group's revisions are its own writes, contiguous from 1.
        for g in range(args.groups):
            for r in range(args.replicas):
                probe = registry_pb2.CheckRequest(purpose="ai_training", user_id="nobody",
                                                  content=post("nobody", "p").content,
                                                  min_revision=router.vector[g])
                revision = groups[g][r].Check(probe).decision.revision
                if revision != writes[g]:
                    failures.append("group %d replica %d is at revision %d, %d writes went there"
                                    % (g, r, revision, writes[g]))

        # One BatchCheck over every user, split by group, merged back in order.
        items = [post(u, "batch-%d" % i) for i, u in enumerate(users)]
        by_group = {}
        for index, item in enumerate(items):
            by_group.setdefault(router.group_of(item.user_id), []).append(index)
        answers = [None] * len(items)
        for g, indexes in by_group.items():
            request = registry_pb2.BatchCheckRequest(purpose="ai_training",
                                                     min_revision=router.vector[g])
            request.items.extend(items[i] for i in indexes)
            response = groups[g][rng.randrange(args.replicas)].BatchCheck(request)
            for i, d in zip(indexes, response.decisions):
                answers[i] = d.reason
        wrong = [u for u, a in zip(users, answers) if a != model[u]]
        if wrong:
            failures.append("batch: %d users answered against the model (%s...)" %
                            (len(wrong), ", ".join(wrong[:3])))

        # The wrong group has no record of a user: its answer is not theirs.
        u = users[0]
        other = (router.group_of(u) + 1) % args.groups
        misrouted = groups[other][0].Check(registry_pb2.CheckRequest(
            purpose="ai_training", user_id=u, content=post(u, "p").content)).decision.reason
        if misrouted != types_pb2.DECISION_REASON_DENIED_MINOR:
            failures.append("a misrouted check answered %s" %
                            types_pb2.DecisionReason.Name(misrouted))

        print("shard simulation: %d groups x %d replicas, %d users (per group: %s), "
              "%d writes (per group, with the %d attribute writes: %s)" %
              (args.groups, args.replicas, args.users, per_group_users, args.writes,
               args.users, writes))
        print("  revision vector after the writes: %s (each group's own, contiguous)" %
              router.vector)
        print("  %d read-your-writes checks on the other replica of the user's group, "
              "%d batch items across all groups; %d disagreements; %.1f s" %
              (ryw, len(items), len(failures), time.monotonic() - start))
    finally:
        for server in servers:
            server.stop(signal.SIGTERM)
        for proc in nats:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    for failure in failures[:20]:
        print("  DISAGREES: " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
