"""Configuration problems: each names the key it is about, and all are reported together."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration, at a key path such as `routes[1].from`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration was refused; `problems` lists every reason, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[tuple[Problem, ...]]]:
        # The default would rebuild from the joined message; keep the structured problems
        # so the error survives crossing a process boundary (the all-in-one supervisor).
        return (ConfigError, (self.problems,))


class FieldError(ValueError):
    """Raised by a field parser about the value it was given.

    The parser does not know where the value sits; whoever called it adds the key path.
    """
