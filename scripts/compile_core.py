"""Compile the order path's modules to C extensions with mypyc.

    python scripts/compile_core.py [--clean]

The core modules below are the ones every allocation runs through (validate,
decide, write events, apply them, count KPIs); the service's read a batch's orders
from wire bytes and write each allocation's answer to them. mypyc compiles their
type-annotated Python as it is: the same source is the interpreted reference. The
extensions are built in place (<package>/<module>.cpython-*.so, next to the sources,
plus one shared library for each package) and `<package>/_compiled.json` records the hash of each
source they were built from. `core.use_build` (called by each package's
`__init__`) uses them only while every source still matches its hash: after an edit
the package runs interpreted until this script runs again (`make` does that), and
ALLOCD_INTERPRETED=1 runs both interpreted on purpose.
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

# Per package: the modules compiled. Each package is its own build (its own shared
# library, `<package>/compiled__mypyc.*.so`, and manifest, `<package>/_compiled.json`),
# so that one never calls into the other's compiled code: either may run interpreted
# while the other runs compiled.
PACKAGES = {
    "core": ("allocation", "decisions", "demand", "kpis", "ledger", "model", "network",
             "operations", "order_ops", "orders", "plan", "validation"),
    "service": ("allocation_wire", "order_wire"),
}


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean() -> None:
    """Remove every extension under the packages (mypyc's are the only ones) and their
    manifests."""
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.so"):
            path.unlink()
        (ROOT / package / "_compiled.json").unlink(missing_ok=True)


def _compile(package: str, modules: tuple[str, ...]) -> None:
    directory = ROOT / package
    sources = [f"{package}/{name}.py" for name in modules]
    hashes = {name: source_hash(directory / f"{name}.py") for name in modules}
    with tempfile.TemporaryDirectory(prefix="allocd-mypyc-") as temp:
        # mypyc writes its C sources under ./build; setuptools its objects in --build-temp.
        extensions = mypycify(sources, opt_level="3", group_name=f"{package}.compiled",
                              multi_file=True)
        for extension in extensions:  # (the group's headers go under build/<package>)
            extension.include_dirs.append(str(Path("build") / package))
        setup(name=f"allocd-{package}-compiled", ext_modules=extensions,
              script_args=["--quiet", "build_ext", "--inplace", "--parallel", "2",
                           "--build-temp", temp])
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    missing = [name for name in modules if not list(directory.glob(f"{name}.*.so"))]
    if missing:
        raise SystemExit(f"mypyc built no extension for {', '.join(missing)}")
    # Written last: a build that failed half-way leaves no manifest, so nothing is used.
    (directory / "_compiled.json").write_text(
        json.dumps({"modules": hashes}, indent=1, sort_keys=True) + "\n")
    print(f"compiled {len(modules)} {package} modules: {', '.join(modules)}")


def compile_core() -> None:
    clean()
    os.chdir(ROOT)
    for package, modules in PACKAGES.items():
        _compile(package, modules)


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
