"""The table-driven part of parsing: keys, where a value came from, and the driver.

A schema is a sequence of Key; adding a configuration key is one Key line plus the
model field it fills. The same table supplies the known names for "did you mean".
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from shared.config.errors import FieldError, Problem
from shared.config.fields import got, parse_secret
from shared.config.model import Source
from shared.config.sources import PemKind, decode_inline_pem, resolve_path

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ctx:
    """Where in the configuration a parser is working, and where its problems go."""

    path: str
    problems: list[Problem]
    base_dir: str
    home: str | None

    def child(self, key: str) -> Ctx:
        return replace(self, path=f"{self.path}.{key}" if self.path else key)

    def item(self, index: int) -> Ctx:
        return replace(self, path=f"{self.path}[{index}]")

    def at(self, path: str) -> Ctx:
        return replace(self, path=path)

    def add(self, message: str) -> None:
        self.problems.append(Problem(self.path, message))


Parser = Callable[[Any, Ctx], Any]


def plain(parse: Callable[[Any], T]) -> Callable[[Any, Ctx], T]:
    """Adapt a context-free field parser to the table's signature."""

    def run(value: Any, ctx: Ctx) -> T:
        return parse(value)

    return run


class FileMode(enum.Enum):
    NONE = enum.auto()
    # `<name>_file` names a PEM file; either form fills one Source attribute.
    SOURCE = enum.auto()
    # `<name>_file` names a file of base64 text; its path goes to attribute `<name>_file`.
    SECRET = enum.auto()
    # Like SECRET, but the file holds the secret itself as text (an OAuth client secret
    # is whatever string the IdP issued, not base64 of random bytes).
    TEXT = enum.auto()


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    parse: Parser
    attr: str = ""
    # Whether the upper-cased name may come from the environment (top level only).
    env: bool = True
    file: FileMode = FileMode.NONE
    pem: PemKind = PemKind.CERT
    # Checks PEM bytes beyond their labels, inline or once load.py has read the file;
    # raises FieldError. For a TEXT key, load.py runs it on the file's text (the inline
    # value is the parser's to check), which parsing alone cannot see.
    check: Callable[[bytes], None] | None = None

    @property
    def field(self) -> str:
        return self.attr or self.name

    @property
    def file_key(self) -> str:
        return f"{self.name}_file"

    def names(self) -> tuple[str, ...]:
        return (self.name,) if self.file is FileMode.NONE else (self.name, self.file_key)


def source_key(name: str, pem: PemKind, check: Callable[[bytes], None] | None = None) -> Key:
    def parse(value: Any, ctx: Ctx) -> Source:
        data = decode_inline_pem(value, pem, f"{name}_file")
        if check is not None:
            check(data)
        return Source(None, data)

    return Key(name, parse, file=FileMode.SOURCE, pem=pem, check=check)


def secret_key(name: str) -> Key:
    return Key(name, plain(parse_secret), file=FileMode.SECRET)


def text_secret_key(name: str, parse: Callable[[Any], str]) -> Key:
    return Key(name, plain(parse), file=FileMode.TEXT)


@dataclass(frozen=True, slots=True)
class Given:
    """A value the user set, with the path to blame for it (a key path or a variable)."""

    value: Any
    path: str


def known_names(keys: Iterable[Key]) -> list[str]:
    return [name for key in keys for name in key.names()]


def unknown_key_message(name: str, known: Sequence[str]) -> str:
    lowered = {candidate.lower(): candidate for candidate in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        return f'unknown key (did you mean "{lowered[close[0]]}"?)'
    return "unknown key"


def read_object(raw: Any, keys: Sequence[Key], ctx: Ctx) -> dict[str, Given]:
    """The keys the user set, by name; unknown keys and non-mappings become problems."""
    if not isinstance(raw, Mapping):
        ctx.add(f"expected a mapping, got {got(raw)}")
        return {}
    known = known_names(keys)
    given: dict[str, Given] = {}
    for name, value in raw.items():
        if not isinstance(name, str):
            ctx.add(f"keys must be strings, got {got(name)}")
        elif name not in known:
            ctx.child(name).add(unknown_key_message(name, known))
        elif value is not None:
            # `key:` with nothing after it reads as null in YAML; treat it as unset.
            given[name] = Given(value, ctx.child(name).path)
    return given


def is_set(given: Mapping[str, Given], key: str) -> bool:
    """Whether a key was set in either its inline or its `_file` form."""
    return key in given or f"{key}_file" in given


def build(given: Mapping[str, Given], keys: Sequence[Key], ctx: Ctx) -> dict[str, Any]:
    """Model attributes for every key that was given and parsed; the rest keep defaults."""
    values: dict[str, Any] = {}
    for key in keys:
        inline = given.get(key.name)
        from_file = given.get(key.file_key) if key.file is not FileMode.NONE else None
        if inline is not None and from_file is not None:
            ctx.at(inline.path).add(f"set either {key.name} or {key.file_key}, not both")
        elif inline is not None:
            where = ctx.at(inline.path)
            try:
                values[key.field] = key.parse(inline.value, where)
            except FieldError as exc:
                where.add(str(exc))
        elif from_file is not None:
            where = ctx.at(from_file.path)
            try:
                path = resolve_path(from_file.value, ctx.base_dir, ctx.home)
            except FieldError as exc:
                where.add(str(exc))
                continue
            if key.file is FileMode.SOURCE:
                values[key.field] = Source(path, None)
            else:
                values[key.file_key] = path
    return values


def require_together(given: Mapping[str, Given], first: str, second: str, ctx: Ctx) -> None:
    """Keys that mean nothing alone: blame the one that is missing."""
    if is_set(given, first) and not is_set(given, second):
        ctx.child(second).add(f"required when {first} is set")
    elif is_set(given, second) and not is_set(given, first):
        ctx.child(first).add(f"required when {second} is set")
