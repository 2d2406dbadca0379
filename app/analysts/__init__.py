"""Analysts' direct ClickHouse access: roles, row policies, profiles and quotas per org.

See `app.analysts.grants` for what is granted and why, `app.analysts.cli` for the
`clickpulse analysts grant|revoke` commands, and docs/analysts.md for operators.
"""

from app.analysts.grants import (
    AnalystAccess,
    GrantError,
    Limits,
    Password,
    Relation,
    analyst_relations,
    apply_statements,
    grant_statements,
    org_role,
    plan_access,
    revoke_statements,
)

__all__ = [
    "AnalystAccess",
    "GrantError",
    "Limits",
    "Password",
    "Relation",
    "analyst_relations",
    "apply_statements",
    "grant_statements",
    "org_role",
    "plan_access",
    "revoke_statements",
]
