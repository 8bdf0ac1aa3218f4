"""allocd's domain core: catalogue, sharded inventory ledger and compiled kernels.

Pure: nothing here imports grpc, redis, asyncio or the service layer, and
nothing reads a clock; time is passed in as epoch milliseconds.

The modules of the order path may be compiled to C by mypyc
(scripts/compile_core.py, run by `make`). The compiled modules are used only when
every one of them was built from the source now on disk; otherwise (a source edited
since, or ALLOCD_INTERPRETED=1) all of them run interpreted from their source, so
that an edit is never shadowed by an older build. `COMPILED` says which it is.
`use_build` applies the same rule to another package's compiled modules (the
service's own build).
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


def _compiled_modules(directory: Path) -> tuple[list[str], bool]:
    """The modules an extension exists for in `directory`, and whether those extensions
    may be used: only when they are the build the manifest records, and every source
    still matches it."""
    built = {path.name.split(".", 1)[0] for path in directory.glob("*.so")} - {
        "compiled__mypyc"}
    try:
        manifest = json.loads((directory / "_compiled.json").read_text())
        hashes: dict[str, str] = manifest["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return sorted(built), False
    wanted = os.environ.get("ALLOCD_INTERPRETED", "").lower() not in ("1", "true", "yes")
    fresh = wanted and built == set(hashes) and all(
        hashlib.sha256((directory / f"{name}.py").read_bytes()).hexdigest() == digest
        for name, digest in hashes.items())
    return sorted(built | set(hashes)), fresh


class _FromSource(importlib.abc.MetaPathFinder):
    """Load these modules of a package from their .py source, not from a compiled
    extension next to it (which the default import would prefer)."""

    def __init__(self, package: str, directory: Path, names: list[str]) -> None:
        self.directory = directory
        self.names = {f"{package}.{name}": name for name in names}

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        name = self.names.get(fullname)
        if name is None:
            return None
        return importlib.util.spec_from_file_location(fullname, self.directory / f"{name}.py")


def use_build(package: str, directory: Path) -> bool:
    """Whether `package`'s compiled modules (in `directory`) are used: called by the
    package's own __init__, before any of them is imported. When they are not, every
    one of them loads from its source from then on."""
    names, fresh = _compiled_modules(directory)
    if names and not fresh:
        sys.meta_path.insert(0, _FromSource(package, directory, names))
    return fresh


COMPILED = use_build(__name__, _HERE)
