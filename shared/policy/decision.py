"""A compiled policy and the decision it reaches for one request.

How the allow and deny results become a decision:

1. a deny rule matched → denied (`denied_by_rule`); if its reasons say the client
   certificate is missing or invalid, `needs_client_certificate` (Pomerium's 495 page
   rather than a sign-in redirect);
2. no allow rule can match, whoever the user is → denied; `needs_client_certificate`
   again when that is what the failing allow rules complain about;
3. the allow or the deny result depends on a user there is not → `needs_sign_in`;
4. otherwise allowed.

Pomerium redirects to sign-in whenever `user-unauthenticated` appears among the reasons,
even when a deny, or an allow that fails on the source address, would stand after
signing in. Three-valued results let step 3 come after 2: sign-in is asked for only when
it could change the answer, and never skipped when it could.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from shared.policy.certificates import CERTIFICATE_REQUIRED, INVALID_CERTIFICATE
from shared.policy.inputs import PolicyInput
from shared.policy.logic import (
    FALSE,
    MEMO_LIMIT,
    TRUE,
    UNKNOWN,
    Node,
    Outcome,
    combine,
    merge,
    never,
)

_CERTIFICATE_REASONS: Final = frozenset((CERTIFICATE_REQUIRED, INVALID_CERTIFICATE))

ALLOWED: Final = "allowed: an allow rule matched and no deny rule did"
DENIED_BY_RULE: Final = "denied: a deny rule matched"
DENIED_NO_ALLOW: Final = "denied: no allow rule matched"
DENIED_NO_RULES: Final = "denied: the policy has no allow rule"
CERTIFICATE_BY_RULE: Final = "client certificate required: a deny rule matched"
CERTIFICATE_NO_ALLOW: Final = "client certificate required: no allow rule matched"
SIGN_IN: Final = "sign-in required: the decision depends on who the user is"

_BY_RULE, _NO_ALLOW, _SIGN_IN, _ALLOWED = range(4)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request.

    `reasons` are Pomerium's reason names from the side that decided (the matching deny
    rules, the matching allow rules, or the failing allow rules). `trace` is the verdict
    followed by one line per deciding criterion, e.g.
    `policy[0].allow.or[1]: email is alice@example.com → email-ok`.
    """

    allowed: bool
    denied_by_rule: bool
    needs_sign_in: bool
    needs_client_certificate: bool
    reasons: frozenset[str]
    trace: tuple[str, ...]

    @property
    def explanation(self) -> str:
        """The trace as text for `vallum policy explain` and the authorize log."""
        return "\n  ".join(self.trace)


class CompiledPolicy:
    """A route's policy, compiled once per config and evaluated per request."""

    __slots__ = ("_allow", "_decisions", "_deny", "_has_allow", "_repr", "needs_session")

    def __init__(self, allow: Sequence[Node], deny: Sequence[Node], *, needs_session: bool):
        # All allows of all rules are one `or`, and so are all denies.
        self._allow: Node = combine("or", allow) if allow else never
        self._deny: Node = combine("or", deny) if deny else never
        self._has_allow = bool(allow)
        # Outcomes are shared objects (see logic.combine), so most requests map to one of
        # a few decisions; building a frozen dataclass costs more than the whole lookup.
        self._decisions: dict[tuple[int, Outcome], Decision] = {}
        self._repr = f"CompiledPolicy(allow={len(allow)}, deny={len(deny)}, "
        # Whether any criterion looks at the user: when not, authorize can skip the
        # session lookup altogether.
        self.needs_session = needs_session

    def __repr__(self) -> str:
        return f"{self._repr}needs_session={self.needs_session})"

    def evaluate(self, inp: PolicyInput) -> Decision:
        allow = self._allow(inp)
        deny = self._deny(inp)
        if deny[0] == TRUE:
            key = (_BY_RULE, deny)
        elif allow[0] == FALSE:
            key = (_NO_ALLOW, allow)
        elif allow[0] == UNKNOWN or deny[0] == UNKNOWN:
            key = (_SIGN_IN, merge(UNKNOWN, [r for r in (allow, deny) if r[0] == UNKNOWN]))
        else:
            key = (_ALLOWED, allow)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(*key)
            if len(self._decisions) < MEMO_LIMIT:
                self._decisions[key] = decision
        return decision

    def _decide(self, kind: int, result: Outcome) -> Decision:
        if kind == _BY_RULE:
            return _denied(result, CERTIFICATE_BY_RULE, DENIED_BY_RULE, by_rule=True)
        if kind == _NO_ALLOW:
            plain = DENIED_NO_ALLOW if self._has_allow else DENIED_NO_RULES
            return _denied(result, CERTIFICATE_NO_ALLOW, plain, by_rule=False)
        if kind == _SIGN_IN:
            return Decision(False, False, True, False, result[1], (SIGN_IN, *result[2]))
        return Decision(True, False, False, False, result[1], (ALLOWED, *result[2]))


def _denied(result: Outcome, certificate: str, plain: str, *, by_rule: bool) -> Decision:
    needs_certificate = not _CERTIFICATE_REASONS.isdisjoint(result[1])
    verdict = certificate if needs_certificate else plain
    return Decision(False, by_rule, False, needs_certificate, result[1], (verdict, *result[2]))
