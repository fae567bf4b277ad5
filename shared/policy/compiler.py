"""Compiles PPL (a rule or a list of rules, as parsed from YAML or JSON) into a policy tree.

Structure: rule = {allow: action, deny: action}; action = {and|or|not|nor: [criteria]};
a criterion is a one-key mapping `{name: value}` or, as a Vallum extension, a nested
operator `{or: [...]}`. As in Pomerium, an action may hold several operators, which are
OR-ed, and all allows (and all denies) of all rules are OR-ed together.

Every mistake is collected before `PolicyError` is raised, each at its key path below the
caller's prefix (`routes[1].policy[0].allow.or[2]`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from shared.policy.criteria import CRITERIA, CRITERION_SYNONYMS
from shared.policy.decision import CompiledPolicy
from shared.policy.errors import (
    Problems,
    Where,
    did_you_mean,
    index_path,
    is_list,
    key_path,
    suggest,
    type_name,
)
from shared.policy.logic import Node, combine

OPERATORS: Final = ("and", "or", "not", "nor")
ACTIONS: Final = ("allow", "deny")
_ACTION_SYNONYMS: Final = {"permit": "allow", "allowed": "allow", "block": "deny", "reject": "deny"}
_OPERATOR_SYNONYMS: Final = {"any": "or", "all": "and", "none": "not", "nand": "nor", "&&": "and"}


class _Builder:
    """Walks the raw policy once, gathering compiled nodes and problems side by side."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.allow: list[Node] = []
        self.deny: list[Node] = []
        self.needs_session = False

    def build(self) -> CompiledPolicy:
        self.problems.raise_if_any()
        return CompiledPolicy(self.allow, self.deny, needs_session=self.needs_session)

    def policy(self, raw: Any, path: str) -> None:
        if raw is None:
            return
        if isinstance(raw, Mapping):
            self.rule(raw, path)
        elif is_list(raw):
            for i, rule in enumerate(raw):
                self.rule(rule, index_path(path, i))
        else:
            self.problems.add(
                path,
                f"expected a rule (allow/deny mapping) or a list of rules, got {type_name(raw)}",
            )

    def rule(self, raw: Any, path: str) -> None:
        if not isinstance(raw, Mapping):
            self.problems.add(path, f"expected a rule with allow and/or deny, got {type_name(raw)}")
            return
        if not raw:
            self.problems.add(path, "empty rule: give allow, deny, or both")
        for key, value in raw.items():
            if key == "allow":
                self.allow.extend(self.action(value, key_path(path, key)))
            elif key == "deny":
                self.deny.extend(self.action(value, key_path(path, key)))
            elif key in OPERATORS:
                self.problems.add(
                    path, f'"{key}" belongs under allow or deny (allow: {{{key}: [...]}})'
                )
            else:
                hint = did_you_mean(str(key), ACTIONS, _ACTION_SYNONYMS)
                self.problems.add(path, f'unknown rule key "{key}": expected allow or deny{hint}')

    def action(self, raw: Any, path: str) -> list[Node]:
        if not isinstance(raw, Mapping) or not raw:
            hint = " (put the list under an operator, e.g. or:)" if is_list(raw) else ""
            shown = "an empty mapping" if isinstance(raw, Mapping) else type_name(raw)
            self.problems.add(
                path, f"expected a mapping of operators (and, or, not, nor), got {shown}{hint}"
            )
            return []
        nodes = []
        for key, value in raw.items():
            if key in OPERATORS:
                node = self.operator(key, value, key_path(path, key))
                if node is not None:
                    nodes.append(node)
            elif _criterion_name(key) in CRITERIA:
                self.problems.add(
                    path, f'criterion "{key}" must be in an operator\'s list, e.g. or: [{key}: ...]'
                )
            else:
                hint = did_you_mean(str(key), OPERATORS, _OPERATOR_SYNONYMS)
                self.problems.add(path, f'unknown operator "{key}"{hint}')
        return nodes

    def operator(self, op: str, raw: Any, path: str) -> Node | None:
        if not is_list(raw):
            hint = " (start each criterion with '- ')" if isinstance(raw, Mapping) else ""
            self.problems.add(path, f"{op} takes a list of criteria, got {type_name(raw)}{hint}")
            return None
        if not raw:
            self.problems.add(path, f"{op} has no criteria")
            return None
        children = [self.criterion(item, index_path(path, i)) for i, item in enumerate(raw)]
        kept = [c for c in children if c is not None]
        return combine(op, kept) if len(kept) == len(children) else None

    def criterion(self, raw: Any, path: str) -> Node | None:
        if not isinstance(raw, Mapping) or len(raw) != 1:
            self.problems.add(path, _criterion_shape(raw))
            return None
        ((key, value),) = raw.items()
        if not isinstance(key, str):
            self.problems.add(path, f"criterion names are strings, not {type_name(key)} ({key!r})")
            return None
        if key in OPERATORS:
            return self.operator(key, value, key_path(path, key))
        name, slash, sub = key.partition("/")
        spec = CRITERIA.get(name)
        if spec is None:
            guess = suggest(name, [*CRITERIA, *OPERATORS], CRITERION_SYNONYMS)
            if slash and guess is not None and guess in CRITERIA and CRITERIA[guess].takes_subpath:
                guess = f"{guess}/{sub}"
            hint = f' (did you mean "{guess}"?)' if guess else ""
            self.problems.add(path, f'unknown criterion "{key}"{hint}')
            return None
        if spec.takes_subpath and not sub:
            self.problems.add(path, f"{name} needs a name after a slash, e.g. {name}/groups")
            return None
        if slash and not spec.takes_subpath:
            self.problems.add(path, f'"{name}" takes no /sub-path (only claim/<name> does)')
            return None
        self.needs_session = self.needs_session or spec.needs_user
        return spec.compile(value, Where(key_path(path, key), path, self.problems), sub)


