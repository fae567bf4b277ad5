"""Three-valued evaluation of compiled criteria and of the four PPL operators.

A criterion that needs a signed-in user cannot be decided when there is none: it is
UNKNOWN (reason `user-unauthenticated`), not false. Operators follow Kleene's logic, so a
result that is TRUE or FALSE without a session stays so whoever signs in, and UNKNOWN
means "signing in could change this". That is what lets the decision ask for sign-in only
when it matters, and never lets a negated identity criterion (`not: [email: ...]`) admit
an anonymous request.

A result carries the reasons of the children that decided it: the first child that
settles it (a true one for `or`, a false one for `and`), where evaluation stops; else every
undecided child; else every child. Pomerium unions every child that agrees with the
result, so where several match, its reasons can be a superset of ours.

Every leaf precomputes its possible outcomes, so evaluating one returns a shared tuple.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from shared.policy.inputs import PolicyInput, SessionView

FALSE: Final = 0
TRUE: Final = 1
UNKNOWN: Final = 2

# (state, reasons, explanation lines)
Outcome = tuple[int, frozenset[str], tuple[str, ...]]
Node = Callable[[PolicyInput], Outcome]

USER_UNAUTHENTICATED: Final = "user-unauthenticated"

_INVERTED: Final = (TRUE, FALSE, UNKNOWN)
_SAME: Final = (FALSE, TRUE, UNKNOWN)
# Bounds each memo: past it, results are computed afresh instead of remembered.
MEMO_LIMIT: Final = 256
_NO_REASONS: frozenset[str] = frozenset()
_NEVER: Final[Outcome] = (FALSE, _NO_REASONS, ())


def outcome(state: int, label: str, description: str, reason: str) -> Outcome:
    return (state, frozenset((reason,)), (f"{label}: {description} → {reason}",))


def constant_leaf(value: bool, label: str, description: str, reason: str) -> Node:
    fixed = outcome(TRUE if value else FALSE, label, description, reason)

    def leaf(_inp: PolicyInput) -> Outcome:
        return fixed

    return leaf


def request_leaf(
    label: str, description: str, ok: str, fail: str, test: Callable[[PolicyInput], bool]
) -> Node:
    """A criterion about the request alone: always decidable."""
    yes = outcome(TRUE, label, description, ok)
    no = outcome(FALSE, label, description, fail)

    def leaf(inp: PolicyInput) -> Outcome:
        return yes if test(inp) else no

    return leaf


def session_leaf(
    label: str, description: str, ok: str, fail: str, test: Callable[[SessionView], bool]
) -> Node:
    """A criterion about the user: UNKNOWN until there is a session."""
    yes = outcome(TRUE, label, description, ok)
    no = outcome(FALSE, label, description, fail)
    unknown = outcome(UNKNOWN, label, description, USER_UNAUTHENTICATED)

    def leaf(inp: PolicyInput) -> Outcome:
        session = inp.session
        if session is None:
            return unknown
        return yes if test(session) else no

    return leaf


def merge(state: int, picked: Sequence[Outcome]) -> Outcome:
    """`state` with the reasons and lines of every outcome in `picked`."""
    if len(picked) == 1:
        only = picked[0]
        return only if only[0] == state else (state, only[1], only[2])
    reasons = _NO_REASONS.union(*(p[1] for p in picked))
    lines: tuple[str, ...] = ()
    for p in picked:
        lines += p[2]
    return (state, reasons, lines)


def combine(operator: str, children: Sequence[Node]) -> Node:
    """The node for `operator` (and, or, not, nor) over `children`.

    `not` is Pomerium's: ¬A and ¬B (none may match); `nor` is Pomerium's: ¬A or ¬B
    (not all may match). Evaluation stops at the first child whose (possibly negated)
    value settles the result, since no later child could change it in Kleene's logic.
    """
    nodes = tuple(children)
    table = _INVERTED if operator in ("not", "nor") else _SAME
    dominant = FALSE if operator in ("and", "not") else TRUE
    recessive = TRUE if dominant == FALSE else FALSE
    if len(nodes) == 1 and table is _SAME:
        return nodes[0]

    def node(inp: PolicyInput) -> Outcome:
        rest: list[Outcome] = []
        unknown: list[Outcome] = []
        for child in nodes:
            result = child(inp)
            state = table[result[0]]
            if state == dominant:
                return result if state == result[0] else (state, result[1], result[2])
            if state == UNKNOWN:
                unknown.append(result)
            else:
                rest.append(result)
        state, picked = (UNKNOWN, unknown) if unknown else (recessive, rest)
        if len(picked) == 1:
            return merge(state, picked)
        key = (state, *picked)
        found = memo.get(key)
        if found is None:
            found = merge(state, picked)
            if len(memo) < MEMO_LIMIT:
                memo[key] = found
        return found

    # Leaves return shared outcomes, so the same few merges recur request after request;
    # remembering them saves the set union and keeps results identical objects, which
    # makes the parent's lookups (and the decision cache) cheap identity hits.
    memo: dict[tuple[object, ...], Outcome] = {}
    return node


def never(_inp: PolicyInput) -> Outcome:
    """The node for an empty list of rules: matches nothing, for no reason."""
    return _NEVER
