"""The Client: checks (one, streamed, filtered, a pandas mask), writes with
a request id, and the change feed."""
import collections
import json
import os
import threading
import time
import uuid

import grpc

from . import _errors, _files, _wire
from ._proto.consent.v1 import admin_pb2, admin_pb2_grpc, registry_pb2, registry_pb2_grpc, types_pb2

_SERVICE = "/consent.v1.ConsentRegistry/"
_REASONS = {number: name[len("DECISION_REASON_"):]
            for name, number in types_pb2.DecisionReason.items()}
_STATES = {"OBJECTED": types_pb2.PREFERENCE_STATE_OBJECTED,
           "CONSENTED": types_pb2.PREFERENCE_STATE_CONSENTED,
           "CLEARED": types_pb2.PREFERENCE_STATE_CLEARED}

# The default retry policy (gRPC service config; usable from any language's
# gRPC): UNAVAILABLE is tried 5 times in all, waiting a random time up to
# 0.5 s, 1 s, 2 s and 2 s between attempts.
# Writes are listed too: this client always sends a request_id, so a
# replayed write returns the first result and writes nothing.
with open(os.path.join(os.path.dirname(__file__), "service_config.json")) as _f:
    SERVICE_CONFIG = json.dumps(json.load(_f))

Item = collections.namedtuple(
    "Item", ["user_id", "content_id", "content_type", "visibility", "create_time", "sensitive"],
    defaults=(None, None, None, ()))
Item.__doc__ = """One check: a user and a piece of their content.

content_type and visibility are names ("POST", "PUBLIC", or the full enum
names) or numbers; create_time a datetime (naive means UTC), seconds since
the Unix epoch, an RFC 3339 string or a protobuf Timestamp; sensitive a
list of category names.
Unset content_type or visibility take the call's defaults, and without one
the server answers the item with its error (never a silent default)."""


class Decision:
    """The registry's answer for one item. Immutable: equal answers may be
    one shared object.

    allowed: True only when the registry allowed the use; reason: the
    DecisionReason's name without its prefix ("ALLOWED_DEFAULT",
    "DENIED_OBJECTION", ..., "UNSPECIFIED" for an item with an error);
    policy_version and revision as the server gave them; error: None, or
    the item's ConsentError (InvalidArgument naming its bad field) when no
    decision was made, and then allowed is False.
    """

    __slots__ = ("allowed", "reason", "policy_version", "revision", "error")

    def __init__(self, allowed, reason, policy_version="", revision=0, error=None):
        _set = object.__setattr__
        _set(self, "allowed", allowed)
        _set(self, "reason", reason)
        _set(self, "policy_version", policy_version)
        _set(self, "revision", revision)
        _set(self, "error", error)

    def __setattr__(self, name, value):
        raise AttributeError("a Decision is immutable")

    def __eq__(self, other):
        return isinstance(other, Decision) and all(
            getattr(self, f) == getattr(other, f) for f in self.__slots__[:4]) and \
            str(self.error) == str(other.error)

    def __hash__(self):
        return hash((self.allowed, self.reason, self.policy_version, self.revision))

    @classmethod
    def failed(cls, error):
        """No decision was made: never allowed, carrying `error`."""
        return cls(False, "UNSPECIFIED", "", 0, error)

    @classmethod
    def from_proto(cls, d):
        if d.HasField("error"):
            return cls.failed(_errors.from_status(d.error))
        return cls(d.allowed, _REASONS.get(d.reason, str(d.reason)), d.policy_version, d.revision)

    def __repr__(self):
        if self.error is not None:
            return "Decision(allowed=False, error=%r)" % str(self.error)
        return "Decision(allowed=%r, reason=%r, policy_version=%r, revision=%r)" % (
            self.allowed, self.reason, self.policy_version, self.revision)


def _local_error(error):
    """A Decision for an item this package could not encode."""
    return Decision.failed(_errors.InvalidArgument(str(error)))


