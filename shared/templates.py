"""`${pomerium.*}` substitutions in a route's `set_request_headers` values.

The syntax is Pomerium's (its docs, "Set Request Headers"): `${pomerium.<name>}` is
replaced by a per-request value and `$$` is a literal `$`. Pomerium expands values with
Go's os.Expand, which turns anything it does not know into an empty string; here every
such case is refused when the configuration is loaded instead, so a typo or the old
`$pomerium.id_token` spelling cannot silently send an empty or truncated header:

- `${name}` with a name not in VARIABLES: TemplateError naming it.
- `$` followed by a letter, digit, `_` or one of `*#@!?-` (a shell-style `$name`, which
  os.Expand would also replace with nothing): TemplateError.
- `${` without `}`, and `${}`: TemplateError.
- `$` anywhere else (`5$`, `$ 1`) is kept as it is, as os.Expand keeps it; `${$}` is a
  literal `$` as in os.Expand.

Values are compiled once per configuration; `render` only joins precompiled pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Pomerium's four, then Vallum's additions.
VARIABLES: frozenset[str] = frozenset(
    {
        "pomerium.access_token",
        "pomerium.id_token",
        "pomerium.jwt",
        "pomerium.client_cert_fingerprint",
        "pomerium.client_cert_san_dns",
        "pomerium.client_cert_san_email",
        "pomerium.client_cert_san_uri",
        "pomerium.email",
        "pomerium.user",
        "pomerium.groups",
    }
)

# What os.Expand reads as the start of a `$name` (shell special parameters included).
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_*#@!?-")

# CR and LF end a header line and NUL truncates it in some parsers: in a rendered value
# each becomes a space, so no session or certificate value can inject a header.
_UNSAFE = str.maketrans({"\r": " ", "\n": " ", "\x00": " "})


class TemplateError(ValueError):
    """A header value template that cannot be compiled; the message says why."""


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled value: literal pieces with one variable between each pair."""

    text: str
    # len(literals) == len(names) + 1; rendering is literals[0] + value(names[0]) + ...
    literals: tuple[str, ...]
    names: tuple[str, ...]
    variables: frozenset[str]

    @classmethod
    def compile(cls, text: str) -> Template:
        literals: list[str] = []
        names: list[str] = []
        piece: list[str] = []
        at = 0
        while True:
            dollar = text.find("$", at)
            if dollar < 0 or dollar == len(text) - 1:
                piece.append(text[at:])
                break
            piece.append(text[at:dollar])
            after = text[dollar + 1]
            if after == "$":
                piece.append("$")
                at = dollar + 2
            elif after == "{":
                name, at = _braced(text, dollar)
                if name == "$":
                    piece.append("$")
                    continue
                literals.append("".join(piece))
                piece = []
                names.append(name)
            elif after in _NAME_START:
                raise TemplateError(_unbraced_message(text, dollar))
            else:
                piece.append("$")
                at = dollar + 1
        literals.append("".join(piece))
        for literal in literals:
            if any(ch in literal for ch in "\r\n\x00"):
                raise TemplateError("must not contain a line break or NUL")
        return cls(text, tuple(literals), tuple(names), frozenset(names))

    def render(self, values: Mapping[str, str]) -> str:
        """The value for one request; a variable missing from `values` renders empty.

        Empty, as Pomerium renders a value it does not have (no client certificate, no
        ID token), so the header is still sent and the upstream can tell it is absent.
        """
        literals = self.literals
        if not self.names:
            return literals[0]
        out = [literals[0]]
        for index, name in enumerate(self.names, 1):
            value = values.get(name, "")
            if "\r" in value or "\n" in value or "\x00" in value:
                value = value.translate(_UNSAFE)
            out.append(value)
            out.append(literals[index])
        return "".join(out)


def _unbraced_message(text: str, dollar: int) -> str:
    end = dollar + 1
    while end < len(text) and (text[end].isalnum() or text[end] in "_."):
        end += 1
    spelled = text[dollar:end] if end > dollar + 1 else text[dollar : dollar + 2]
    name = spelled[1:]
    value = f"${{{name}}}" if name in VARIABLES else "${pomerium.<name>}"
    return f"{spelled} is not substituted: write {value} for a value, or $$ for a literal $"


def _braced(text: str, dollar: int) -> tuple[str, int]:
    """The name in `${name}` at `dollar`, and the index just past its `}`."""
    close = text.find("}", dollar + 2)
    if close < 0:
        raise TemplateError(f"{text[dollar:]!r} has no closing }}")
    name = text[dollar + 2 : close]
    if not name:
        raise TemplateError("empty ${}: write ${pomerium.<name>}, or $$ for a literal $")
    if name != "$" and name not in VARIABLES:
        known = ", ".join(sorted(VARIABLES))
        raise TemplateError(f"unknown variable ${{{name}}} (known: {known})")
    return name, close + 1
