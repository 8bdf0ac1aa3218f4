"""The audit log: who called which mutating method, when, with which request id, and
how it ended. Each line carries a hash chained to the previous one, so an edited,
removed or inserted line is detected. Tokens and secrets are never written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import deque
from json.encoder import encode_basestring_ascii as _quoted  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

log = logging.getLogger("allocd.audit")

GENESIS = "0" * 32
MEMORY_ENTRIES = 10_000
#: Entries that may wait in memory for a disk that refuses them; past it they are dropped
#: (and counted, and logged): the chain on disk stays whole, ending where it could.
MAX_WAITING = 100_000
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
        self._file: int | None = None
        # Lines made but not yet written (the disk refused them): written, in order, ahead
        # of the next entry. The chain runs on in memory meanwhile.
        self._pending: list[bytes] = []
        self.dropped = 0  # entries past MAX_WAITING while the disk refused them
        self._unsynced = False  # lines written since the file was last synced
        if path is not None and path.exists():
            _cut_torn_line(path)
            lines = path.read_text().splitlines()
            if lines:
                last = json.loads(lines[-1])
                self.count, self.last_hash = int(last["n"]), str(last["hash"])

    def record(self, time_ms: int, principal: str, method: str, request_id: str,
               outcome: str) -> None:
        """Add an entry. Never raises for the disk: the call it records is done (its change
        durable), and its answer must not become an error because the audit file could not
        take a line; the line waits for the next entry that can be written."""
        if self.path is not None and len(self._pending) >= MAX_WAITING:
            # (A disk refusing writes for this long: memory is not to go with it. Dropped
            # before it is chained, so the chain on disk stays whole.)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("the audit log cannot be written: %d entries waiting, %d dropped",
                          len(self._pending), self.dropped)
            self._write_pending()  # (the disk may have room again)
            return
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
        # The line is the body with the hash put first, as sorted keys put it: the
        # entry is encoded once.
        self._pending.append(f'{{"hash":"{digest}",{body[1:]}\n'.encode())
        self._write_pending()

    def _write_pending(self) -> None:
        assert self.path is not None
        start = -1
        try:
            if self._file is None:  # kept open: one write a call, not an open and a close
                self._file = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                     0o640)
            start = os.lseek(self._file, 0, os.SEEK_END)
            view = memoryview(b"".join(self._pending))
            while view:
                view = view[os.write(self._file, view):]
        except OSError as error:
            # What of the lines the disk took is cut off again, so that the file ends on
            # a whole line: they are written whole once it has room.
            if start >= 0 and self._file is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._file, start)
            if len(self._pending) == 1 or len(self._pending) % 1000 == 0:
                log.error("the audit log cannot be written (%s): %d entries wait in memory",
                          error, len(self._pending))
            return
        if len(self._pending) > 1:
            log.warning("the audit log is written again: %d waiting entries written",
                        len(self._pending))
        self._pending.clear()
        self._unsynced = True

    def sync(self) -> bool:
        """Put what was written on the disk (fdatasync), if anything was since the last
        time: written lines otherwise sit in the page cache, and a power cut took the last
        seconds of the record of calls whose changes the store had made durable. Runs in
        a thread (Engine.audit_sync_forever); never raises. Whether it synced."""
        fd = self._file
        if fd is None or not self._unsynced:
            return False
        self._unsynced = False  # (a line written meanwhile sets it again)
        try:
            os.fdatasync(fd)
        except OSError as error:
            self._unsynced = True
            log.error("the audit log cannot be synced (%s)", error)
            return False
        return True

    @property
    def waiting(self) -> int:
        """Entries not yet written to the file."""
        return len(self._pending)

    def close(self) -> None:
        if self._pending and self.path is not None:
            self._write_pending()  # (a last try; opens the file if it never was)
        if self._file is not None:
            self.sync()
            os.close(self._file)
            self._file = None


def _cut_torn_line(path: Path) -> None:
    """Cut a last line the disk took only part of (it filled up mid-write, or the machine
    stopped): every whole line stays, and the chain goes on from the last one."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if not size:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        keep = size
        while keep > 0:  # back to the last newline
            step = min(keep, 65536)
            fh.seek(keep - step)
            chunk = fh.read(step)
            found = chunk.rfind(b"\n")
            if found >= 0:
                keep = keep - step + found + 1
                break
            keep -= step
        fh.truncate(keep)
        log.warning("audit log %s: cut a torn last line (%d bytes)", path, size - keep)


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
