"""Architecture rules that the import contracts cannot state.

The layers, the independence of the roles and the absence of cycles are
import-linter contracts in pyproject.toml, checked by `make lint`.  What it
cannot see is which *names* cross a module boundary: a name with a leading
underscore is private to its module, so no other module of sipim imports it
(``from sipim.core.registrar import _contact_key``) or reaches for it through
the module (``base._next_flow_id``).  What two modules share gets a public name
in the module that owns it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sipim

PACKAGE_DIR = Path(sipim.__file__).parent
SOURCE_ROOT = PACKAGE_DIR.parent

# sipim/sip's shared grammar is being moved into a module of its own; until
# then uri.py uses these helpers of headers.py.
KNOWN = {
    ("sipim/sip/uri.py", "sipim.sip.headers._end_of_quoted"),
    ("sipim/sip/uri.py", "sipim.sip.headers._parse_simple_params"),
    ("sipim/sip/uri.py", "sipim.sip.headers._valid_ascii_hostname"),
}


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_sipim_module(name: str) -> bool:
    path = SOURCE_ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_from(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module a ``from ... import`` in ``package`` reads from."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        outer = dotted(node.value)
        return f"{outer}.{node.attr}" if outer else None
    return None


def private_names_used_across_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, "module.name") for each private name of another sipim module that the
    code of a module in ``package`` imports, or reads through a module it imported."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> the sipim module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sipim":
                    if alias.asname:
                        modules[alias.asname] = alias.name
                    else:
                        modules["sipim"] = "sipim"
        elif isinstance(node, ast.ImportFrom):
            origin = imported_from(node, package)
            if origin.split(".")[0] != "sipim":
                continue
            for alias in node.names:
                if is_sipim_module(f"{origin}.{alias.name}"):
                    # A module, not a name: private modules are import-linter's
                    # "private-modules" contract.
                    modules[alias.asname or alias.name] = f"{origin}.{alias.name}"
                elif is_private(alias.name):
                    found.append((node.lineno, f"{origin}.{alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            outer = dotted(node.value)
            if outer is None:
                continue
            head, _, rest = outer.partition(".")
            if head in modules:
                module = f"{modules[head]}.{rest}" if rest else modules[head]
                if is_sipim_module(module):
                    found.append((node.lineno, f"{module}.{node.attr}"))
    return found


def test_no_module_imports_a_private_name_of_another():
    offences = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(SOURCE_ROOT).as_posix()
        module = module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for line, name in private_names_used_across_modules(path.read_text(encoding="utf-8"), package):
            if (relative, name) not in KNOWN:
                offences.append(f"{relative}:{line}: {name}")
    assert not offences, "private names used outside their module:\n" + "\n".join(offences)


def test_the_check_finds_each_form_of_private_use():
    """The rule above is only as good as this walk: each way of reaching a private
    name of another module is found, and private names of one's own are not."""
    sample = (
        "import sipim.transport.base as base\n"
        "from sipim.transport import base as transport_base\n"
        "from sipim.core.registrar import answer_once_committed, _single_via\n"
        "from .lockout import _private_helper\n"
        "from sipim.sip import headers\n"
        "def _own(): ...\n"
        "_own()\n"
        "base._next_flow_id('tls')\n"
        "transport_base._FLOW_OWNER\n"
        "headers.Headers\n"
        "import sipim\n"
        "sipim.core.lockout._forget\n"
        "from os import _exit\n"
    )
    found = [name for _, name in private_names_used_across_modules(sample, "sipim.core")]
    assert sorted(found) == sorted([
        "sipim.core.registrar._single_via",
        "sipim.core.lockout._private_helper",
        "sipim.transport.base._next_flow_id",
        "sipim.transport.base._FLOW_OWNER",
        "sipim.core.lockout._forget",
    ])
