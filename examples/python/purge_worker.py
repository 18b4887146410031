#!/usr/bin/env python3
"""Follows the change feed for PURPOSE and writes, one JSON line each, the
users whose already-collected content must be purged from training data:
an objection to the purpose (or a related one: the feed passes ancestors
and descendants), an account deletion, or one post excluded (with its
content id). Runs unattended: it reconnects while consentd restarts.

Exactly once across restarts of the worker: the output and the resume
revision are committed together. After each handled event the output is
synced and a state file (the revision and the output's committed length)
is replaced atomically; on start, the output is cut back to the committed
length and the feed resumes after the committed revision. A crash between
the two redoes the event, and the line written for it the first time is
cut away.

  purge_worker.py --purpose ai_training --state purge.state purge.jsonl
"""
import argparse
import json
import os
import signal
import sys
import tempfile

import consent_registry

OBJECTED = 1  # consent.v1.PreferenceState.PREFERENCE_STATE_OBJECTED


def purge_record(event):
    """What must be purged for this event, or None."""
    change = event.WhichOneof("change")
    if change == "preference" and event.preference.after.state == OBJECTED:
        return {"user_id": event.user_id, "reason": "objection",
                "purpose": event.preference.purpose}
    if change == "deletion":
        return {"user_id": event.user_id, "reason": "account_deleted"}
    if change == "exclusion" and event.exclusion.excluded_after:
        return {"user_id": event.user_id, "reason": "content_excluded",
                "purpose": event.exclusion.purpose, "content_id": event.exclusion.content_id}
    return None


class CommittedOutput:
    """The output file and its state, committed together (the Watch's
    checkpoint: load() and save(revision))."""

    def __init__(self, output_path, state_path):
        self.state_path = state_path
        state = self._read_state()
        self.out = open(output_path, "ab+")
        # Cut back what was written after the last commit.
        self.out.truncate(state["length"])
        self.out.seek(state["length"])
        self.revision = state["revision"]

    def _read_state(self):
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"revision": None, "length": 0}

    def write(self, record):
        self.out.write((json.dumps(record, sort_keys=True) + "\n").encode())

    def load(self):
        return self.revision

    def save(self, revision):
        self.out.flush()
        os.fsync(self.out.fileno())
        state = {"revision": revision, "length": self.out.tell()}
        directory = os.path.dirname(os.path.abspath(self.state_path))
        fd, tmp = tempfile.mkstemp(prefix=".purge-state-", dir=directory)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.revision = revision


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output")
    parser.add_argument("--purpose", required=True)
    parser.add_argument("--state", required=True, help="the committed state file")
    parser.add_argument("--start_revision", type=int, default=1,
                        help="where to start when there is no state yet")
    parser.add_argument("--target")
    parser.add_argument("--stop_at_revision", type=int, default=0,
                        help="exit once this revision is committed (0: run forever)")
    parser.add_argument("--crash_after_write", type=int, default=0,
                        help="testing: die (SIGKILL) right after writing the Nth record, "
                             "before its commit")
    args = parser.parse_args()

    output = CommittedOutput(args.output, args.state)
    client = consent_registry.Client(args.target)
    watch = client.watch(args.start_revision, args.purpose, checkpoint=output, checkpoints=True)
    written = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stops between commits
    for message in watch:
        if args.stop_at_revision and output.revision is not None and \
                output.revision >= args.stop_at_revision:
            break
        if isinstance(message, consent_registry.Checkpoint):
            continue
        record = purge_record(message)
        if record is not None:
            record["revision"] = message.revision
            output.write(record)
            written += 1
            if written == args.crash_after_write:
                output.out.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    watch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
