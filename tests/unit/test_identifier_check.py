"""An id is refused for a control character exactly when one of its characters is
whitespace other than the space, or not printable: every code point checked."""

from __future__ import annotations

import sys

from core.errors import InvalidArgument
from core.validation import check_identifier, is_identifier


def _refused(value: str) -> bool:
    try:
        check_identifier(value, "field")
    except InvalidArgument as error:
        assert "control characters" in error.message
        assert not is_identifier(value)
        return True
    assert is_identifier(value)
    return False


def test_every_code_point_is_refused_exactly_when_whitespace_or_unprintable():
    wrong = [hex(code) for code in range(sys.maxunicode + 1)
             if _refused(f"id{chr(code)}x")
             != ((chr(code).isspace() and chr(code) != " ") or not chr(code).isprintable())]
    assert not wrong


def test_is_identifier_accepts_what_check_identifier_accepts():
    for value in ("", "x", "a b", "x" * 128, "x" * 129, "tab\there", "é"):
        try:
            check_identifier(value, "field")
            accepted = True
        except InvalidArgument:
            accepted = False
        assert is_identifier(value) == accepted, value
