"""Pomerium Policy Language: compile a route's policy once, evaluate it per request.

Pure: no I/O at evaluation (time zones are loaded from the system database at compile
time), no grpc, no web framework. The public surface is re-exported here.

Semantics where Pomerium's documentation leaves room, decided from its docs and its
generated Rego so that a Pomerium config means the same thing here:

- `not: [A, B]` is ¬A and ¬B (none may match, i.e. not-or); `nor: [A, B]` is ¬A or ¬B
  (not all may match, i.e. not-and). Pomerium's names are swapped relative to Boolean
  algebra, and its docs say so; configs written for it rely on this meaning.
- A list criterion's `is` (`groups: {is: x}`) holds when the list is exactly `[x]`;
  `has` when x is a member; `exclude` when it is not. A bare value means `is` for string
  criteria and `has` for list criteria (`groups`, `claim/...`).
- `allowed_users` matches the user id or the email (Pomerium adds both criteria).
- `invalid_client_certificate` is true when a certificate was asked for and none came
  (`client-certificate-required`) or the one presented does not verify
  (`invalid-client-certificate`); false for a valid one, and false when the listener
  asks for none (`valid-client-certificate-or-none-required`).
- Criteria about the user are undecided without a session; see `logic` for how that
  turns into `needs_sign_in` only when signing in could change the decision.
- Stricter than Pomerium, where its reading silently never or always matches: `accept:
  false`, an empty operator list, a list where a string is compared, a lowercase HTTP
  method and an unquoted YAML time are compile errors, not policies.
"""

from shared.policy.compiler import compile_policy, compile_route_policy
from shared.policy.decision import CompiledPolicy, Decision
from shared.policy.errors import PolicyError, Problem
from shared.policy.inputs import POLICY_HEADERS, ClientCertView, PolicyInput, SessionView

__all__ = [
    "POLICY_HEADERS",
    "ClientCertView",
    "CompiledPolicy",
    "Decision",
    "PolicyError",
    "PolicyInput",
    "Problem",
    "SessionView",
    "compile_policy",
    "compile_route_policy",
]
