"""How a bad policy is reported: every problem at once, each at its key path, with a hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class Problem(NamedTuple):
    """One mistake in a policy, at a key path such as `routes[1].policy[0].allow.or[2]`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PolicyError(ValueError):
    """The policy was refused; `problems` lists every mistake found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Problems:
    """Collects problems while compiling, so one pass reports all of them."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(path, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise PolicyError(self.items)


class Where:
    """Where a value sits: `path` for errors about it, `label` for explanation lines.

    The label stays at the criterion (`...allow.and[0]`) while the path walks into its
    value (`...allow.and[0].email.is`), so errors point at the exact key and explanations
    name the list item an operator chose.
    """

    __slots__ = ("label", "path", "problems")

    def __init__(self, path: str, label: str, problems: Problems) -> None:
        self.path = path
        self.label = label
        self.problems = problems

    def at(self, key: str) -> Where:
        return Where(key_path(self.path, key), self.label, self.problems)

    def item(self, index: int) -> Where:
        return Where(index_path(self.path, index), self.label, self.problems)

    def error(self, message: str) -> None:
        self.problems.add(self.path, message)


def key_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def index_path(prefix: str, index: int) -> str:
    return f"{prefix}[{index}]"


def suggest(
    word: str, choices: Iterable[str], synonyms: Mapping[str, str] | None = None
) -> str | None:
    """The valid word closest to a mistaken one, if any is close.

    Synonyms come first because the likeliest mistakes are words from other languages
    (`equals`, `any`, `nand`) that share too few letters with the right one for difflib.
    """
    options = list(choices)
    lowered = word.lower()
    if synonyms and lowered in synonyms:
        return synonyms[lowered]
    if lowered in options:
        return lowered
    close = difflib.get_close_matches(lowered, options, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(
    word: str, choices: Iterable[str], synonyms: Mapping[str, str] | None = None
) -> str:
    """A ` (did you mean "x"?)` suffix for a message, or "" when nothing is close."""
    guess = suggest(word, choices, synonyms)
    return f' (did you mean "{guess}"?)' if guess is not None else ""


def type_name(value: Any) -> str:
    """The YAML-level name of a value's type, for messages a config author can act on."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def is_list(value: Any) -> bool:
    """True for YAML sequences: config hands over lists frozen as tuples."""
    return isinstance(value, list | tuple)


def show(value: Any) -> str:
    """A value as it reads in an explanation line: strings bare, lists in brackets."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_list(value):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)
