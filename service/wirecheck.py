"""The edge's field check on the wire bytes, compiled: one pass over a request's bytes
finds whether any field holds a value the edge refuses (a control character or an
oversize string, NaN or infinity, an undefined enum value).

`service.edge.invalid_field` reads every field through the message objects, a few
microseconds an order; this reads the bytes the request arrived as, a few nanoseconds
a byte. It only answers clean or not: a request it flags is walked again by
`invalid_field`, which names the field. Clean here means clean there: every value
the message holds is in the bytes (a field repeated on the wire, of which the message
keeps the last, is checked every time, which can only flag more).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import duration_pb2
from google.protobuf.descriptor import FieldDescriptor
from numba import njit

SKIP, MESSAGE, STRING, DOUBLE, FLOAT, ENUM = range(6)
CLEAN, FLAGGED = 0, 1
MAX_DEPTH = 100  # protobuf's own nesting limit


@dataclass(frozen=True, slots=True)
class Schema:
    """Every message type reachable from one request type, as tables the kernel reads:
    `kind[t, number]` says how field `number` of type t is checked, `arg[t, number]` is
    the nested type (MESSAGE) or the enum (ENUM), whose defined values are
    `enum_values[enum_start[e]:enum_start[e + 1]]`."""

    kind: np.ndarray  # int8 [types, max field number + 1]
    arg: np.ndarray  # int32, same shape
    enum_start: np.ndarray  # int64 [enums + 1]
    enum_values: np.ndarray  # int64


def _kind_of(field: FieldDescriptor) -> int:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return MESSAGE
    if kind == FieldDescriptor.TYPE_STRING:
        return STRING
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return DOUBLE
    if kind == FieldDescriptor.TYPE_FLOAT:
        return FLOAT
    if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return ENUM
    return SKIP  # integers, booleans, bytes: nothing to refuse


def compile_schema(root: Any) -> Schema:
    types: dict[Any, int] = {root: 0}
    order: list[Any] = [root]
    enums: dict[Any, int] = {}
    enum_lists: list[list[int]] = []
    rows: list[list[tuple[int, int, int]]] = []
    i = 0
    while i < len(order):
        row = []
        for field in order[i].fields:
            kind = _kind_of(field)
            if kind == SKIP:
                continue
            arg = 0
            if kind == MESSAGE:
                sub = field.message_type
                if sub not in types:
                    types[sub] = len(order)
                    order.append(sub)
                arg = types[sub]
            elif kind == ENUM:
                if field.enum_type not in enums:
                    enums[field.enum_type] = len(enum_lists)
                    enum_lists.append(sorted(field.enum_type.values_by_number))
                arg = enums[field.enum_type]
            row.append((field.number, kind, arg))
        rows.append(row)
        i += 1
    width = 1 + max((number for row in rows for number, _, _ in row), default=0)
    kind_table = np.zeros((len(order), width), np.int8)
    arg_table = np.zeros((len(order), width), np.int32)
    for t, row in enumerate(rows):
        for number, kind, arg in row:
            kind_table[t, number] = kind
            arg_table[t, number] = arg
    starts = np.zeros(len(enum_lists) + 1, np.int64)
    for e, values in enumerate(enum_lists):
        starts[e + 1] = starts[e] + len(values)
    flat = np.array([v for values in enum_lists for v in values], np.int64)
    return Schema(kind_table, arg_table, starts, flat)


@njit(cache=True, nogil=True, inline="always")
def _varint(buf, pos, end):  # type: ignore[no-untyped-def]
    """(value, next position); position -1 when the bytes end inside it."""
    value = np.uint64(0)
    shift = np.uint64(0)
    while pos < end:
        b = buf[pos]
        pos += 1
        value |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += np.uint64(7)
        if shift >= np.uint64(70):
            return value, -1
    return value, -1


@njit(cache=True, nogil=True, inline="always")
def _enum_defined(value, e, enum_start, enum_values):  # type: ignore[no-untyped-def]
    # An enum is an int32 on the wire as a sign-extended varint: keep the low 32 bits.
    v = np.int64(value & np.uint64(0xFFFFFFFF))
    if v >= 0x80000000:
        v -= 0x100000000
    for k in range(enum_start[e], enum_start[e + 1]):  # noqa: SIM110 (a kernel: a loop)
        if enum_values[k] == v:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _not_finite(buf, p, size):  # type: ignore[no-untyped-def]
    """Whether the little-endian double (size 8) or float (4) at p is NaN or infinite:
    its exponent bits (11 or 8) are all ones."""
    if size == 8:
        return (buf[p + 7] & 0x7F) == 0x7F and (buf[p + 6] & 0xF0) == 0xF0
    return (buf[p + 3] & 0x7F) == 0x7F and (buf[p + 2] & 0x80) == 0x80


@njit(cache=True, nogil=True)
def scan(buf, kind, arg, enum_start, enum_values, max_string):  # type: ignore[no-untyped-def]
    """FLAGGED if a field of the message in `buf` (type 0 of the tables) may hold a value
    the edge refuses, or the bytes do not walk as a message; CLEAN otherwise."""
    width = kind.shape[1]
    stack_end = np.empty(MAX_DEPTH + 1, np.int64)
    stack_type = np.empty(MAX_DEPTH + 1, np.int64)
    depth = 0
    t = 0
    pos = 0
    end = len(buf)
    while True:
        if pos >= end:
            if pos > end:
                return FLAGGED
            if depth == 0:
                return CLEAN
            depth -= 1
            end = stack_end[depth]
            t = stack_type[depth]
            continue
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return FLAGGED
        number = tag >> np.uint64(3)
        wire = tag & np.uint64(7)
        k = kind[t, number] if number < np.uint64(width) else SKIP
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            if pos < 0:
                return FLAGGED
            if k == ENUM and not _enum_defined(value, arg[t, number], enum_start, enum_values):
                return FLAGGED
        elif wire == 1 or wire == 5:  # noqa: PLR1714 (64 or 32 bits: a double or a float)
            size = 8 if wire == 1 else 4
            if pos + size > end:
                return FLAGGED
            if k == (DOUBLE if size == 8 else FLOAT) and _not_finite(buf, pos, size):
                return FLAGGED
            pos += size
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos < 0 or length > np.uint64(end - pos):
                return FLAGGED
            stop = pos + np.int64(length)
            if k == MESSAGE:
                if depth >= MAX_DEPTH:
                    return FLAGGED
                stack_end[depth] = end
                stack_type[depth] = t
                depth += 1
                t = arg[t, number]
                end = stop
                continue
            if k == STRING:
                # UTF-8 puts a control character in a byte of its own (every byte of a
                # longer character is 0x80 or above), so the bytes show it.
                chars = 0
                for j in range(pos, stop):
                    b = buf[j]
                    if b < 0x20:
                        if b != 0x09 and b != 0x0A and b != 0x0D:  # noqa: PLR1714
                            return FLAGGED
                    elif b == 0x7F:
                        return FLAGGED
                    if (b & 0xC0) != 0x80:
                        chars += 1
                if chars > max_string:
                    return FLAGGED
            elif k == ENUM:  # packed
                p = pos
                while p < stop:
                    value, p = _varint(buf, p, stop)
                    if p < 0 or not _enum_defined(value, arg[t, number], enum_start,
                                                  enum_values):
                        return FLAGGED
            elif k == DOUBLE or k == FLOAT:  # noqa: PLR1714, SIM109 (packed)
                size = 8 if k == DOUBLE else 4
                if (stop - pos) % size:
                    return FLAGGED
                for p in range(pos, stop, size):
                    if _not_finite(buf, p, size):
                        return FLAGGED
            pos = stop
        else:  # groups (proto2 only) and wire types that do not exist
            return FLAGGED


_SCHEMAS: dict[Any, Schema] = {}


def schema_of(descriptor: Any) -> Schema:
    schema = _SCHEMAS.get(descriptor)
    if schema is None:
        schema = _SCHEMAS[descriptor] = compile_schema(descriptor)
    return schema


def may_be_refused(raw: bytes, descriptor: Any, max_string: int) -> bool:
    """Whether the message of this type serialized as `raw` may carry a refused value
    (a string longer than `max_string` characters is one)."""
    if not raw:
        return False
    s = schema_of(descriptor)
    return bool(scan(np.frombuffer(raw, np.uint8), s.kind, s.arg, s.enum_start,
                     s.enum_values, max_string))



def warm() -> None:
    """Compile the scan (or load it from the cache) before the first request waits on it."""
    may_be_refused(b"\x08\x01", duration_pb2.Duration.DESCRIPTOR, 1)
