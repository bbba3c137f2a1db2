"""Compile sipim's sans-IO SIP modules with mypyc, in place (see sipim/sip/_accel.py).

    python scripts/build_accel.py          # build when a source changed, else say it is current
    python scripts/build_accel.py --force  # build anyway

Exit status 0 when the build is current (or was made), 1 when mypyc or the C
compiler failed.  Run through scripts/build-accel.sh, which first checks for
the tools.

The extension files are built in build/accel/ and then moved next to the
sources with os.replace (a new inode: a running server that has the old files
mapped keeps them intact); the build stamp is removed first and written last,
so an interpreter starting meanwhile sees "no build" rather than a mix.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIP = ROOT / "sipim" / "sip"
BUILD = ROOT / "build" / "accel"


def load_guard():
    # by path: importing the sipim.sip package would load the very modules we replace
    spec = importlib.util.spec_from_file_location("_sipim_accel_guard", SIP / "_accel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    guard = load_guard()
    force = "--force" in argv
    status = guard.check(SIP, environ={})
    if status.active and not force:
        print(f"build-accel: up to date ({status.reason})")
        return 0
    print(f"build-accel: compiling sipim/sip ({status.reason}) ...", flush=True)
    started = time.monotonic()

    from mypyc.build import mypycify  # noqa: PLC0415 - only when building
    from setuptools import setup  # noqa: PLC0415

    suffix = guard.ext_suffix()
    sources = {name: SIP / f"{name}.py" for name in guard.ACCEL_MODULES}
    hashes = {name: guard.file_sha256(path) for name, path in sources.items()}
    shutil.rmtree(BUILD / "lib", ignore_errors=True)
    os.chdir(ROOT)  # mypyc derives module names from the relative paths
    paths = [str(path.relative_to(ROOT)) for path in sources.values()]
    extensions = mypycify(
        [*paths, "--cache-dir", str(BUILD / "mypy-cache")],
        group_name=guard.GROUP,
        target_dir=str(BUILD / "c"),
        opt_level="3",
    )
    # setuptools would read the project's pyproject.toml from the working
    # directory: build from one that has none (every path above is absolute)
    BUILD.mkdir(parents=True, exist_ok=True)
    os.chdir(BUILD)
    try:
        setup(
            name="sipim-accel",
            packages=[],
            ext_modules=extensions,
            script_args=[
                "--quiet", "build_ext",
                "--build-lib", str(BUILD / "lib"),
                "--build-temp", str(BUILD / "obj"),
            ],
        )
    except SystemExit as exit_:  # setuptools reports compile errors this way
        if exit_.code not in (None, 0):
            print(f"build-accel: FAILED: {exit_.code}", file=sys.stderr)
            return 1

    if {name: guard.file_sha256(path) for name, path in sources.items()} != hashes:
        print("build-accel: FAILED: a source changed during the build; run it again", file=sys.stderr)
        return 1
    products = guard.built_files(BUILD / "lib" / "sipim" / "sip", suffix)
    missing = [path.name for path in products if not path.exists()]
    if missing:
        print(f"build-accel: FAILED: mypyc produced no {', '.join(missing)}", file=sys.stderr)
        return 1

    stamp_path = SIP / guard.BUILD_STAMP
    stamp_path.unlink(missing_ok=True)
    # a build for another interpreter would only be refused: drop it
    wanted = {product.name for product in products}
    for name in [*guard.ACCEL_MODULES, guard.GROUP.rpartition(".")[2] + "__mypyc"]:
        for old in SIP.glob(f"{name}.*.so"):
            if old.name not in wanted:
                old.unlink()
    built = {}
    for product in products:
        target = SIP / product.name
        os.replace(product, target)
        info = target.stat()
        built[target.name] = [info.st_size, info.st_mtime_ns, guard.file_sha256(target)]
    import mypy.version  # noqa: PLC0415

    stamp = {
        "format": guard.STAMP_FORMAT,
        "ext_suffix": suffix,
        "mypy": mypy.version.__version__,
        "sources": hashes,
        "built": built,
    }
    temporary = stamp_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(stamp, indent=1) + "\n")
    os.replace(temporary, stamp_path)
    final = guard.check(SIP, environ={})
    if not final.active:
        print(f"build-accel: FAILED: the new build does not check: {final.reason}", file=sys.stderr)
        return 1
    print(f"build-accel: done in {time.monotonic() - started:.0f}s ({final.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
