"""StreamCheck and BatchCheck requests written by hand, byte for byte what
protobuf writes for the same message (tests/test_wire.py compares them):
building a protobuf message item by item costs about 2.5 us an item in
Python, these bytes about 0.7 us. Responses are parsed by protobuf."""
import datetime

from google.protobuf import timestamp_pb2

from ._proto.consent.v1 import registry_pb2, types_pb2

_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_BYTE = [bytes([i]) for i in range(128)]

# Tags: (field number << 3) | wire type; every field number here is below
# 16, so each tag is one byte.
_F = registry_pb2.StreamCheckRequest
_I = types_pb2.CheckItem
_C = types_pb2.Content
_T_LEN = 2
_T_VARINT = 0


def _tag(number, wire_type):
    return _ONE_BYTE[number << 3 | wire_type]


_REQ_PURPOSE = _tag(_F.PURPOSE_FIELD_NUMBER, _T_LEN)
_REQ_ITEMS = _tag(_F.ITEMS_FIELD_NUMBER, _T_LEN)
_REQ_AS_OF = _tag(_F.AS_OF_FIELD_NUMBER, _T_LEN)
_REQ_MIN_REVISION = _tag(_F.MIN_REVISION_FIELD_NUMBER, _T_VARINT)
_ITEM_USER = _tag(_I.USER_ID_FIELD_NUMBER, _T_LEN)
_ITEM_CONTENT = _tag(_I.CONTENT_FIELD_NUMBER, _T_LEN)
_CONTENT_ID = _tag(_C.CONTENT_ID_FIELD_NUMBER, _T_LEN)
_CONTENT_TYPE = _tag(_C.CONTENT_TYPE_FIELD_NUMBER, _T_VARINT)
_CONTENT_VISIBILITY = _tag(_C.VISIBILITY_FIELD_NUMBER, _T_VARINT)
_CONTENT_CREATE_TIME = _tag(_C.CREATE_TIME_FIELD_NUMBER, _T_LEN)
_CONTENT_SENSITIVE = _tag(_C.SENSITIVE_CATEGORIES_FIELD_NUMBER, _T_LEN)  # packed
_TS_SECONDS = _tag(1, _T_VARINT)
_TS_NANOS = _tag(2, _T_VARINT)
assert (_F.PURPOSE_FIELD_NUMBER < _F.ITEMS_FIELD_NUMBER < _F.AS_OF_FIELD_NUMBER <
        _F.MIN_REVISION_FIELD_NUMBER), "messages are written in protobuf's field order"
assert registry_pb2.BatchCheckRequest.DESCRIPTOR.fields_by_number.keys() == \
    _F.DESCRIPTOR.fields_by_number.keys(), "BatchCheck's request is encoded the same way"


def varint(value):
    """protobuf's varint of a non-negative int (negative: as 64-bit)."""
    if value < 0:
        value += 1 << 64
    if value < 128:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length(n):
    return _ONE_BYTE[n] if n < 128 else varint(n)


def _enum_values(enum, prefix):
    values = {}
    for name, number in enum.items():
        if number == 0:
            continue
        values[name] = number
        values[name[len(prefix):]] = number
        values[name[len(prefix):].lower()] = number
    return values


CONTENT_TYPES = _enum_values(types_pb2.ContentType, "CONTENT_TYPE_")
VISIBILITIES = _enum_values(types_pb2.Visibility, "VISIBILITY_")
SENSITIVE_CATEGORIES = _enum_values(types_pb2.SensitiveCategory, "SENSITIVE_CATEGORY_")


class ItemError(ValueError):
    """An item this package cannot encode; `field` names its bad field."""

    def __init__(self, field, problem):
        super().__init__("%s: %s" % (field, problem))
        self.field = field
        self.problem = problem


def _enum(value, values, field):
    if value is None or value == "" or value == 0:
        return 0  # unset: the server names the field as required
    if isinstance(value, int):
        return value
    number = values.get(value)
    if number is None:
        raise ItemError(field, "unknown value %r" % (value,))
    return number


