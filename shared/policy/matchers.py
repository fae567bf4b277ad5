"""String and string-list matchers: `{is: x}`, `{starts_with: x, not: y}`, `{has: x}`, ...

A matcher compiles to one predicate closure; several operators in one matcher must all
hold. A bare value is shorthand for `is` (string criteria) or `has` (list criteria), as in
Pomerium. List criteria have no `contains`, which would read both as "has the member"
and as "some member has the substring".

Where Pomerium accepts a value that can never match (a list where a string is compared,
a number against a string), compiling fails instead: under `deny` such a rule would
silently protect nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from shared.policy.errors import Where, did_you_mean, is_list, show, type_name

StringTest = Callable[[str], bool]
ListTest = Callable[[Sequence[object]], bool]

STRING_OPERATORS: Final = ("is", "not", "contains", "starts_with", "ends_with", "in", "not_in")
LIST_OPERATORS: Final = ("has", "is", "exclude", "in", "starts_with", "ends_with")

_SYNONYMS: Final = {
    "equals": "is",
    "equal": "is",
    "eq": "is",
    "==": "is",
    "exact": "is",
    "is_not": "not",
    "not_equals": "not",
    "neq": "not",
    "ne": "not",
    "!=": "not",
    "startswith": "starts_with",
    "prefix": "starts_with",
    "begins_with": "starts_with",
    "endswith": "ends_with",
    "suffix": "ends_with",
    "includes": "contains",
    "one_of": "in",
    "any_of": "in",
    "notin": "not_in",
    "none_of": "not_in",
    "not_one_of": "not_in",
}
_LIST_SYNONYMS: Final = {
    **_SYNONYMS,
    "includes": "has",
    "contains": "has",
    "not": "exclude",
    "not_in": "exclude",
    "excludes": "exclude",
    "lacks": "exclude",
}

# RFC 9110 §9.1: method names are case-sensitive, so `get` never matches a GET request.
_STANDARD_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
Scalar = str | int | float | bool
_T = TypeVar("_T")


def compile_string_matcher(
    value: Any, where: Where, *, methods: bool = False
) -> tuple[StringTest, str] | None:
    """A predicate on one string and its description, or None after reporting problems."""
    operators = _operators(value, where, "is", "a string")
    if operators is None:
        return None
    tests: list[StringTest] = []
    parts: list[str] = []
    for op, arg in operators:
        # A bare value has no operator key of its own to point at.
        at = where.at(op) if isinstance(value, Mapping) else where
        if op not in STRING_OPERATORS:
            where.error(f'unknown matcher "{op}"' + did_you_mean(op, STRING_OPERATORS, _SYNONYMS))
            continue
        if op in ("in", "not_in"):
            items = _string_list(arg, at, methods)
            if items is not None:
                tests.append(_membership(frozenset(items), op == "in"))
                parts.append(f"{op} {show(list(items))}")
            continue
        text = _string(arg, at, methods, op)
        if text is not None:
            tests.append(_string_test(op, text))
            parts.append(f"{op} {text}")
    if len(tests) != len(operators):
        return None
    return _all(tests), " and ".join(parts)


def compile_list_matcher(
    value: Any, where: Where, *, strings_only: bool
) -> tuple[ListTest, str] | None:
    """A predicate on a list of values (a claim, the groups) and its description."""
    operators = _operators(value, where, "has", "a value")
    if operators is None:
        return None
    tests: list[ListTest] = []
    parts: list[str] = []
    for op, arg in operators:
        at = where.at(op) if isinstance(value, Mapping) else where
        if op not in LIST_OPERATORS:
            hint = did_you_mean(op, LIST_OPERATORS, _LIST_SYNONYMS)
            where.error(f'unknown list matcher "{op}"{hint}')
            continue
        if op == "in":
            items = _scalar_list(arg, at, strings_only)
            if items is not None:
                tests.append(_any_in(tuple(_equals(item) for item in items)))
                parts.append(f"in {show(list(items))}")
        elif op in ("starts_with", "ends_with"):
            text = _string(arg, at, False, op)
            if text is not None:
                tests.append(_any_string(_string_test(op, text)))
                parts.append(f"{op} {text}")
        else:
            scalar = _scalar(arg, at, strings_only)
            if scalar is not None:
                tests.append(_list_test(op, scalar))
                parts.append(f"{op} {show(scalar)}")
    if len(tests) != len(operators):
        return None
    return _all(tests), " and ".join(parts)


def _operators(value: Any, where: Where, bare: str, expected: str) -> list[tuple[str, Any]] | None:
    if isinstance(value, Mapping):
        if not value:
            where.error("empty matcher: give at least one operator, e.g. {is: ...}")
            return None
        ops: list[tuple[str, Any]] = []
        for key, arg in value.items():
            if not isinstance(key, str):
                where.error(f"matcher operators are strings, not {type_name(key)} ({key!r})")
                return None
            ops.append((key, arg))
        return ops
    if is_list(value):
        where.error(f"expected {expected} or a matcher mapping, not a list; use {{in: [...]}}")
        return None
    if value is None:
        where.error(f"missing value: expected {expected} or a matcher such as {{{bare}: ...}}")
        return None
    return [(bare, value)]


def _string(arg: Any, where: Where, methods: bool, op: str) -> str | None:
    if not isinstance(arg, str):
        where.error(f"expected a string, got {type_name(arg)}" + _quote_hint(arg))
        return None
    if arg == "" and op in ("contains", "starts_with", "ends_with"):
        where.error(f'"{op}" with an empty string matches everything')
        return None
    if methods and arg != arg.upper() and arg.upper() in _STANDARD_METHODS:
        where.error(f'HTTP methods are case-sensitive (did you mean "{arg.upper()}"?)')
        return None
    return arg


def _string_list(arg: Any, where: Where, methods: bool) -> tuple[str, ...] | None:
    if not is_list(arg):
        where.error(f"expected a list of strings, got {type_name(arg)}")
        return None
    if not arg:
        where.error("empty list: it would match nothing (or, for not_in, everything)")
        return None
    items = [_string(item, where.item(i), methods, "in") for i, item in enumerate(arg)]
    return None if any(i is None for i in items) else tuple(i for i in items if i is not None)


def _scalar(arg: Any, where: Where, strings_only: bool) -> Scalar | None:
    if isinstance(arg, str) or (not strings_only and isinstance(arg, bool | int | float)):
        return arg
    expected = "a string" if strings_only else "a string, number or boolean"
    where.error(f"expected {expected}, got {type_name(arg)}" + _quote_hint(arg))
    return None


def _scalar_list(arg: Any, where: Where, strings_only: bool) -> tuple[Scalar, ...] | None:
    if not is_list(arg) or not arg:
        where.error(f"expected a non-empty list, got {type_name(arg)}")
        return None
    items = [_scalar(item, where.item(i), strings_only) for i, item in enumerate(arg)]
    return None if any(i is None for i in items) else tuple(i for i in items if i is not None)


def _quote_hint(arg: Any) -> str:
    if isinstance(arg, bool | int | float):
        return f" (quote it: '{show(arg)}')"
    return ""


def _string_test(op: str, text: str) -> StringTest:
    if op == "is":
        return text.__eq__
    if op == "not":
        return text.__ne__
    if op == "contains":
        return lambda s: text in s
    if op == "starts_with":
        return lambda s: s.startswith(text)
    return lambda s: s.endswith(text)


def _membership(items: frozenset[str], inside: bool) -> StringTest:
    if inside:
        return items.__contains__
    return lambda s: s not in items


def _equals(expected: Scalar) -> Callable[[object], bool]:
    """Typed equality, as JSON compares: `true` is not `1` and `"1"` is not `1`."""
    if isinstance(expected, bool):
        return lambda v: type(v) is bool and v == expected
    if isinstance(expected, int | float):
        return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v == expected
    return lambda v: v == expected


def _list_test(op: str, expected: Scalar) -> ListTest:
    if isinstance(expected, str):
        # A string equals only strings, so the builtin membership test is exact here.
        if op == "has":
            return lambda values: expected in values
        if op == "exclude":
            return lambda values: expected not in values
    equal = _equals(expected)
    if op == "has":
        return lambda values: any(equal(v) for v in values)
    if op == "exclude":
        return lambda values: not any(equal(v) for v in values)
    # Pomerium's list `is`: the list is exactly this one value.
    return lambda values: len(values) == 1 and equal(values[0])


def _any_in(equals: tuple[Callable[[object], bool], ...]) -> ListTest:
    return lambda values: any(eq(v) for v in values for eq in equals)


def _any_string(test: StringTest) -> ListTest:
    return lambda values: any(isinstance(v, str) and test(v) for v in values)


def _all(tests: Sequence[Callable[[_T], bool]]) -> Callable[[_T], bool]:
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)
    return lambda value: all(test(value) for test in frozen)


def compile_flag(value: Any, where: Where, name: str) -> bool:
    """Checks the value of a criterion that takes none (`accept: true`).

    Pomerium ignores the value, so `accept: false` accepts everything; refusing anything
    but `true` (or nothing) keeps a policy from meaning the opposite of what it says.
    """
    if value is None or value is True:
        return True
    hint = ' (to never match, use "reject: true")' if name == "accept" else ""
    where.error(f"{name} takes true, got {show(value)}{hint}")
    return False
