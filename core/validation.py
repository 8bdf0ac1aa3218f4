"""Input checks shared by every command handler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar

from core.errors import InvalidArgument, NotFound
from core.model import QTY_MAX, Bucket

MAX_ID_LENGTH: Final = 128

T = TypeVar("T")


def is_identifier(value: str) -> bool:
    """Whether check_identifier accepts `value` (without naming a field)."""
    return bool(value) and len(value) <= MAX_ID_LENGTH and value.isprintable()


def check_identifier(value: str, field_name: str) -> str:
    """Ids: required, at most MAX_ID_LENGTH characters, printable (no control characters)."""
    if not value:
        raise InvalidArgument(f"{field_name} is required", field_name)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{field_name} is longer than {MAX_ID_LENGTH}", field_name)
    # Whitespace other than the space is never printable, so a printable id has neither.
    if not value.isprintable():
        raise InvalidArgument(f"{field_name} contains control characters", field_name)
    return value



def existing(table: Mapping[str, T], key: str, field_name: str, noun: str) -> T:
    """The entry `key` names: a well-formed id (see check_identifier) that exists."""
    check_identifier(key, field_name)
    found = table.get(key)
    if found is None:
        raise NotFound(f"no {noun} {key!r}", field_name)
    return found


def check_line_ids(known: Sequence[str], lines: Sequence[tuple[str, int]], owner: str,
                   field: str = "lines") -> None:
    """Every (line_id, quantity) names a line of `owner` once."""
    seen: set[str] = set()
    for i, (line_id, _) in enumerate(lines):
        if line_id not in known:
            raise NotFound(f"{owner} has no line {line_id!r}", f"{field}[{i}].line_id")
        if line_id in seen:
            raise InvalidArgument(f"line {line_id!r} appears twice", f"{field}[{i}].line_id")
        seen.add(line_id)


def check_quantity(value: int, field_name: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field_name} must be an integer", field_name)
    low = 0 if allow_zero else 1
    if value < low or value > QTY_MAX:
        raise InvalidArgument(
            f"{field_name} must be between {low} and {QTY_MAX}, got {value}", field_name)
    return value


def check_lines(lines: Sequence[Any]) -> None:
    if not lines:
        raise InvalidArgument("lines must not be empty", "lines")


def check_bucket(value: Bucket, allowed: frozenset[Bucket], field_name: str) -> Bucket:
    if value not in allowed:
        names = ", ".join(sorted(b.name for b in allowed))
        raise InvalidArgument(f"{field_name} must be one of {names}", field_name)
    return value