def timestamp(value, field):
    """(seconds, nanos) of a datetime (naive means UTC), a number of
    seconds since the Unix epoch, an RFC 3339 string or a protobuf
    Timestamp; None for None."""
    if value is None:
        return None
    if isinstance(value, timestamp_pb2.Timestamp):
        return value.seconds, value.nanos
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        delta = value - _EPOCH
        seconds = delta.days * 86400 + delta.seconds
        return seconds, delta.microseconds * 1000
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = int(value // 1)
        if not isinstance(value, float):
            return seconds, 0
        nanos = int(round((value - seconds) * 1e9))
        return (seconds + 1, 0) if nanos >= 1_000_000_000 else (seconds, nanos)
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ItemError(field, "not an RFC 3339 time: %r" % value) from None
        return timestamp(parsed, field)
    raise ItemError(field, "not a time: %r" % (value,))


def _timestamp_bytes(seconds_nanos):
    seconds, nanos = seconds_nanos
    body = (_TS_SECONDS + varint(seconds) if seconds else b"") + \
        (_TS_NANOS + varint(nanos) if nanos else b"")
    return body


def encode_content(content_id, content_type, visibility, create_time, sensitive):
    """A Content message's bytes."""
    if not isinstance(content_id, str):
        raise ItemError("content.content_id", "must be a str, not %s" % type(content_id).__name__)
    cid = content_id.encode()
    out = [_CONTENT_ID, _length(len(cid)), cid] if cid else []
    ctype = _enum(content_type, CONTENT_TYPES, "content.content_type")
    if ctype:
        out += [_CONTENT_TYPE, varint(ctype)]
    vis = _enum(visibility, VISIBILITIES, "content.visibility")
    if vis:
        out += [_CONTENT_VISIBILITY, varint(vis)]
    ts = timestamp(create_time, "content.create_time")
    if ts is not None:
        body = _timestamp_bytes(ts)
        out += [_CONTENT_CREATE_TIME, _length(len(body)), body]
    if sensitive:
        if isinstance(sensitive, str):
            sensitive = [s for s in sensitive.replace(";", ",").split(",") if s]
        packed = b"".join(varint(_enum(s, SENSITIVE_CATEGORIES, "content.sensitive_categories"))
                          for s in sensitive)
        out += [_CONTENT_SENSITIVE, _length(len(packed)), packed]
    return b"".join(out)


class ItemEncoder:
    """Encodes items into CheckItem bytes, with the call's defaults for
    content_type and visibility. An item is an Item (or any tuple in its
    field order), a dict with Item's keys, or a types_pb2.CheckItem. Not
    thread safe."""

    def __init__(self, content_type=None, visibility=None):
        self._content_type = content_type
        self._visibility = visibility
        # Content bytes after the content id, by (type, visibility,
        # create_time, sensitive) when only the id varies.
        self._tails = {}

    def encode(self, item):
        if isinstance(item, tuple):
            user_id = item[0]
            content_id = item[1] if len(item) > 1 else ""
            content_type = item[2] if len(item) > 2 and item[2] is not None else self._content_type
            visibility = item[3] if len(item) > 3 and item[3] is not None else self._visibility
            create_time = item[4] if len(item) > 4 else None
            sensitive = item[5] if len(item) > 5 else ()
        elif isinstance(item, dict):
            user_id = item.get("user_id", "")
            content_id = item.get("content_id", "")
            content_type = item.get("content_type") or self._content_type
            visibility = item.get("visibility") or self._visibility
            create_time = item.get("create_time")
            sensitive = item.get("sensitive_categories") or item.get("sensitive") or ()
        elif isinstance(item, types_pb2.CheckItem):
            return item.SerializeToString()
        else:
            raise ItemError("item", "must be an Item, tuple, dict or CheckItem, not %s" %
                            type(item).__name__)
        if not isinstance(user_id, str):
            raise ItemError("user_id", "must be a str, not %s" % type(user_id).__name__)
        uid = user_id.encode()
        if not sensitive and isinstance(content_id, str):
            # The common case: the content bytes after the id are shared.
            key = (content_type, visibility, create_time)
            try:
                tail = self._tails.get(key)
            except TypeError:  # an unhashable create_time (a Timestamp)
                tail = key = None
            if tail is None:
                tail = encode_content("", content_type, visibility, create_time, ())
                if key is not None and len(self._tails) < 4096:
                    self._tails[key] = tail
            cid = content_id.encode()
            content = (_CONTENT_ID + _length(len(cid)) + cid + tail) if cid else tail
        else:
            content = encode_content(content_id, content_type, visibility, create_time, sensitive)
        head = (_ITEM_USER + _length(len(uid)) + uid) if uid else b""
        return head + _ITEM_CONTENT + _length(len(content)) + content


def encode_request(purpose, encoded_items, as_of=None, min_revision=0):
    """A StreamCheckRequest's (or BatchCheckRequest's) bytes."""
    p = purpose.encode()
    parts = [_REQ_PURPOSE, _length(len(p)), p] if p else []
    for item in encoded_items:
        parts += [_REQ_ITEMS, _length(len(item)), item]
    if as_of is not None:
        body = _timestamp_bytes(timestamp(as_of, "as_of"))
        parts += [_REQ_AS_OF, _length(len(body)), body]
    if min_revision:
        parts += [_REQ_MIN_REVISION, varint(min_revision)]
    return b"".join(parts)


_RESP = registry_pb2.StreamCheckResponse
_RESP_DECISIONS = _tag(_RESP.DECISIONS_FIELD_NUMBER, _T_LEN)[0]
_RESP_REVISION = _tag(_RESP.REVISION_FIELD_NUMBER, _T_VARINT)[0]
assert registry_pb2.BatchCheckResponse.DESCRIPTOR.fields_by_number.keys() == \
    _RESP.DESCRIPTOR.fields_by_number.keys(), "BatchCheck's response is read the same way"


def _read_varint(data, pos):
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def split_response(data):
    """A StreamCheckResponse's (or BatchCheckResponse's) bytes as (the
    bytes of each Decision, in order; the response's revision). Decisions
    repeat (the same reason, policy version and revision for most items),
    so the caller can map each one's bytes to a shared object instead of
    parsing every one. Anything this reader does not expect goes through
    protobuf instead."""
    decisions = []
    append = decisions.append
    revision = 0
    pos, end = 0, len(data)
    try:
        while pos < end:
            tag = data[pos]
            if tag == _RESP_DECISIONS:
                length = data[pos + 1]
                pos += 2
                if length >= 0x80:
                    length, pos = _read_varint(data, pos - 1)
                append(data[pos:pos + length])
                pos += length
            elif tag == _RESP_REVISION:
                revision, pos = _read_varint(data, pos + 1)
            else:
                raise ValueError("unexpected field")
        if pos != end:
            raise ValueError("truncated")
    except (IndexError, ValueError):
        message = _RESP.FromString(data)
        return [d.SerializeToString() for d in message.decisions], message.revision
    if revision >= 1 << 63:
        revision -= 1 << 64
    return decisions, revision