class Client:
    """A client of consentd. Thread safe; fork safe (a child process gets a
    channel of its own on first use, see docs/python.md).

    target: "host:port" (default: $CONSENT_TARGET, else 127.0.0.1:50051).
    TLS: ca_file (the CA that signed the server's certificate) turns it on;
    cert_file and key_file add a client certificate (mTLS); server_name
    overrides the name checked on the server's certificate. token (or
    token_file): a bearer token, only over TLS. timeout: seconds per unary
    call attempt (streams have none unless asked). retries: False turns
    the service config's retry policy off.
    """

    def __init__(self, target=None, *, ca_file=None, cert_file=None, key_file=None,
                 server_name=None, token=None, token_file=None, timeout=10.0, retries=True,
                 options=()):
        self.target = target or os.environ.get("CONSENT_TARGET") or "127.0.0.1:50051"
        if token_file is not None:
            with open(token_file) as f:
                token = f.read().strip()
        if (token or cert_file or key_file) and not ca_file:
            raise ValueError("token and client certificates need TLS: give ca_file")
        if bool(cert_file) != bool(key_file):
            raise ValueError("cert_file and key_file go together")
        self.timeout = timeout
        self._credentials = None
        if ca_file:
            def read(path):
                with open(path, "rb") as f:
                    return f.read()
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=read(ca_file),
                private_key=read(key_file) if key_file else None,
                certificate_chain=read(cert_file) if cert_file else None)
            if token:
                self._credentials = grpc.composite_channel_credentials(
                    self._credentials, grpc.access_token_call_credentials(token))
        # Reconnect soon after a server restart (gRPC's defaults wait 1 s,
        # then longer, up to 120 s), so retries find it back.
        self._options = [("grpc.enable_retries", 1 if retries else 0),
                         ("grpc.initial_reconnect_backoff_ms", 100),
                         ("grpc.min_reconnect_backoff_ms", 100),
                         ("grpc.max_reconnect_backoff_ms", 2000),
                         ("grpc.max_receive_message_length", 64 << 20),
                         ("grpc.max_send_message_length", 64 << 20)]
        if retries:
            self._options.append(("grpc.service_config", SERVICE_CONFIG))
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._options += list(options)
        self._lock = threading.Lock()
        self._pid = None
        self._channel = None

    # The channel, made again in a forked child: a channel does not survive
    # fork (gRPC closes it in the child when fork support is on).
    def channel(self):
        pid = os.getpid()
        with self._lock:
            if self._pid != pid:
                self._channel = self.new_channel()
                self._pid = pid
                self._registry = registry_pb2_grpc.ConsentRegistryStub(self._channel)
                self._admin = admin_pb2_grpc.ConsentAdminStub(self._channel)
                self._stream_check = self._channel.stream_stream(
                    _SERVICE + "StreamCheck", request_serializer=None,
                    response_deserializer=None)
            return self._channel

    def new_channel(self):
        """A channel of its own to the target, with this client's
        credentials and options (the caller closes it)."""
        if self._credentials is not None:
            return grpc.secure_channel(self.target, self._credentials, self._options)
        return grpc.insecure_channel(self.target, self._options)

    def _stubs(self):
        self.channel()
        return self._registry, self._admin

    def close(self):
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = None
            self._pid = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, timeout=None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise _errors.from_rpc_error(e) from None

    # --- checks -----------------------------------------------------------

    def check(self, purpose, user_id, content_id, *, content_type=None, visibility=None,
              create_time=None, sensitive=(), as_of=None, min_revision=0, on_error="raise",
              timeout=None):
        """One decision. Errors raise a ConsentError (on_error="raise") or,
        with on_error="deny", come back as Decision(allowed=False,
        error=...): either way never allowed."""
        _check_on_error(on_error)
        try:
            content = types_pb2.Content.FromString(_wire.encode_content(
                content_id, content_type, visibility, create_time, sensitive))
            request = registry_pb2.CheckRequest(purpose=purpose, user_id=user_id, content=content,
                                                min_revision=min_revision)
            if as_of is not None:
                seconds, nanos = _wire.timestamp(as_of, "as_of")
                request.as_of.seconds, request.as_of.nanos = seconds, nanos
        except _wire.ItemError as e:
            error = _errors.InvalidArgument(str(e))
            if on_error == "raise":
                raise error from None
            return Decision.failed(error)
        registry, _ = self._stubs()
        try:
            return Decision.from_proto(self._call(registry.Check, request, timeout).decision)
        except _errors.ConsentError as e:
            if on_error == "raise":
                raise
            return Decision.failed(e)

    def check_many(self, items, purpose, *, batch_size=1000, max_in_flight=4, as_of=None,
                   min_revision=0, content_type=None, visibility=None, on_item_error="deny",
                   retries=4, timeout=None):
        """Streams `items` (any iterable of Item, tuples, dicts or CheckItem)
        through StreamCheck, `batch_size` items a message and at most
        `max_in_flight` messages unanswered, and yields one Decision per
        item, in order. Returns a CheckResults iterator (its `revision` says
        which writes every decision reflects).

        An item whose own fields are invalid yields Decision(allowed=False,
        error=...) (on_item_error="deny") or raises its InvalidArgument
        (on_item_error="raise"). A failed call raises a ConsentError: the
        stream is opened again on UNAVAILABLE (`retries` times in a row, the
        unanswered messages resent), otherwise nothing more is yielded.
        """
        _check_on_error(on_item_error)
        return CheckResults(self, ((None, item) for item in items), purpose, batch_size,
                            max_in_flight, as_of, min_revision, content_type, visibility,
                            on_item_error, retries, timeout, decisions=True)

    def filter_allowed(self, rows, purpose, *, key=None, batch_size=1000, max_in_flight=4,
                       as_of=None, min_revision=0, content_type=None, visibility=None,
                       on_item_error="deny", retries=4, timeout=None):
        """Yields the rows whose item the registry allows, in order. key(row)
        gives the row's item (default: the row itself). Rows with an item
        error are dropped (on_item_error="deny") or raise (="raise"); a
        failed call raises. Returns a CheckResults iterator; its counters
        (checked, allowed, invalid) and revision describe the rows so far."""
        _check_on_error(on_item_error)
        key = key or (lambda row: row)
        return CheckResults(self, ((row, key(row)) for row in rows), purpose, batch_size,
                            max_in_flight, as_of, min_revision, content_type, visibility,
                            on_item_error, retries, timeout, decisions=False)

    def allowed_mask(self, df, purpose, *, columns=None, **kwargs):
        """A boolean pandas Series, index of `df`: True where the row's item
        is allowed. columns maps Item fields to df's columns (default: the
        columns named like Item's fields). Rows with an item error are
        False; a failed call raises. kwargs as for check_many."""
        import pandas as pd  # optional: only this method needs it

        if columns is None:
            columns = {f: f for f in Item._fields if f in df.columns}
        if "user_id" not in columns:
            raise ValueError("allowed_mask: no user_id column (give columns=)")
        fields = [columns.get(f) for f in Item._fields]
        series = [df[c].tolist() if c is not None else [None] * len(df) for c in fields]
        for i, f in enumerate(Item._fields):
            if f == "sensitive" and fields[i] is None:
                series[i] = [()] * len(df)
            elif f == "create_time" and fields[i] is not None:
                series[i] = [None if v is None or v != v else v for v in series[i]]
        items = zip(*series)
        flags = [d.allowed for d in self.check_many(items, purpose, **kwargs)]
        return pd.Series(flags, index=df.index, dtype=bool, name="allowed")

    def batch_check(self, items, purpose, *, as_of=None, min_revision=0, content_type=None,
                    visibility=None, timeout=None):
        """One BatchCheck of up to 10,000 items: (decisions, revision)."""
        encoder = _wire.ItemEncoder(content_type, visibility)
        decisions, encoded, positions = [], [], []
        for item in items:
            try:
                encoded.append(encoder.encode(item))
                positions.append(len(decisions))
                decisions.append(None)
            except _wire.ItemError as e:
                decisions.append(_local_error(e))
        if encoded:
            request = registry_pb2.BatchCheckRequest.FromString(
                _wire.encode_request(purpose, encoded, as_of, min_revision))
            registry, _ = self._stubs()
            response = self._call(registry.BatchCheck, request, timeout)
            for position, d in zip(positions, response.decisions):
                decisions[position] = Decision.from_proto(d)
            return decisions, response.revision
        return decisions, 0

    # --- writes: always with a request_id ----------------------------------

    def set_preference(self, user_id, purpose, state, *, effective_time=None, expire_time=None,
                       source=None, request_id=None, expected_revision=None, timeout=None):
        """Records OBJECTED, CONSENTED or CLEARED; returns the revision. A
        request_id is generated when not given, so a retried call (or a
        call repeated with the same request_id) writes once."""
        request = registry_pb2.SetPreferenceRequest(
            user_id=user_id, purpose=purpose, state=_STATES.get(state, state),
            request_id=request_id or uuid.uuid4().hex)
        _set_time(request.effective_time, effective_time, "effective_time")
        _set_time(request.expire_time, expire_time, "expire_time")
        if source:
            request.source.CopyFrom(types_pb2.Source(**source))
        if expected_revision is not None:
            request.expected_revision = expected_revision
        registry, _ = self._stubs()
        return self._call(registry.SetPreference, request, timeout).revision

    def update_subject(self, user_id, *, jurisdiction=None, birth_date=None, account_state=None,
                       request_id=None, timeout=None):
        """Sets the given attributes (birth_date: a datetime.date or
        (year, month, day)); returns the revision."""
        request = registry_pb2.UpdateSubjectRequest(user_id=user_id,
                                                    request_id=request_id or uuid.uuid4().hex)
        if jurisdiction is not None:
            request.attributes.jurisdiction = jurisdiction
            request.update_mask.paths.append("jurisdiction")
        if birth_date is not None:
            y, m, d = ((birth_date.year, birth_date.month, birth_date.day)
                       if hasattr(birth_date, "year") else birth_date)
            request.attributes.birth_date.year = y
            request.attributes.birth_date.month = m
            request.attributes.birth_date.day = d
            request.update_mask.paths.append("birth_date")
        if account_state is not None:
            request.attributes.account_state = (
                types_pb2.AccountState.Value("ACCOUNT_STATE_" + account_state)
                if isinstance(account_state, str) else account_state)
            request.update_mask.paths.append("account_state")
        registry, _ = self._stubs()
        return self._call(registry.UpdateSubject, request, timeout).revision

    def delete_subject(self, user_id, *, request_id=None, timeout=None):
        """Tombstones the account; returns the revision."""
        request = registry_pb2.DeleteSubjectRequest(user_id=user_id,
                                                    request_id=request_id or uuid.uuid4().hex)
        registry, _ = self._stubs()
        return self._call(registry.DeleteSubject, request, timeout).revision

    def list_history(self, user_id, *, timeout=None):
        """Every change event of the user, oldest first."""
        registry, _ = self._stubs()
        events, token = [], ""
        while True:
            page = self._call(registry.ListHistory, registry_pb2.ListHistoryRequest(
                user_id=user_id, page_size=1000, page_token=token), timeout)
            events.extend(page.events)
            token = page.next_page_token
            if not token:
                return events

    def export_snapshot(self, path, *, pseudonymize=False, timeout=None):
        """Writes a signed snapshot of the registry (ExportSnapshot, admin
        role) to `path`, replaced atomically (a temporary file in the same
        directory, owner only, synced, renamed, the directory synced), so
        `path` is never a partial file. Returns (revision,
        subjects, size in bytes). consent_registry.offline.Snapshot loads
        it (docs/offline.md)."""
        _, admin = self._stubs()

        def write(f):
            last = None
            try:
                for message in admin.ExportSnapshot(
                        admin_pb2.ExportSnapshotRequest(pseudonymize=pseudonymize),
                        timeout=timeout):
                    f.write(message.chunk)
                    if message.last:
                        last = message
            except grpc.RpcError as e:
                raise _errors.from_rpc_error(e) from None
            if last is None:
                raise _errors.ConsentError("the stream ended before the snapshot's last message")
            return last

        last = _files.write_atomically(path, write, prefix=".snapshot-")
        return last.revision, last.subjects, last.size_bytes

    def watch(self, start_revision=1, purpose="", *, checkpoint=None, checkpoints=False,
              max_backoff=5.0, give_up_after=None, idle_timeout=30.0):
        """Follows WatchChanges from start_revision (or after the revision
        saved in `checkpoint`, a path), optionally for one purpose; returns
        a Watch iterator of ChangeEvent messages (see Watch)."""
        from ._watch import Watch

        return Watch(self, start_revision, purpose, checkpoint, checkpoints, max_backoff,
                     give_up_after, idle_timeout)


