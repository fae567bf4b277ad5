"""Template: `${pomerium.*}` in set_request_headers, Pomerium's syntax, refused when unclear."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.templates import VARIABLES, Template, TemplateError

VALUES = {
    "pomerium.jwt": "h.p.s",
    "pomerium.id_token": "id",
    "pomerium.access_token": "at",
    "pomerium.email": "user@example.com",
    "pomerium.groups": "admins,dev",
}


@pytest.mark.parametrize(
    ("text", "rendered", "variables"),
    [
        ("static", "static", set()),
        ("", "", set()),
        ("${pomerium.jwt}", "h.p.s", {"pomerium.jwt"}),
        ("Bearer ${pomerium.id_token}", "Bearer id", {"pomerium.id_token"}),
        ("${pomerium.email}:${pomerium.groups}", "user@example.com:admins,dev", None),
        ("${pomerium.jwt}${pomerium.jwt}", "h.p.sh.p.s", {"pomerium.jwt"}),
        ("$$world", "$world", set()),  # Pomerium's docs: `$$` is a literal `$`
        ("$${pomerium.jwt}", "${pomerium.jwt}", set()),
        ("$$$${pomerium.jwt}", "$${pomerium.jwt}", set()),
        ("$$${pomerium.jwt}", "$h.p.s", {"pomerium.jwt"}),
        ("${$}", "$", set()),  # os.Expand reads `${$}` as `$` too
        ("cost: 5$", "cost: 5$", set()),  # a `$` os.Expand leaves alone is kept
        ("$ 5", "$ 5", set()),
        ("a$/b", "a$/b", set()),
        ("${pomerium.client_cert_fingerprint}", "", {"pomerium.client_cert_fingerprint"}),
    ],
)
def test_render(text: str, rendered: str, variables: set[str] | None) -> None:
    template = Template.compile(text)
    assert template.render(VALUES) == rendered
    if variables is not None:
        assert template.variables == variables


def test_every_documented_variable_compiles() -> None:
    assert {
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
    } == VARIABLES
    for name in VARIABLES:
        assert Template.compile(f"x-${{{name}}}-y").render({name: "v"}) == "x-v-y"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("${pomerium.nope}", "unknown variable ${pomerium.nope}"),
        ("${POMERIUM.JWT}", "unknown variable ${POMERIUM.JWT}"),
        ("${HOME}", "unknown variable ${HOME}"),
        ('${pomerium.request.headers["X"]}', "unknown variable"),
        ("$pomerium.id_token", "write ${pomerium.id_token}"),  # the old docs' spelling
        ("$HOME", "$HOME is not substituted"),
        ("pa$word", "$word is not substituted"),
        ("$1", "$1 is not substituted"),
        ("$_", "$_ is not substituted"),
        ("$*", "$* is not substituted"),
        ("${", "has no closing }"),
        ("${pomerium.jwt", "has no closing }"),
        ("a ${} b", "empty ${}"),
        ("a\x00b", "line break or NUL"),
        ("a\r\nb", "line break or NUL"),
    ],
)
def test_refused_at_compile(text: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(reason)):
        Template.compile(text)


@pytest.mark.parametrize(
    "value",
    [
        "x\r\nX-Pomerium-Jwt-Assertion: forged",
        "x\nSet-Cookie: a=1",
        "x\rY",
        "x\x00y",
        "\r\n\r\nGET / HTTP/1.1",
    ],
)
def test_rendered_values_cannot_break_the_header_line(value: str) -> None:
    rendered = Template.compile("pre ${pomerium.email} post").render({"pomerium.email": value})
    assert not set(rendered) & {"\r", "\n", "\x00"}
    assert (
        rendered
        == "pre " + value.replace("\r", " ").replace("\n", " ").replace("\x00", " ") + " post"
    )


def test_a_value_that_looks_like_a_template_is_not_expanded() -> None:
    template = Template.compile("${pomerium.email}")
    assert template.render({"pomerium.email": "${pomerium.jwt}", "pomerium.jwt": "secret"}) == (
        "${pomerium.jwt}"
    )


def test_a_template_without_variables_renders_the_same_object() -> None:
    template = Template.compile("static value")
    assert template.render({}) is template.render(VALUES)


@given(st.text(alphabet=st.characters(blacklist_characters="$\r\n\x00"), max_size=40))
def test_text_without_dollar_is_literal(text: str) -> None:
    assert Template.compile(text).render(VALUES) == text


@given(st.text(max_size=40))
def test_literal_dollars_round_trip(text: str) -> None:
    clean = text.replace("\r", "").replace("\n", "").replace("\x00", "")
    assert Template.compile(clean.replace("$", "$$")).render(VALUES) == clean
