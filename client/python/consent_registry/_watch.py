"""Following the change feed with a resume point kept on disk."""
import os
import threading
import time

import grpc

from . import _errors, _files
from ._proto.consent.v1 import registry_pb2, registry_pb2_grpc


class FileCheckpoint:
    """The last handled revision in a small text file, replaced atomically
    (written to a temporary file in the same directory, synced, renamed,
    and the directory synced): after a crash the file holds the old or the
    new revision, never a torn one."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def load(self):
        """The saved revision, or None when there is none yet."""
        try:
            with open(self.path) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError("checkpoint file %s does not hold a revision: %r" %
                             (self.path, text[:40])) from None

    def save(self, revision):
        _files.write_atomically(self.path, lambda f: f.write(b"%d\n" % revision),
                                prefix=".checkpoint-")


class Watch:
    """An iterator over the change feed: types_pb2.ChangeEvent messages in
    revision order (and, with checkpoints=True, the server's Checkpoint
    messages between them).

    The resume point is the last handled revision: an event counts as
    handled once the caller asks for the next one (so an event whose
    handling crashed comes again), and a server checkpoint moves it past
    the events the purpose filter left out. With `checkpoint` (a path, or
    an object with load() -> revision or None and save(revision)) it is
    saved after each handled event and at each server checkpoint, and a
    new Watch resumes after it: no gap and no duplicate across restarts
    of the caller or of the server. Without it, only this iterator
    remembers it.

    UNAVAILABLE (the server restarting, draining, unreachable) reconnects
    from the resume point with exponential backoff up to max_backoff
    seconds, forever unless give_up_after seconds pass without an answer
    (then Unavailable is raised). A stream on which the server stays silent
    for idle_timeout seconds (the caller's handling time does not count) is
    taken as dead and opened again: the server sends a checkpoint at least
    every --watch_checkpoint_interval (5 s) while idle, so silence means a
    lost connection. Other errors raise their ConsentError.
    """

    def __init__(self, client, start_revision, purpose, checkpoint, checkpoints, max_backoff,
                 give_up_after, idle_timeout):
        if checkpoint is not None and not hasattr(checkpoint, "save"):
            checkpoint = FileCheckpoint(checkpoint)
        self._client = client
        self._purpose = purpose or ""
        self._checkpoint = checkpoint
        self._yield_checkpoints = checkpoints
        self._max_backoff = max_backoff
        self._give_up_after = give_up_after
        saved = checkpoint.load() if checkpoint is not None else None
        # The last handled revision.
        self.revision = saved if saved is not None else max(0, start_revision - 1)
        self._channel = None
        self._closed = False
        self._idle_timeout = idle_timeout
        self._last_message = time.monotonic()
        self._stalled = False
        self._in_caller = False
        self._iter = self._run()
        if idle_timeout is not None:
            threading.Thread(target=self._watchdog, name="consent-watch-watchdog",
                             daemon=True).start()

    def _watchdog(self):
        while not self._closed:
            time.sleep(min(1.0, self._idle_timeout / 4))
            channel = self._channel
            # Only the server's silence counts, not the time the caller
            # spends handling an event.
            if (channel is not None and not self._in_caller and
                    time.monotonic() - self._last_message > self._idle_timeout):
                self._stalled = True
                self._last_message = time.monotonic()
                channel.close()  # ends the stream whatever state it is in

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iter)

    def close(self):
        """Stops following: cancels the stream. From another thread too,
        where the iteration then ends (StopIteration)."""
        self._closed = True
        channel = self._channel
        if channel is not None:
            channel.close()
        try:
            self._iter.close()
        except ValueError:  # running on another thread: it sees _closed
            pass

    def _handled(self, revision):
        if revision <= self.revision:
            return
        self.revision = revision
        if self._checkpoint is not None:
            self._checkpoint.save(revision)

    def _run(self):
        try:
            yield from self._follow()
        finally:
            self._closed = True  # the watchdog stops too

    def _follow(self):
        failures = 0
        last_answer = time.monotonic()
        while not self._closed:
            # A channel of its own per connection: closing it ends the
            # stream in any state (a stream left waiting on a channel that
            # was reconnecting to a restarted server could otherwise hang).
            channel = self._client.new_channel()
            self._channel = channel
            registry = registry_pb2_grpc.ConsentRegistryStub(channel)
            request = registry_pb2.WatchChangesRequest(start_revision=self.revision + 1,
                                                       purpose=self._purpose)
            self._last_message = time.monotonic()
            call = registry.WatchChanges(request)
            try:
                for message in call:
                    failures = 0
                    last_answer = self._last_message = time.monotonic()
                    if message.HasField("event"):
                        event = message.event
                        if event.revision <= self.revision:
                            continue  # already handled (never expected)
                        self._in_caller = True
                        yield event
                        self._in_caller = False
                        self._last_message = time.monotonic()
                        self._handled(event.revision)
                    else:
                        # Nothing to handle: saved before it is yielded.
                        self._handled(message.checkpoint.revision)
                        if self._yield_checkpoints:
                            self._in_caller = True
                            yield message.checkpoint
                            self._in_caller = False
                            self._last_message = time.monotonic()
                raise _errors.Unavailable("the server ended the change feed")
            except (grpc.RpcError, _errors.Unavailable) as e:
                if self._closed:
                    return
                error = e if isinstance(e, _errors.ConsentError) else _errors.from_rpc_error(e)
                if self._stalled:  # cancelled by the watchdog: open it again
                    self._stalled = False
                    error = _errors.Unavailable("the change feed was silent for %s s" %
                                                self._idle_timeout)
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise error from None
                if (self._give_up_after is not None and
                        time.monotonic() - last_answer > self._give_up_after):
                    raise error from None
                failures += 1
                time.sleep(min(self._max_backoff, 0.1 * 2 ** min(failures - 1, 10)))
            finally:
                self._channel = None
                channel.close()
