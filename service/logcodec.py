"""Bytes for the log and for snapshots: pickle framed with a length and a checksum.

Only allocd's own types (and the builtins and numpy arrays they are made of) may
be unpickled: a log or snapshot that names anything else is refused, so a
tampered store cannot run code in the server.

A frozen record (a dataclass with slots) written before fields were added to it loads
with those fields at their defaults (or what its own __setstate__ says they stood for):
left unset, as dataclasses' own __setstate__ leaves them, it could not be pickled again,
and every later snapshot holding it would fail.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from typing import Any

from core.model import restore_frozen

_HEADER = struct.Struct("<II")  # payload length, crc32 of payload
HEADER_SIZE = _HEADER.size
MAX_RECORD = 1 << 30

_ALLOWED_MODULES = ("core.", "service.store")
_ALLOWED_GLOBALS = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class CorruptRecord(Exception):
    """A record whose checksum or framing is wrong."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module.startswith(_ALLOWED_MODULES) and "." not in name:
            # Only classes that allocd itself defines there: not functions, not modules
            # (a dotted path through an imported module could reach anything).
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:
                _tolerate_older_states(found)
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in the store")


def _restore(self: object, state: Any) -> None:
    restore_frozen(self, state)


def _tolerate_older_states(cls: type) -> None:
    """Give a frozen record whose __setstate__ is dataclasses' own one that fills the
    fields an older state lacks (once a class: what it does for a full state is the
    same)."""
    setstate = cls.__dict__.get("__setstate__")
    if getattr(setstate, "__qualname__", "") == "_dataclass_setstate":
        setattr(cls, "__setstate__", _restore)  # noqa: B010


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=5)


def loads(data: bytes | memoryview) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


def load_record(data: bytes, offset: int = 0) -> tuple[Any, int]:
    """Check and unpickle the record at `offset` of `data` without copying its payload
    (snapshots are hundreds of megabytes). Returns (object, offset of the next record)."""
    if offset + HEADER_SIZE > len(data):
        raise CorruptRecord(f"truncated header at byte {offset}")
    length, crc = _HEADER.unpack_from(data, offset)
    start = offset + HEADER_SIZE
    if length > MAX_RECORD or start + length > len(data):
        raise CorruptRecord(f"truncated record at byte {offset}")
    if zlib.crc32(memoryview(data)[start:start + length]) != crc:
        raise CorruptRecord(f"checksum mismatch in the record at byte {offset}")
    stream = io.BytesIO(data)  # shares `data`'s buffer: no copy
    stream.seek(start)
    return _Unpickler(stream).load(), start + length


def record_follows(data: bytes, offset: int) -> int:
    """The offset of the first whole record (its checksum right, its payload a pickle)
    after `offset`, or -1 if none: a bad record with one after it is no unfinished
    write, whatever its length field says (a damaged length can point past the end)."""
    view = memoryview(data)
    for start in range(offset + 1, len(data) - HEADER_SIZE):
        length, crc = _HEADER.unpack_from(data, start)
        body = start + HEADER_SIZE
        if (0 < length <= MAX_RECORD and body + length <= len(data)
                and data[body] == 0x80  # (pickle's PROTO opcode: every record starts so)
                and zlib.crc32(view[body:body + length]) == crc):
            return start
    return -1


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
