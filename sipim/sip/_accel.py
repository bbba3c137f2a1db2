"""Optional mypyc build of the sans-IO message layer, and the guard that keeps
a stale build from shadowing the source.

``scripts/build-accel.sh`` (``make accel``; ``make run`` and ``make test`` call
it) compiles ``ACCEL_MODULES`` with mypyc into extension modules next to their
``.py`` files (``parser.cpython-311-x86_64-linux-gnu.so``, ... plus the shared
library ``_native__mypyc...so``; all gitignored) and writes ``BUILD_STAMP``: the
SHA-256 of every source it compiled and of every file it produced.  The
Python sources stay the source of truth and run unchanged without the build.

Python's import system prefers an extension module to a ``.py`` of the same
name, so a build left behind by an edit, a ``git checkout`` or a copied tree
would silently run old code.  ``sipim/sip/__init__.py`` therefore calls
``install_guard()`` before importing any of these modules: unless the stamp
matches the sources and the built files exactly, it puts a finder first on
``sys.meta_path`` that loads the ``.py`` files, and warns.  All or nothing: the
compiled modules call each other natively, so a mix of compiled and pure
modules would hold two different ``Headers`` classes.

``SIPIM_PURE=1`` asks for the pure-Python modules even when the build is
current (the test suite runs tests/sip that way too).

This module is imported by file path by the build script, so it must not
import anything from sipim.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

# Compiled together, in one group (cross-module calls are native C calls).
ACCEL_MODULES = ("grammar", "headers", "uri", "message", "parser", "digest")
PACKAGE = "sipim.sip"
GROUP = "sipim.sip._native"  # the shared library: _native__mypyc<EXT_SUFFIX>
HERE = Path(__file__).resolve().parent
BUILD_STAMP = "_accel_build.json"
STAMP_FORMAT = 1
PURE_ENV = "SIPIM_PURE"


def ext_suffix() -> str:
    return sysconfig.get_config_var("EXT_SUFFIX") or importlib.machinery.EXTENSION_SUFFIXES[0]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def built_files(directory: Path, suffix: str) -> list[Path]:
    """The extension files a build for this interpreter consists of."""
    names = [f"{name}{suffix}" for name in ACCEL_MODULES]
    names.append(f"{GROUP.rpartition('.')[2]}__mypyc{suffix}")
    return [directory / name for name in names]


def pure_requested(environ: Any = None) -> bool:
    value = (os.environ if environ is None else environ).get(PURE_ENV, "")
    return value not in ("", "0")


class Status:
    """What ``check`` decided: ``active`` (use the compiled modules) and why not."""

    def __init__(self, active: bool, reason: str, warn: bool = False) -> None:
        self.active = active
        self.reason = reason
        self.warn = warn  # a build is there but unusable: say so

    def __repr__(self) -> str:
        return f"Status(active={self.active!r}, reason={self.reason!r}, warn={self.warn!r})"


def check(directory: Path = HERE, environ: Any = None, suffix: str | None = None) -> Status:
    """May the compiled modules in ``directory`` be imported?

    Yes only when the stamp names this interpreter's extension suffix, every
    source hashes as it did when compiled, and every built file is the one
    the build wrote (same size and mtime, or else the same SHA-256: a copied
    tree keeps its build).
    """
    if pure_requested(environ):
        return Status(False, f"{PURE_ENV} is set")
    suffix = suffix or ext_suffix()
    files = built_files(directory, suffix)
    present = [path for path in files if path.exists()]
    stamp_path = directory / BUILD_STAMP
    if not stamp_path.exists():
        if present:
            return Status(False, f"{present[0].name} has no build stamp ({BUILD_STAMP})", warn=True)
        return Status(False, "not built (make accel)")
    try:
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("format") != STAMP_FORMAT:
            raise ValueError("unknown stamp format")
        if stamp["ext_suffix"] != suffix:
            if present:
                return Status(False, f"the build stamp is for {stamp['ext_suffix']}, not {suffix}", warn=True)
            return Status(False, f"built for another interpreter ({stamp['ext_suffix']})")
        for name in ACCEL_MODULES:
            source = directory / f"{name}.py"
            if file_sha256(source) != stamp["sources"][name]:
                return Status(False, f"{source.name} changed since the build (make accel)", warn=True)
        recorded = stamp["built"]
        if set(recorded) != {path.name for path in files}:
            raise ValueError("the stamp lists other files")
        for path in files:
            size, mtime_ns, digest = recorded[path.name]
            try:
                info = path.stat()
            except FileNotFoundError:
                return Status(False, f"{path.name} is missing (make accel)", warn=True)
            if (info.st_size, info.st_mtime_ns) != (size, mtime_ns) and file_sha256(path) != digest:
                return Status(False, f"{path.name} is not the file the build wrote (make accel)", warn=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        return Status(False, f"unreadable build stamp {BUILD_STAMP}: {error}", warn=True)
    return Status(True, f"mypyc build of {', '.join(ACCEL_MODULES)}")


class _PureFinder:
    """Finds ``sipim.sip.<module>`` as its ``.py`` file, never the extension."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.names = {f"{PACKAGE}.{name}": name for name in ACCEL_MODULES}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> Any:
        name = self.names.get(fullname)
        if name is None:
            return None
        return importlib.util.spec_from_file_location(fullname, self.directory / f"{name}.py")

    def invalidate_caches(self) -> None:
        pass


_status: Status | None = None


def install_guard(directory: Path = HERE) -> Status:
    """Decide once per process; when the build may not be used, make sure the
    ``.py`` files are what gets imported."""
    global _status
    if _status is not None:
        return _status
    status = check(directory)
    if not status.active:
        if not any(isinstance(finder, _PureFinder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _PureFinder(directory))
        if status.warn:
            warnings.warn(f"sipim: compiled SIP modules not used: {status.reason}", RuntimeWarning, stacklevel=2)
    _status = status
    return status


def compiled_modules() -> list[str]:
    """The ``ACCEL_MODULES`` actually loaded from an extension module."""
    loaded = []
    for name in ACCEL_MODULES:
        module = sys.modules.get(f"{PACKAGE}.{name}")
        if module is not None and not str(getattr(module, "__file__", "")).endswith(".py"):
            loaded.append(name)
    return loaded


def summary() -> str:
    """One line for logs and ``sipim --version``."""
    status = _status if _status is not None else check()
    if not status.active:
        return f"SIP layer: pure Python ({status.reason})"
    loaded = [name for name in ACCEL_MODULES if f"{PACKAGE}.{name}" in sys.modules]
    pure = sorted(set(loaded) - set(compiled_modules()))
    if pure:  # cannot happen through install_guard; say it rather than hide it
        return f"SIP layer: compiled with mypyc, but {', '.join(pure)} loaded from source"
    return f"SIP layer: compiled with mypyc ({', '.join(ACCEL_MODULES)})"
