"""The audit log: who called which mutating method, when, with which request id, and
how it ended. Each line carries a hash chained to the previous one, so an edited,
removed or inserted line is detected. Tokens and secrets are never written."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from json.encoder import encode_basestring_ascii as _quoted  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

GENESIS = "0" * 32
MEMORY_ENTRIES = 10_000
# What json.dumps(..., sort_keys=True, separators=(",", ":")) builds on every call, made
# once: the same text.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def canonical_body(n: int, time_ms: int, who: str, what: str, request_id: str,
                   outcome: str, prev: str) -> str:
    """_CANONICAL.encode of the entry without its hash, written out: the same text (keys
    in sorted order, strings quoted as json quotes them), without building a dict and
    walking it for every mutating call."""
    return (f'{{"n":{int(n)},"outcome":{_quoted(outcome)},"prev":{_quoted(prev)},'
            f'"request_id":{_quoted(request_id)},"time_ms":{int(time_ms)},'
            f'"what":{_quoted(what)},"who":{_quoted(who)}}}')


def _digest(entry: dict[str, Any]) -> str:
    return _digest_of(_CANONICAL.encode({k: v for k, v in entry.items() if k != "hash"}))


def _digest_of(body: str) -> str:
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


class AuditLog:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        # Without a file (the memory store): the newest entries, in memory.
        self.entries: deque[dict[str, Any]] = deque(maxlen=MEMORY_ENTRIES)
        self.count = 0
        self.last_hash = GENESIS
        self._file: Any = None
        if path is not None and path.exists():
            lines = path.read_text().splitlines()
            if lines:
                last = json.loads(lines[-1])
                self.count, self.last_hash = int(last["n"]), str(last["hash"])

    def record(self, time_ms: int, principal: str, method: str, request_id: str,
               outcome: str) -> None:
        n = self.count + 1
        body = canonical_body(n, time_ms, principal, method, request_id, outcome,
                              self.last_hash)
        digest = _digest_of(body)
        self.count = n
        if self.path is None:
            self.entries.append({"n": n, "time_ms": time_ms, "who": principal,
                                 "what": method, "request_id": request_id,
                                 "outcome": outcome, "prev": self.last_hash, "hash": digest})
            self.last_hash = digest
            return
        self.last_hash = digest
        if self._file is None:  # kept open: one write a call, not an open and a close
            self._file = self.path.open("a", buffering=1)
        # The line is the body with the hash put first, as sorted keys put it: the
        # entry is encoded once.
        self._file.write(f'{{"hash":"{digest}",{body[1:]}\n')

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def verify_lines(lines: list[str]) -> tuple[bool, int]:
    """(intact, the first line number that is not; 0 if none)."""
    previous = GENESIS
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            return False, number
        if entry.get("prev") != previous or entry.get("hash") != _digest(entry) or \
                entry.get("n") != number:
            return False, number
        previous = entry["hash"]
    return True, 0
