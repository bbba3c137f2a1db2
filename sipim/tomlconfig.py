"""Settings dataclasses filled from TOML files: the one loader that the server's
``Config`` (sipim/config.py) and the client's ``ClientConfig`` (sipim/client/config.py)
share.  It imports nothing of sipim, so either side may use it.

Keys are the dataclass's field names (``-`` may stand for ``_``); TOML tables only
group keys for readability, their names are not part of the key.  Values are
converted to the field's declared type; anything wrong is a ``ConfigError`` whose
message is meant for the operator.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import ClassVar


class ConfigError(ValueError):
    """A configuration value is wrong; the message is meant for the operator."""


class TomlSettings:
    """Mixin for a (non-frozen) dataclass of settings: ``apply`` and ``load_toml``."""

    # How an unknown key is named in the error ("unknown setting 'x'").
    SETTING_KIND: ClassVar[str] = "setting"

    def apply(self, values: dict[str, object], origin: str) -> None:
        """Set fields from a flat mapping, converting to each field's type."""
        by_name = {f.name: f for f in dataclasses.fields(self)}  # type: ignore[arg-type]  # the subclass is one
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in by_name:
                raise ConfigError(f"{origin}: unknown {self.SETTING_KIND} {key!r}")
            try:
                setattr(self, name, _convert(value, getattr(self, name), by_name[name]))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{origin}: bad value for {key!r}: {exc}") from None

    def load_toml(self, path: Path) -> None:
        self.apply(read_toml(path), str(path))


def read_toml(path: Path) -> dict[str, object]:
    """The keys of a TOML file, its tables flattened."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return _flatten(document)


def _flatten(document: dict[str, object]) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value))
        else:
            flat[key] = value
    return flat


def _convert(value: object, current: object, spec: dataclasses.Field[object]) -> object:
    # The annotations are strings (from __future__ import annotations): read them as such.
    type_name = str(spec.type)
    if "Path" in type_name:
        return None if value is None else Path(str(value))
    if "tuple" in type_name:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError("expected a list")
        return tuple(str(v) for v in value)
    if isinstance(current, bool) or type_name == "bool":
        if isinstance(value, bool):
            return value
        raise TypeError("expected true or false")
    if type_name == "int":
        if isinstance(value, bool):
            raise TypeError("expected an integer")
        return int(value)  # type: ignore[call-overload]
    if type_name == "float":
        return float(value)  # type: ignore[arg-type]
    if value is None:
        return None
    return str(value)