def _check_on_error(value):
    if value not in ("raise", "deny"):
        raise ValueError("on_error must be 'raise' or 'deny', not %r" % (value,))


def _set_time(field, value, name):
    if value is None:
        return
    try:
        field.seconds, field.nanos = _wire.timestamp(value, name)
    except _wire.ItemError as e:
        raise _errors.InvalidArgument(str(e)) from None


class CheckResults:
    """The iterator check_many and filter_allowed return. Attributes, for
    what was yielded so far: checked, allowed, invalid (item errors) and
    revision (the lowest registry revision a response was read at: every
    write up to it is reflected in every decision; 0 before the first).
    close() (or leaving a for loop early and dropping it) cancels the
    stream."""

    def __init__(self, client, tagged, purpose, batch_size, max_in_flight, as_of, min_revision,
                 content_type, visibility, on_item_error, retries, timeout, decisions):
        if not 1 <= batch_size <= 10000:
            raise ValueError("batch_size must be 1 to 10,000")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.checked = self.allowed = self.invalid = 0
        self.revision = 0
        self._client = client
        self._source = iter(tagged)
        self._purpose = purpose
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._as_of = as_of
        self._min_revision = min_revision
        self._encoder = _wire.ItemEncoder(content_type, visibility)
        self._raise_item_errors = on_item_error == "raise"
        self._retries = retries
        self._timeout = timeout
        self._decisions = decisions
        self._cond = threading.Condition()
        # Messages sent and not answered: (tags, local errors by position,
        # the message's bytes), oldest first. Guarded by _cond.
        self._pending = collections.deque()
        self._generation = 0
        self._source_done = False
        self._source_error = None
        self._iter = self._run()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iter)

    def close(self):
        self._iter.close()

    def _next_message(self):
        """The next message from the source: (tags, local errors, bytes), or
        None at its end. Called with _cond held."""
        tags, local, encoded = [], {}, []
        for tag, item in self._source:
            try:
                encoded.append(self._encoder.encode(item))
            except _wire.ItemError as e:
                local[len(tags)] = _local_error(e)
            tags.append(tag)
            if len(tags) == self._batch_size:
                break
        if not tags:
            return None
        body = _wire.encode_request(self._purpose, encoded, self._as_of, self._min_revision) \
            if encoded else b""
        return tags, local, body

    def _requests(self, generation):
        # Runs on gRPC's thread: first resends what the previous stream left
        # unanswered, then reads the source, keeping at most max_in_flight
        # messages unanswered.
        with self._cond:
            resend = [m[2] for m in self._pending if m[2]]
        for body in resend:
            yield body
        while True:
            with self._cond:
                while (len(self._pending) >= self._max_in_flight and
                       self._generation == generation):
                    self._cond.wait()
                if self._generation != generation or self._source_done:
                    return
                try:
                    message = self._next_message()
                except BaseException as e:  # the caller's iterable failed
                    self._source_error = e
                    message = None
                if message is None:
                    self._source_done = True
                    self._cond.notify_all()
                    return
                self._pending.append(message)
                self._cond.notify_all()
            if message[2]:
                yield message[2]

    def _answers(self):
        """Yields (tags, local, response or None) per message, in order,
        opening the stream again on UNAVAILABLE."""
        failures = 0
        while True:
            with self._cond:
                self._generation += 1
                generation = self._generation
            # Reopened after a failure: on a channel of its own, closed with
            # the stream (a call started while the shared channel was
            # reconnecting to a restarted server was seen to hang).
            own_channel = self._client.new_channel() if failures else None
            if own_channel is not None:
                stream_check = own_channel.stream_stream(
                    _SERVICE + "StreamCheck", request_serializer=None, response_deserializer=None)
            else:
                self._client.channel()
                stream_check = self._client._stream_check
            call = stream_check(self._requests(generation), timeout=self._timeout)
            # Wakes the wait below when the call ends, whether or not gRPC
            # ever asked the request iterator for a message.
            call.add_done_callback(lambda _: self._notify())
            finished = False
            try:
                responses = iter(call)
                while True:
                    with self._cond:
                        # A call that failed before gRPC asked the request
                        # iterator for a message (its server gone) never
                        # will: it is done, and its error is read below.
                        while not self._pending and not self._source_done and not call.done():
                            self._cond.wait()
                        if not self._pending and self._source_done:
                            break  # the source is done and every message answered
                        tags, local, body = self._pending[0] if self._pending else (None, None, None)
                        if tags is not None and not body:  # no item to send: answered here
                            self._pending.popleft()
                            self._cond.notify_all()
                    if tags is not None and not body:
                        yield tags, local, None
                        continue
                    try:
                        response = next(responses)
                    except StopIteration:
                        raise _errors.Unavailable(
                            "StreamCheck ended with %d messages unanswered" %
                            len(self._pending)) from None
                    if tags is None:
                        raise _errors.ConsentError("StreamCheck answered a message never sent")
                    with self._cond:
                        self._pending.popleft()
                        self._cond.notify_all()
                    failures = 0
                    yield tags, local, response
                # The requests are half-closed: the server ends the stream.
                for _ in responses:
                    raise _errors.ConsentError("StreamCheck answered a message never sent")
                finished = True
            except grpc.RpcError as e:
                error = _errors.from_rpc_error(e)
                failures += 1
                if error.code != grpc.StatusCode.UNAVAILABLE or failures > self._retries:
                    raise error from None
                time.sleep(min(2.0, 0.1 * 2 ** (failures - 1)))
            finally:
                with self._cond:
                    self._generation += 1
                    self._cond.notify_all()
                if not finished:
                    call.cancel()
                if own_channel is not None:
                    own_channel.close()
            if finished:
                if self._source_error is not None:
                    raise self._source_error
                return

    def _notify(self):
        with self._cond:
            self._cond.notify_all()

    def _run(self):
        # Decisions by their bytes: most items of a run share a few answers
        # (the same reason, policy version and revision), so each distinct
        # one is parsed once (_wire.split_response). Bounded.
        cache = {}
        for tags, local, response in self._answers():
            if response is not None:
                answers, revision = _wire.split_response(response)
                if len(answers) != len(tags) - len(local):
                    raise _errors.ConsentError(
                        "StreamCheck answered %d items of %d" % (len(answers),
                                                                len(tags) - len(local)))
                if self.revision == 0 or revision < self.revision:
                    self.revision = revision
                remote = iter(answers)
            for position, tag in enumerate(tags):
                decision = local.get(position) if local else None
                if decision is None:
                    raw = next(remote)
                    decision = cache.get(raw)
                    if decision is None:
                        decision = Decision.from_proto(types_pb2.Decision.FromString(raw))
                        if len(cache) >= 4096:
                            cache.clear()
                        cache[raw] = decision
                    if decision.error is None and not self._decisions:
                        # filter_allowed: only whether it is allowed
                        self.checked += 1
                        if decision.allowed:
                            self.allowed += 1
                            yield tag
                        continue
                self.checked += 1
                if decision.error is not None:
                    self.invalid += 1
                    if self._raise_item_errors:
                        raise decision.error
                elif decision.allowed:
                    self.allowed += 1
                if self._decisions:
                    yield decision
                elif decision.allowed:
                    yield tag
