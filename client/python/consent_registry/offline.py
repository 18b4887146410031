"""Decisions inside the job, from a signed snapshot of the registry.

    from consent_registry import Client, offline
    snapshot = offline.Snapshot("registry.snap", public_key="snapshot.pub")
    snapshot.catch_up(Client("consentd:50051", token_file="auditor.token"))
    allowed = snapshot.check_many(user_ids, content_ids, purpose="ai_training")

The snapshot (consentctl snapshot export) holds every subject's decision
inputs at one revision; Snapshot maps it, checks its Ed25519 signature and
its policy, and decides with the server's own rules (the C++ decision
engine, compiled into this package's _offline module). catch_up applies
the change feed, so that every write the server acknowledged before it is
honoured. See docs/offline.md: when to use a snapshot, what catch_up
promises, key handling.
"""
import datetime
import hashlib
import hmac
import math
import os

import grpc

from . import _errors, _wire
from ._client import _REASONS, Decision
from ._proto.consent.v1 import admin_pb2, registry_pb2

try:
    # The compiled module answers with numpy arrays: both or neither.
    import numpy

    from . import _offline
except ImportError as e:  # pragma: no cover - depends on how the package was built
    _offline = None
    _IMPORT_ERROR = e

__all__ = ["Snapshot", "pseudonym", "reason_names"]


def pseudonym(key, user_id):
    """The keyed hash a pseudonymized snapshot names `user_id` by:
    HMAC-SHA256 under `key` (the server's --pseudonymize_key_file), as 64
    lowercase hex digits."""
    if isinstance(key, str):
        key = key.encode()
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def reason_names(reasons):
    """Names ("ALLOWED_DEFAULT", "DENIED_OBJECTION", ...) of the reason
    codes check_many returns."""
    return [_REASONS.get(int(r), str(int(r))) for r in reasons]


def _public_key(value):
    """The key as the module takes it: PEM text, or 32 raw bytes; a path
    to a PEM file is read."""
    if isinstance(value, (bytes, bytearray)) and len(value) == 32:
        return bytes(value)
    if isinstance(value, str) and "-----BEGIN" not in value:
        with open(value, "rb") as f:
            return f.read()
    if isinstance(value, os.PathLike):
        with open(value, "rb") as f:
            return f.read()
    return value


def _seconds(value, field):
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    seconds, nanos = _wire.timestamp(value, field)
    return seconds + nanos / 1e9


def _enum_column(value, values, field):
    """An enum number, or a list/array of them, from names or numbers."""
    if isinstance(value, (str, int)):
        return _wire._enum(value, values, field)
    if isinstance(value, numpy.ndarray) and value.dtype.kind in "iu":
        return value
    return [_wire._enum(v, values, field) for v in value]


def _id_column(ids):
    """Ids as the module takes them: a numpy array of str (dtype 'U',
    which it does not read) as a list."""
    if isinstance(ids, numpy.ndarray) and ids.dtype.kind == "U":
        return ids.tolist()
    return ids


