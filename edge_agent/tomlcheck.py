"""Reading and checking TOML inputs: the mission, the scenario and the export spec share this.

:func:`read_toml` turns a file into a document or one :class:`InputFileError` subclass naming the
file and the fix (unreadable, not UTF-8, not TOML). :class:`Table` reads one table of it with
typed getters, each refusing a wrong value with a message that names the table, the key, what
was expected and what was found; :meth:`Table.done` then refuses keys nobody asked for (typos).
Each input passes its own error class (``MissionError``, ``ScenarioError``, ``ExportSpecError``),
a ``prefix`` (the scenario and the spec name their file in every message) and the page of
``docs/`` that documents it.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_agent.errors import InputFileError

_REQUIRED: Any = object()


def read_toml(
    path: str | Path, *, what: str, error: type[InputFileError], fix: str = "check the path"
) -> dict[str, Any]:
    """The parsed document of a TOML file; ``error`` naming ``what`` (e.g. "mission file") and the fix.

    ``fix`` is the advice when the file cannot be read at all.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {str(p)!r}: {exc.strerror}; {fix}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} {str(p)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8 TOML") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {str(p)!r} is not valid TOML: {exc}") from exc


def check_sections(
    data: Mapping[str, Any],
    sections: Sequence[str],
    *,
    error: type[InputFileError],
    prefix: str = "",
) -> None:
    """Refuse top-level tables other than ``sections`` (a typo), naming the ones there are."""
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise error(
            f"{prefix}unknown section(s) {', '.join(map(repr, unknown))}; "
            f"the sections are {', '.join(sections)} (a typo?)"
        )


def vector(value: Any, size: int, where: str, error: type[InputFileError]) -> tuple[float, ...]:
    """``value`` as ``size`` finite floats; ``error`` naming ``where`` otherwise."""
    if (
        not isinstance(value, list)
        or len(value) != size
        or any(isinstance(x, bool) or not isinstance(x, int | float) for x in value)
    ):
        raise error(f"{where} must be a list of {size} numbers, got {value!r}")
    out = tuple(float(x) for x in value)
    if not all(math.isfinite(x) for x in out):
        raise error(f"{where} must be finite, got {value!r}")
    return out


