"""Analysts' direct ClickHouse access: roles, row policies, profiles and quotas per org.

See `app.analyst_access.grants` for what is granted and why, `app.analyst_access.cli` for the
`clickpulse analysts grant|revoke` commands, and docs/analysts.md for operators.
"""

from app.analyst_access.grants import (
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