class Snapshot:
    """A signed snapshot of the registry, loaded for decisions in this
    process. Thread safe; the GIL is held while it decides."""

    def __init__(self, path, public_key):
        """Maps the snapshot at `path` and checks its signature under
        `public_key` (a path to the PEM file `openssl pkey -pubout` makes,
        the PEM text, or the 32 raw bytes), its structure and its policy.
        Raises FileNotFoundError, or ValueError saying which check failed."""
        if _offline is None:
            raise ImportError("consent_registry.offline needs the compiled module _offline, "
                              "which this installation lacks (build it with CMake: target "
                              "consent_offline_py; docs/offline.md): %s" % _IMPORT_ERROR)
        self._native = _offline.Snapshot(os.fspath(path), _public_key(public_key))

    @property
    def revision(self):
        """The revision decisions are made at: the snapshot's, then the
        last one catch_up reached."""
        return self._native.revision

    @property
    def subjects(self):
        return self._native.subjects

    @property
    def pseudonymized(self):
        """User ids are keyed hashes (pseudonym())."""
        return self._native.pseudonymized

    @property
    def create_time(self):
        """When the server took the snapshot (UTC)."""
        return datetime.datetime.fromtimestamp(self._native.create_time, datetime.timezone.utc)

    @property
    def policy_version(self):
        return self._native.policy_version

    @property
    def changed_subjects(self):
        """Subjects changed since the snapshot (kept in memory)."""
        return self._native.changed_subjects

    def catch_up(self, client, *, follow=None, timeout=None):
        """Applies the server's change feed from this copy's revision until
        the server says the copy holds every write up to its current
        revision, then adopts the server's policy if it changed. Returns the
        number of events applied. Every write the server acknowledged before
        catch_up was called is honoured when it returns.

        `client` is a consent_registry.Client whose caller has the auditor
        role (other callers' feeds carry no attribute values, and the copy
        refuses them). With `follow` (a callable taking the revision
        reached), goes on after each time it is current while follow
        returns true, adopting the server's policy each time. `timeout`:
        seconds for the whole call (None: none).
        Raises the package's errors (ConsentError subclasses) for the
        server's, ValueError for a feed the copy cannot apply."""
        registry, admin = client._stubs()
        request = registry_pb2.WatchChangesRequest(
            start_revision=self._native.revision + 1, pseudonymize=self._native.pseudonymized,
            checkpoint_when_current=True)
        applied = 0
        stream = registry.WatchChanges(request, timeout=timeout)
        try:
            for message in stream:
                if message.HasField("event"):
                    self._native.apply(message.event.SerializeToString())
                    applied += 1
                    continue
                self._native.advance(message.checkpoint.revision)
                # A policy activation is not an event: asked for at each
                # point the copy is current.
                policy = client._call(admin.GetPolicy, admin_pb2.GetPolicyRequest(), timeout)
                if policy.text != self._native.policy_text:
                    self._native.set_policy(policy.text)
                if follow is None or not follow(message.checkpoint.revision):
                    break
        except grpc.RpcError as e:
            raise _errors.from_rpc_error(e) from None
        finally:
            stream.cancel()
        return applied

    def check(self, purpose, user_id, content_id="", *, content_type="POST", visibility="PUBLIC",
              create_time=None, sensitive=(), at=None):
        """One decision, validated as the server validates a Check
        (ValueError naming the field otherwise). Returns the package's
        Decision, with this copy's revision."""
        allowed, reason, version, revision = self._native.check(
            purpose, user_id, content_id or "",
            _wire._enum(content_type, _wire.CONTENT_TYPES, "content_type"),
            _wire._enum(visibility, _wire.VISIBILITIES, "visibility"),
            _seconds(create_time, "create_time"),
            [_wire._enum(s, _wire.SENSITIVE_CATEGORIES, "sensitive") for s in sensitive],
            _seconds(at, "at"))
        return Decision(allowed, _REASONS.get(reason, str(reason)), version, revision)

    def check_many(self, user_ids, content_ids=None, *, purpose, content_type="POST",
                   visibility="PUBLIC", create_times=None, sensitive=(), at=None,
                   reasons=False):
        """Decisions for many items at once: user_ids[i] (and its
        content_ids[i], which exclusions name) with the content described
        by the other arguments, each a single value for every item or one
        per item (lists or numpy arrays). user_ids and content_ids: lists of
        str, or numpy arrays of dtype object or bytes ('S'). create_times:
        seconds since the Unix epoch (NaN: unknown). `at`: evaluation time
        (default now).

        Returns a numpy bool array (allowed), or with reasons=True also the
        reason codes (int32; reason_names() names them). Items are not
        validated one by one: ids are looked up as given (an unknown one
        has no record, as the server would say)."""
        content_type = _enum_column(content_type, _wire.CONTENT_TYPES, "content_type")
        visibility = _enum_column(visibility, _wire.VISIBILITIES, "visibility")
        if create_times is not None and \
                not isinstance(create_times, (int, float, numpy.ndarray)):
            create_times = [math.nan if t is None else _seconds(t, "create_times")
                            for t in create_times]
        allowed, codes = self._native.check_many(
            purpose, _id_column(user_ids), _id_column(content_ids), content_type, visibility, create_times,
            [_wire._enum(s, _wire.SENSITIVE_CATEGORIES, "sensitive") for s in sensitive],
            _seconds(at, "at"))
        return (allowed, codes) if reasons else allowed