class Table:
    """One TOML table being read: typed getters, and a final check that every key was used."""

    def __init__(
        self,
        data: Any,
        where: str,
        *,
        error: type[InputFileError],
        prefix: str = "",
        docs: str = "docs/",
    ) -> None:
        self.error, self.prefix, self.docs = error, prefix, docs
        self.where = where
        if not isinstance(data, Mapping):
            raise self.err(f"must be a table, got {type(data).__name__}; write it as [{where}]")
        self.data = data
        self.used: set[str] = set()

    def err(self, message: str) -> InputFileError:
        """The input's error for ``message`` about this table: ``PREFIX[where] message``."""
        return self.error(f"{self.prefix}[{self.where}] {message}")

    def has(self, key: str) -> bool:
        """Whether the table gives ``key``."""
        return key in self.data

    def get(self, key: str, default: Any = _REQUIRED) -> Any:
        """The raw value of ``key`` (marked used); without a default a missing key is refused."""
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.err(f"is missing {key!r}; add it (see {self.docs})")
            return default
        return self.data[key]

    def number(
        self, key: str, default: float | None = None, *, gt: float | None = None, ge: float | None = None
    ) -> float:
        """A finite number (ints accepted, booleans not), optionally > ``gt`` or >= ``ge``."""
        value = self.get(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.err(f"{key} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.err(f"{key} must be finite, got {value!r}")
        if gt is not None and not value > gt:
            raise self.err(f"{key} must be > {gt:g}, got {value}")
        if ge is not None and not value >= ge:
            raise self.err(f"{key} must be >= {ge:g}, got {value}")
        return value

    def optional_number(self, key: str, *, gt: float | None = None) -> float | None:
        """A number if the key is given, else None."""
        return self.number(key, gt=gt) if key in self.data else None

    def string(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        """One of ``choices``."""
        value = self.get(key, _REQUIRED if default is None else default)
        if not isinstance(value, str) or value not in choices:
            raise self.err(f"{key} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def vector(self, key: str, size: int, default: Any = None) -> tuple[float, ...]:
        """A list of ``size`` finite numbers."""
        value = self.get(key, _REQUIRED if default is None else default)
        return vector(value, size, f"{self.prefix}[{self.where}] {key}", self.error)

    def numbers(self, key: str, default: Any = _REQUIRED) -> tuple[float, ...]:
        """A list of finite numbers of any length (the caller checks the length against its contract)."""
        value = self.get(key, default)
        if (
            not isinstance(value, list)
            or any(isinstance(x, bool) or not isinstance(x, int | float) for x in value)
            or not all(math.isfinite(float(x)) for x in value)
        ):
            raise self.err(f"{key} must be a list of finite numbers, got {value!r}")
        return tuple(float(x) for x in value)

    def integer(self, key: str, default: int | None = None, *, ge: int | None = None) -> int:
        """An integer (not a boolean, not a float), optionally >= ``ge``."""
        value = self.get(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.err(f"{key} must be an integer, got {value!r}")
        if ge is not None and value < ge:
            raise self.err(f"{key} must be >= {ge}, got {value}")
        return value

    def tables(self, key: str, default: Any = _REQUIRED) -> list[Table]:
        """An array of tables (``[[key]]``), each read as ``[key.i]``."""
        value = self.get(key, default)
        if not isinstance(value, list):
            raise self.err(f"{key} must be an array of tables: write each entry as [[{key}]]")
        return [
            Table(v, f"{key}.{i}", error=self.error, prefix=self.prefix, docs=self.docs)
            for i, v in enumerate(value)
        ]

    def vectors(self, key: str, size: int) -> tuple[tuple[float, ...], ...]:
        """A list of lists of ``size`` finite numbers."""
        value = self.get(key)
        if not isinstance(value, list):
            raise self.err(f"{key} must be a list of [{size} numbers], got {value!r}")
        return tuple(
            vector(v, size, f"{self.prefix}[{self.where}] {key}[{i}]", self.error)
            for i, v in enumerate(value)
        )

    def band(
        self, key: str, default: tuple[float, float] | None = None, *, ge: float | None = None
    ) -> tuple[float, float]:
        """[lo, hi] (two finite numbers, lo <= hi) or one number meaning [x, x]."""
        self.used.add(key)
        if key not in self.data:
            if default is None:
                raise self.err(f"needs {key} ([lo, hi] or one number); see {self.docs}")
            return default
        v = self.data[key]
        vals = [v, v] if isinstance(v, int | float) and not isinstance(v, bool) else v
        if (
            not isinstance(vals, list)
            or len(vals) != 2
            or any(
                isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) for x in vals
            )
        ):
            raise self.err(f"{key} must be [lo, hi] (two finite numbers) or one number, got {v!r}")
        a, b = float(vals[0]), float(vals[1])
        if a > b:
            raise self.err(f"{key} = [{a}, {b}] has lo > hi; write [{b}, {a}]")
        if ge is not None and a < ge:
            raise self.err(f"{key} = [{a}, {b}] must not go below {ge:g}")
        return a, b

    def table(self, key: str, default: Any = _REQUIRED) -> Table:
        """The sub-table ``key`` (``[where.key]``), read with the same error, prefix and docs."""
        return Table(
            self.get(key, default),
            f"{self.where}.{key}" if self.where else key,
            error=self.error,
            prefix=self.prefix,
            docs=self.docs,
        )

    def allow(self, keys: Sequence[str]) -> None:
        """Refuse now any key outside ``keys`` (before a missing-key error could hide the typo)."""
        unknown = sorted(set(self.data) - set(keys))
        if unknown:
            raise self.err(
                f"has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed here: {', '.join(sorted(keys))} (a typo?)"
            )

    def done(self) -> None:
        """Refuse keys that no getter asked for, naming those that are allowed here."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.err(
                f"has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed here: {', '.join(sorted(self.used))} (a typo?)"
            )


__all__ = ["Table", "check_sections", "read_toml", "vector"]
