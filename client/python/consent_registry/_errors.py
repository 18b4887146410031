"""Typed exceptions for consentd's errors, carrying the google.rpc details
the server attaches (BadRequest naming each bad field, PreconditionFailure,
ErrorInfo...)."""
import grpc

from ._proto.google.rpc import error_details_pb2, status_pb2

_DETAIL_TYPES = {
    "type.googleapis.com/google.rpc." + name: getattr(error_details_pb2, name)
    for name in dir(error_details_pb2)
    if isinstance(getattr(error_details_pb2, name), type)
    and hasattr(getattr(error_details_pb2, name), "DESCRIPTOR")
}


class ConsentError(Exception):
    """An error from consentd or the channel to it.

    code: the grpc.StatusCode; message: the server's message; details: the
    google.rpc detail messages (BadRequest, PreconditionFailure, ...),
    unpacked where this package knows their type. Never means "allowed".
    """

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message, code=None, details=()):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = list(details)

    @property
    def field_violations(self):
        """The BadRequest's violations as [(field, description)]."""
        out = []
        for detail in self.details:
            if isinstance(detail, error_details_pb2.BadRequest):
                out.extend((v.field, v.description) for v in detail.field_violations)
        return out

    @property
    def retryable(self):
        """True when the same call may succeed later (the server was
        unreachable, draining or overloaded, or the deadline passed)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             grpc.StatusCode.DEADLINE_EXCEEDED)

    def __str__(self):
        return "%s: %s" % (self.code.name, self.message)


class InvalidArgument(ConsentError):
    """The request (or, in a batch, one item) is invalid: field_violations
    names each bad field."""
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ConsentError):
    """E.g. min_revision ahead of the registry, or a write to a deleted
    subject."""
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ConsentError):
    """A stale expected_revision."""
    code = grpc.StatusCode.ABORTED


class NotFound(ConsentError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ConsentError):
    code = grpc.StatusCode.ALREADY_EXISTS


class OutOfRange(ConsentError):
    """as_of before the registry's first policy."""
    code = grpc.StatusCode.OUT_OF_RANGE


class Unauthenticated(ConsentError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ConsentError):
    """The caller's role does not allow the call."""
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(ConsentError):
    """The server could not be reached, or is shutting down (retries were
    spent)."""
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ConsentError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(ConsentError):
    """An admission limit (too many streams, a full queue) or a message over
    the size limit."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Cancelled(ConsentError):
    code = grpc.StatusCode.CANCELLED


_BY_CODE = {cls.code: cls for cls in (
    InvalidArgument, FailedPrecondition, Aborted, NotFound, AlreadyExists, OutOfRange,
    Unauthenticated, PermissionDenied, Unavailable, DeadlineExceeded, ResourceExhausted,
    Cancelled)}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _unpack(any_details):
    out = []
    for any_msg in any_details:
        cls = _DETAIL_TYPES.get(any_msg.type_url)
        if cls is None:
            out.append(any_msg)
            continue
        detail = cls()
        detail.ParseFromString(any_msg.value)
        out.append(detail)
    return out


def from_status(status):
    """A google.rpc.Status (a batch item's Decision.error) as a ConsentError."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    if code == grpc.StatusCode.OK:
        code = grpc.StatusCode.INVALID_ARGUMENT  # never read an error as success
    return _BY_CODE.get(code, ConsentError)(status.message, code, _unpack(status.details))


def from_rpc_error(error):
    """A grpc.RpcError as a ConsentError, with the details of the
    grpc-status-details-bin trailer."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    details = []
    for key, value in (error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            details = _unpack(status.details)
    return _BY_CODE.get(code, ConsentError)(message or "", code, details)
