"""Compile the order path's core modules to C extensions with mypyc.

    python scripts/compile_core.py [--clean]

The modules below are the ones every allocation runs through (validate, decide,
write events, apply them, count KPIs). mypyc compiles their type-annotated Python
as it is: the same source is the interpreted reference. The extensions are built
in place (core/<module>.cpython-*.so, next to the sources, plus one shared library
for the group) and `core/_compiled.json` records the hash of each source they were
built from. `core/__init__.py` uses them only while every source still matches its
hash: after an edit the core runs interpreted until this script runs again (`make`
does that), and ALLOCD_INTERPRETED=1 runs it interpreted on purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from mypyc.build import mypycify
from setuptools import setup

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"
MANIFEST = CORE / "_compiled.json"
GROUP = "core.compiled"  # the shared library: core/compiled__mypyc.*.so

MODULES = (
    "allocation", "decisions", "kpis", "ledger", "network", "operations", "order_ops",
    "orders", "plan", "validation",
)


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean() -> None:
    """Remove every extension under core/ (mypyc's are the only ones) and the manifest."""
    for path in CORE.glob("*.so"):
        path.unlink()
    MANIFEST.unlink(missing_ok=True)


def compile_core() -> None:
    clean()
    sources = [f"core/{name}.py" for name in MODULES]
    hashes = {name: source_hash(CORE / f"{name}.py") for name in MODULES}
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory(prefix="allocd-mypyc-") as temp:
        # mypyc writes its C sources under ./build; setuptools its objects in --build-temp.
        extensions = mypycify(sources, opt_level="3", group_name=GROUP, multi_file=True)
        for extension in extensions:  # (the group's headers go under build/core)
            extension.include_dirs.append(str(Path("build") / "core"))
        setup(name="allocd-core-compiled", ext_modules=extensions,
              script_args=["--quiet", "build_ext", "--inplace", "--parallel", "2",
                           "--build-temp", temp])
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    missing = [name for name in MODULES if not list(CORE.glob(f"{name}.*.so"))]
    if missing:
        raise SystemExit(f"mypyc built no extension for {', '.join(missing)}")
    # Written last: a build that failed half-way leaves no manifest, so nothing is used.
    MANIFEST.write_text(json.dumps({"modules": hashes}, indent=1, sort_keys=True) + "\n")
    print(f"compiled {len(MODULES)} core modules: {', '.join(MODULES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true",
                        help="remove the compiled modules (the core then runs interpreted)")
    args = parser.parse_args()
    if args.clean:
        clean()
        return
    compile_core()


if __name__ == "__main__":
    sys.exit(main())
