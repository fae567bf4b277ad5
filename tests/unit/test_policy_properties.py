"""Properties of the operators and of the decision over random policies and requests.

Atoms are independent booleans: `claim/a<i>: yes` (needs a user) and
`http_path: {contains: /k<i>/}` (request only), so the expected outcome of any tree can
be computed with Python's all/any, and with Kleene's logic when nobody is signed in.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.policy import PolicyInput, SessionView, compile_policy
from tests.unit.test_policy_support import req, verdict

OPS = ("and", "or", "not", "nor")
ATOMS = 4

Tree = Any  # ("claim" | "path", index) or (operator, [Tree, ...])
World = tuple[tuple[bool, ...], tuple[bool, ...], bool]

atoms = st.tuples(st.sampled_from(("claim", "path")), st.integers(0, ATOMS - 1))
trees = st.recursive(
    atoms,
    lambda children: st.tuples(st.sampled_from(OPS), st.lists(children, min_size=1, max_size=4)),
    max_leaves=10,
)
roots = st.tuples(st.sampled_from(OPS), st.lists(trees, min_size=1, max_size=4))
bits = st.tuples(*[st.booleans()] * ATOMS)
worlds = st.tuples(bits, bits, st.booleans())
signed_in_worlds = st.tuples(bits, bits, st.just(True))


def to_ppl(tree: Tree) -> dict[str, Any]:
    kind, arg = tree
    if kind == "claim":
        return {f"claim/a{arg}": "yes"}
    if kind == "path":
        return {"http_path": {"contains": f"/k{arg}/"}}
    return {kind: [to_ppl(child) for child in arg]}


def to_input(world: World) -> PolicyInput:
    claim_bits, path_bits, signed_in = world
    claims = {f"a{i}": "yes" if bit else "no" for i, bit in enumerate(claim_bits)}
    path = "/" + "".join(f"/k{i}/" for i, bit in enumerate(path_bits) if bit)
    return req(path=path, session=SessionView("u", claims=claims) if signed_in else None)


def classical(tree: Tree, world: World) -> bool:
    """The documented meaning, in plain Python (everything known)."""
    kind, arg = tree
    if kind == "claim":
        return bool(world[0][arg])
    if kind == "path":
        return bool(world[1][arg])
    values = [classical(child, world) for child in arg]
    return {
        "and": all(values),
        "or": any(values),
        "not": not any(values),  # Pomerium: ¬A and ¬B, none may match
        "nor": not all(values),  # Pomerium: ¬A or ¬B, not all may match
    }[kind]


def kleene(tree: Tree, world: World) -> bool | None:
    """The same with claims unknown (None) when nobody is signed in."""
    kind, arg = tree
    if kind in ("claim", "path"):
        return classical(tree, world) if kind == "path" or world[2] else None
    values = [kleene(child, world) for child in arg]
    if kind in ("not", "nor"):
        values = [None if v is None else not v for v in values]
    if kind in ("and", "not"):
        return False if False in values else None if None in values else True
    return True if True in values else None if None in values else False


def allow(root: Tree) -> dict[str, Any]:
    return {"allow": to_ppl(root)}


EXPECTED_VERDICT = {True: "allow", None: "sign-in", False: "deny"}
# No example database: nothing written outside the test files themselves.
SLOW = settings(deadline=None, database=None)


@SLOW
@given(roots, signed_in_worlds)
def test_operators_agree_with_all_and_any(root: Tree, world: World) -> None:
    decision = compile_policy(allow(root)).evaluate(to_input(world))
    assert decision.allowed == classical(root, world)
    assert not decision.needs_sign_in


@SLOW
@given(roots, worlds)
def test_three_valued_outcome_without_a_user(root: Tree, world: World) -> None:
    decision = compile_policy(allow(root)).evaluate(to_input(world))
    assert verdict(decision) == EXPECTED_VERDICT[kleene(root, world)]
    assert decision.needs_sign_in == ("user-unauthenticated" in decision.reasons)


@SLOW
@given(roots, roots, signed_in_worlds)
def test_deny_wins_over_any_allow(allow_root: Tree, deny_root: Tree, world: World) -> None:
    policy = compile_policy({"allow": to_ppl(allow_root), "deny": to_ppl(deny_root)})
    decision = policy.evaluate(to_input(world))
    if classical(deny_root, world):
        assert not decision.allowed
        assert decision.denied_by_rule
    else:
        assert not decision.denied_by_rule
        assert decision.allowed == classical(allow_root, world)


@SLOW
@given(roots, worlds)
def test_deny_wins_even_over_accept(deny_root: Tree, world: World) -> None:
    policy = compile_policy({"allow": {"or": [{"accept": True}]}, "deny": to_ppl(deny_root)})
    decision = policy.evaluate(to_input(world))
    expected = kleene(deny_root, world)
    assert decision.allowed == (expected is False)
    assert decision.denied_by_rule == (expected is True)


def equivalent(left: dict[str, Any], right: dict[str, Any], world: World) -> None:
    inp = to_input(world)
    a = compile_policy({"allow": left}).evaluate(inp)
    b = compile_policy({"allow": right}).evaluate(inp)
    assert (verdict(a), a.reasons) == (verdict(b), b.reasons)


@SLOW
@given(st.lists(trees, min_size=1, max_size=4), worlds)
def test_nor_is_not_all_and_not_is_not_any(children: list[Tree], world: World) -> None:
    cs = [to_ppl(child) for child in children]
    equivalent({"nor": cs}, {"not": [{"and": cs}]}, world)
    equivalent({"not": cs}, {"not": [{"or": cs}]}, world)
    # De Morgan, spelled out.
    equivalent({"nor": cs}, {"or": [{"not": [c]} for c in cs]}, world)
    equivalent({"not": cs}, {"and": [{"not": [c]} for c in cs]}, world)


@SLOW
@given(st.lists(trees, min_size=1, max_size=4), worlds)
def test_double_negation(children: list[Tree], world: World) -> None:
    cs = [to_ppl(child) for child in children]
    equivalent({"or": cs}, {"not": [{"not": cs}]}, world)
    equivalent({"and": cs}, {"nor": [{"nor": cs}]}, world)


@SLOW
@given(roots, roots, st.lists(worlds, min_size=1, max_size=5))
def test_evaluation_is_deterministic(allow_root: Tree, deny_root: Tree, many: list[World]) -> None:
    raw = [{"allow": to_ppl(allow_root)}, {"deny": to_ppl(deny_root)}]
    policy = compile_policy(raw)
    inputs = [to_input(world) for world in many]
    first = [policy.evaluate(inp) for inp in inputs]
    again = [policy.evaluate(inp) for inp in reversed(inputs)][::-1]
    fresh = [compile_policy(raw).evaluate(inp) for inp in inputs]
    assert first == again == fresh