def _criterion_name(key: object) -> str:
    return key.partition("/")[0] if isinstance(key, str) else ""


def _criterion_shape(raw: Any) -> str:
    if isinstance(raw, Mapping) and raw:
        keys = ", ".join(str(k) for k in raw)
        return (
            f"a criterion has exactly one key, this has {len(raw)} ({keys}); "
            "give each its own list item"
        )
    if isinstance(raw, str) and _criterion_name(raw) in CRITERIA:
        return f'expected a criterion mapping; write "{raw}: true" or "{raw}: <value>"'
    shown = "an empty mapping" if isinstance(raw, Mapping) else type_name(raw)
    return f"expected a criterion such as {{email: {{is: ...}}}}, got {shown}"


def compile_policy(raw: Any, *, path: str = "policy") -> CompiledPolicy:
    """Compiles a PPL document; raises `PolicyError` listing every problem."""
    builder = _Builder(Problems())
    builder.policy(raw, path)
    return builder.build()


def compile_route_policy(
    policy_raw: Any,
    *,
    allow_public_unauthenticated_access: bool = False,
    allow_any_authenticated_user: bool = False,
    allowed_users: Iterable[str] = (),
    allowed_domains: Iterable[str] = (),
    allowed_idp_claims: Mapping[str, Any] | None = None,
    cors_allow_preflight: bool = False,
    deny_invalid_client_certificate: bool = False,
    path: str,
) -> CompiledPolicy:
    """A route's policy: its shortcut keys as one allow rule, then its `policy` rules.

    `path` is the route's own key path (`routes[1]`); its policy is compiled at
    `routes[1].policy`. Each shortcut becomes an `or` item, as in Pomerium's conversion:
    public access → accept, cors_allow_preflight → cors_preflight, any authenticated user
    → authenticated_user, each allowed domain → domain is, each allowed IdP claim value →
    claim/<name> has, each allowed user → user is OR email is (Pomerium matches
    allowed_users against both the user id and the email). `deny_invalid_client_certificate`
    adds Pomerium's default deny rule for downstream mTLS (enforcement mode
    `policy_with_default_deny`).
    """
    builder = _Builder(Problems())
    shortcuts: list[Node] = []

    def add(criterion: Mapping[str, Any], label: str) -> None:
        node = builder.criterion(criterion, label)
        if node is not None:
            shortcuts.append(node)

    if allow_public_unauthenticated_access:
        add({"accept": True}, key_path(path, "allow_public_unauthenticated_access"))
    if cors_allow_preflight:
        add({"cors_preflight": True}, key_path(path, "cors_allow_preflight"))
    if allow_any_authenticated_user:
        add({"authenticated_user": True}, key_path(path, "allow_any_authenticated_user"))
    for label, domain in _strings(builder, allowed_domains, key_path(path, "allowed_domains")):
        add({"domain": {"is": domain}}, label)
    claims_path = key_path(path, "allowed_idp_claims")
    for name, values in sorted((allowed_idp_claims or {}).items()):
        values = values if is_list(values) else [values]
        for i, value in enumerate(values):
            add({f"claim/{name}": {"has": value}}, index_path(key_path(claims_path, name), i))
    for label, user in _strings(builder, allowed_users, key_path(path, "allowed_users")):
        add({"user": {"is": user}}, label)
        add({"email": {"is": user}}, label)
    if shortcuts:
        builder.allow.append(combine("or", shortcuts))
    if deny_invalid_client_certificate:
        label = key_path(path, "downstream_mtls")
        node = builder.criterion({"invalid_client_certificate": True}, label)
        if node is not None:
            builder.deny.append(node)
    builder.policy(policy_raw, key_path(path, "policy"))
    return builder.build()


def _strings(builder: _Builder, values: Iterable[Any], path: str) -> list[tuple[str, str]]:
    if isinstance(values, str):
        builder.problems.add(path, "expected a list of strings, got a single string")
        return []
    found = []
    for i, value in enumerate(values):
        if isinstance(value, str) and value:
            found.append((index_path(path, i), value))
        else:
            builder.problems.add(
                index_path(path, i), f"expected a non-empty string, got {type_name(value)}"
            )
    return found
