"""allocd's domain core: catalogue, sharded inventory ledger and compiled kernels.

Pure: nothing here imports grpc, redis, asyncio or the service layer, and
nothing reads a clock; time is passed in as epoch milliseconds.

The modules of the order path may be compiled to C by mypyc
(scripts/compile_core.py, run by `make`). The compiled modules are used only when
every one of them was built from the source now on disk; otherwise (a source edited
since, or ALLOCD_INTERPRETED=1) all of them run interpreted from their source, so
that an edit is never shadowed by an older build. `COMPILED` says which it is.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent


def _compiled_modules() -> tuple[list[str], bool]:
    """The modules an extension exists for, and whether those extensions may be used: only
    when they are the build the manifest records, and every source still matches it."""
    built = {path.name.split(".", 1)[0] for path in _HERE.glob("*.so")} - {"compiled__mypyc"}
    try:
        manifest = json.loads((_HERE / "_compiled.json").read_text())
        hashes: dict[str, str] = manifest["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return sorted(built), False
    wanted = os.environ.get("ALLOCD_INTERPRETED", "").lower() not in ("1", "true", "yes")
    fresh = wanted and built == set(hashes) and all(
        hashlib.sha256((_HERE / f"{name}.py").read_bytes()).hexdigest() == digest
        for name, digest in hashes.items())
    return sorted(built | set(hashes)), fresh


class _FromSource(importlib.abc.MetaPathFinder):
    """Load these core modules from their .py source, not from a compiled extension
    next to it (which the default import would prefer)."""

    def __init__(self, names: list[str]) -> None:
        self.names = {f"{__name__}.{name}": name for name in names}

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        name = self.names.get(fullname)
        if name is None:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / f"{name}.py")


_names, COMPILED = _compiled_modules()
if _names and not COMPILED:
    sys.meta_path.insert(0, _FromSource(_names))
