"""Where the alert settings files are read from, and the check each passes at start.

The packaged files live in `alerts/data/` (detectors.toml, engine.toml, custody.toml and
standards/*.toml). An operator can point `landun run --config-dir DIR` at a directory holding
any of them under the same names (DIR/detectors.toml, DIR/standards/gb37488-2019-pool.toml...):
a file there replaces the packaged one of that name, and DIR/standards/ may add profiles.

A wrong key or a value of the wrong type fails at start with the file, the key and the reason
(`SettingsError`), never later on the first reading that needs it.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

# Settings dataclasses judged by `checked` reject keys they do not have.
STRICT = ConfigDict(extra="forbid")

T = TypeVar("T")

_config_dir: Path | None = None


class SettingsError(ValueError):
    """A settings file that cannot be used: which file, which key, why."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key or '(top level)'}: {reason}")
        self.file, self.key, self.reason = file, key, reason


def use_config_dir(path: str | Path | None) -> None:
    """Read settings files from `path` first (None: only the packaged ones)."""
    global _config_dir
    _config_dir = Path(path) if path is not None else None
    if _config_dir is not None and not _config_dir.is_dir():
        raise SettingsError(str(_config_dir), "", "not a directory")


def read_toml(name: str) -> tuple[str, dict[str, Any]]:
    """(where it came from, parsed document) of the settings file `name` ("engine.toml")."""
    if _config_dir is not None and (_config_dir / name).is_file():
        return _parse(str(_config_dir / name), (_config_dir / name).read_text("utf-8"))
    return _parse(f"alerts/data/{name}", _packaged(name).read_text("utf-8"))


def config_file(name: str) -> Path | None:
    """The config dir's file `name`, if it has one: for files with no packaged default, such
    as the operator's notify.toml."""
    if _config_dir is not None and (_config_dir / name).is_file():
        return _config_dir / name
    return None


def standards_texts() -> dict[str, tuple[str, str]]:
    """File name -> (where it came from, text) of every standards profile, the config dir's
    files replacing packaged ones of the same name."""
    out = {
        e.name: (f"alerts/data/standards/{e.name}", e.read_text("utf-8"))
        for e in _packaged("standards").iterdir()
        if e.name.endswith(".toml")
    }
    if _config_dir is not None and (_config_dir / "standards").is_dir():
        for path in sorted((_config_dir / "standards").glob("*.toml")):
            out[path.name] = (str(path), path.read_text("utf-8"))
    return out


def parse_toml(file: str, text: str) -> dict[str, Any]:
    return _parse(file, text)[1]


def checked(cls: type[T], data: Any, file: str, key: str = "") -> T:
    """`data` as a `cls` (a settings dataclass), or SettingsError naming the first bad key."""
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in (*([key] if key else []), *err["loc"]))
        unknown = err["type"] in ("unexpected_keyword_argument", "extra_forbidden")
        reason = "unknown key" if unknown else err["msg"]
        raise SettingsError(file, where, reason) from None


def check_keys(data: dict[str, Any], allowed: set[str], file: str, key: str = "") -> None:
    """Every key of the table `data` is one of `allowed`."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SettingsError(file, ".".join(filter(None, (key, unknown[0]))), "unknown key")


def check_like(data: Any, reference: Any, file: str, key: str = "") -> None:
    """`data` has the keys and value types of `reference` (the packaged file), table by table:
    for files whose every key is fixed."""
    if isinstance(reference, dict):
        if not isinstance(data, dict):
            raise SettingsError(file, key, "expected a table")
        check_keys(data, set(reference), file, key)
        for name, ref in reference.items():
            sub = ".".join(filter(None, (key, name)))
            if name not in data:
                raise SettingsError(file, sub, "missing")
            check_like(data[name], ref, file, sub)
    elif isinstance(reference, bool) or isinstance(data, bool):
        if type(data) is not type(reference):
            raise SettingsError(file, key, f"expected {type(reference).__name__}")
    elif isinstance(reference, int | float):
        if not isinstance(data, int | float):
            raise SettingsError(file, key, "expected a number")
    elif type(data) is not type(reference):
        raise SettingsError(file, key, f"expected {type(reference).__name__}")


def packaged_toml(name: str) -> dict[str, Any]:
    return tomllib.loads(_packaged(name).read_text("utf-8"))


def _packaged(name: str) -> Any:
    return resources.files("alerts").joinpath("data", name)


def _parse(file: str, text: str) -> tuple[str, dict[str, Any]]:
    try:
        return file, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(file, "", f"not valid TOML: {e}") from None
