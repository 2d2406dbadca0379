"""ClickHouse access control for analysts who query ClickHouse with their own client (server
mode): for org N a role holding SELECT on our tables and views only, a row policy `org_id = N`
on each, a read-only settings profile and a quota, and a user granted the role — because such a
client bypasses the app's compiler, ClickHouse itself must enforce the tenant rule. Long
because it plans and renders every statement kind (role, grants, policies, profile, quota,
user, revoke) with their checks.

The relations come from the rendered migrations, so a new
table or view is covered without editing this file; every identifier is validated and quoted
and no plaintext password appears in a statement. docs/analysts.md has the statements.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from app.migrate import Migration, split_statements
from app.querybuilder.catalog import INTERNAL_TABLES, MAX_ORG_ID

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
    "validate_cluster",
    "validate_org",
    "validate_user",
]

# A ClickHouse user name an operator may give: no quotes, backticks, spaces, `@` (ClickHouse's
# user@host syntax), semicolons or control characters, even though quoting would cope with them.
_USER = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_CLUSTER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_DATABASE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
#: Name suffixes of plumbing: shard-local storage behind a Distributed table, dead letters.
INTERNAL_SUFFIXES = ("_local", "_queue", "_errors", "_error")
#: Engines whose SELECT consumes a stream or returns nothing: never an analyst's table.
QUEUE_ENGINES = frozenset(
    {"kafka", "null", "rabbitmq", "nats", "filelog", "s3queue", "azurequeue", "redisstreams"}
)

ORG_COLUMN = "org_id"


class GrantError(ValueError):
    """Bad input (user, org, cluster, password) or migrations that cannot be granted safely."""


# -- validation ---------------------------------------------------------------------------------


def validate_user(name: object) -> str:
    """`name` if it is an acceptable ClickHouse user name, else `GrantError`."""
    if not isinstance(name, str) or not _USER.fullmatch(name):
        raise GrantError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter"
        )
    return name


def validate_org(org: object) -> int:
    """`org` if it is an org id (an int in 1..2^32-1, not a bool or a string), else `GrantError`."""
    if type(org) is not int or not 1 <= org <= MAX_ORG_ID:
        raise GrantError(f"invalid org id {org!r}: must be an integer from 1 to {MAX_ORG_ID}")
    return org


def validate_cluster(name: object) -> str | None:
    """A cluster name (as in remote_servers) or None; `GrantError` on anything else."""
    if name is None or name == "":
        return None
    if not isinstance(name, str) or not _CLUSTER.fullmatch(name):
        raise GrantError(f"invalid cluster name {name!r}")
    return name


def _validate_database(name: str) -> str:
    if not isinstance(name, str) or not _DATABASE.fullmatch(name):
        raise GrantError(f"invalid database name {name!r}")
    return name


def org_role(database: str, org: int) -> str:
    """The name shared by org N's role, row policies, settings profile and quota.

    Prefixed by the database so two ClickPulse deployments on one server do not collide.
    """
    return f"{_validate_database(database)}_org_{validate_org(org)}"


# -- quoting (sqlglot renders every identifier and literal) -----------------------------------


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="clickhouse")


def _table(database: str, name: str) -> str:
    return exp.table_(name, db=database, quoted=True).sql(dialect="clickhouse")


def _string(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="clickhouse")


def _org_condition(org: int) -> exp.Expression:
    return exp.EQ(
        this=exp.column(ORG_COLUMN, quoted=True), expression=exp.Literal.number(validate_org(org))
    )


# -- the relations an analyst may query ----------------------------------------------------------

RelationKind = Literal["table", "view", "distributed"]


@dataclass(frozen=True, slots=True)
class Relation:
    """A table or view created by the migrations that an analyst may query."""

    name: str
    kind: RelationKind
    columns: tuple[str, ...]
    #: For a Distributed table: the table holding its rows on each shard (`events_local`).
    local: str | None = None


@dataclass(slots=True)
class _Created:
    name: str
    kind: RelationKind
    engine: str | None
    columns: list[str] | None  # None until resolved (CREATE TABLE x AS y)
    like: str | None = None  # CREATE TABLE x AS y: y's name
    local: str | None = None
    sources: list[str] = field(default_factory=list)  # a view's FROM tables (for `*`)
    star: bool = False


def _engine(create: exp.Create) -> exp.EngineProperty | None:
    props = create.args.get("properties")
    if not props:
        return None
    return next((p for p in props.expressions if isinstance(p, exp.EngineProperty)), None)


def _engine_name(prop: exp.EngineProperty | None) -> str | None:
    if prop is None:
        return None
    node = prop.this
    if isinstance(node, exp.Anonymous):
        return str(node.this)
    if isinstance(node, exp.Func):
        return node.sql_name()
    return node.name or node.sql(dialect="clickhouse")


def _distributed_local(prop: exp.EngineProperty, database: str) -> str | None:
    """Distributed(cluster, db, table, …): the shard-local table, when it is in `database`."""
    args = prop.this.expressions if isinstance(prop.this, exp.Func) else []
    if len(args) < 3:
        return None
    db, table = (a.name if isinstance(a, exp.Literal | exp.Identifier) else None for a in args[1:3])
    return table if db == database else None


def _is_materialized(create: exp.Create) -> bool:
    props = create.args.get("properties")
    return bool(props) and any(
        isinstance(p, exp.MaterializedProperty | exp.ToTableProperty) for p in props.expressions
    )


def _classify(statement: str, database: str, where: str) -> _Created | None:
    if not re.match(r"\s*create\b", statement, re.IGNORECASE):
        return None
    try:
        tree = sqlglot.parse_one(statement, dialect="clickhouse")
    except SqlglotError as exc:
        raise GrantError(f"{where}: cannot parse a CREATE statement to classify it: {exc}") from exc
    if not isinstance(tree, exp.Create):
        # sqlglot falls back to an opaque Command for syntax it does not model; a table or
        # view hidden in one would silently miss its policy, so refuse instead.
        first = statement.strip().splitlines()[0][:100]
        raise GrantError(f"{where}: cannot classify {first!r}; sqlglot does not parse it")
    kind = (tree.kind or "").upper()
    if kind not in ("TABLE", "VIEW"):
        return None  # databases, functions, dictionaries (never granted)
    target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    if not isinstance(target, exp.Table) or target.db != database:
        return None
    if kind == "VIEW":
        if _is_materialized(tree):
            return None  # materialized views are pipeline plumbing writing into tables
        select = tree.expression
        if not isinstance(select, exp.Query):
            raise GrantError(f"{where}: view {target.name} has no SELECT")
        names = [n for n in select.named_selects if n != "*"]
        star = any(isinstance(p, exp.Star) or p.is_star for p in select.selects)
        sources = [t.name for t in select.find_all(exp.Table) if t.db in ("", database)]
        return _Created(target.name, "view", None, names, sources=sources, star=star)
    prop = _engine(tree)
    engine = _engine_name(prop)
    if isinstance(tree.this, exp.Schema):
        columns: list[str] | None = [c.name for c in tree.this.expressions]
        like = None
    else:
        source = tree.expression
        columns, like = None, source.name if isinstance(source, exp.Table) else None
    created = _Created(target.name, "table", engine, columns, like=like)
    if prop is not None and (engine or "").lower() == "distributed":
        created.kind = "distributed"
        created.local = _distributed_local(prop, database)
    return created


def _internal(c: _Created) -> bool:
    return (
        c.name in INTERNAL_TABLES
        or c.name.endswith(INTERNAL_SUFFIXES)
        or (c.engine or "").lower() in QUEUE_ENGINES
    )


def analyst_relations(migrations: Iterable[Migration], database: str) -> tuple[Relation, ...]:
    """The tables and views of `database` an analyst may query, in migration order.

    Parsed from the CREATE TABLE / CREATE VIEW statements of the rendered migrations
    (`app.migrate.render_clickhouse`); materialized views, queues, shard-local tables, error
    tables and the migration ledger are internal. Raises `GrantError` when a relation cannot be
    classified, or exposes no `org_id` column (a row policy could not isolate it).
    """
    _validate_database(database)
    created: dict[str, _Created] = {}
    for m in migrations:
        for idx, statement in enumerate(split_statements(m.text), start=1):
            c = _classify(statement, database, f"{m.name} statement {idx}")
            if c is not None:
                created[c.name] = c

    def columns_of(name: str, seen: frozenset[str] = frozenset()) -> list[str]:
        c = created.get(name)
        if c is None or name in seen:
            return []
        cols = list(c.columns or [])
        if c.like:
            cols += columns_of(c.like, seen | {name})
        if c.star:
            for source in c.sources:
                cols += columns_of(source, seen | {name})
        return list(dict.fromkeys(cols))

    out = []
    for c in created.values():
        if _internal(c):
            continue
        columns = tuple(columns_of(c.name))
        if ORG_COLUMN not in columns:
            raise GrantError(
                f"{c.name} has no {ORG_COLUMN} column, so no row policy can isolate it: give it "
                "one, or list it in app/querybuilder/catalog.py INTERNAL_TABLES if people never "
                "query it"
            )
        if c.kind == "distributed" and (c.local is None or c.local not in created):
            raise GrantError(f"Distributed table {c.name}: cannot find its shard-local table")
        out.append(Relation(c.name, c.kind, columns, c.local))
    return tuple(out)


# -- limits, password, plan ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-query limits (settings profile) and per-user hourly quota of an analyst.

    Every value must be positive: in ClickHouse 0 means "unlimited" for all of them.
    """

    max_execution_time: int = 60  # seconds per query
    max_result_rows: int = 1_000_000
    max_memory_usage: int = 4_000_000_000  # bytes per query
    max_concurrent_queries: int = 4
    queries_per_hour: int = 1_000
    result_rows_per_hour: int = 20_000_000
    read_rows_per_hour: int = 20_000_000_000
    execution_time_per_hour: int = 3_600  # seconds of query time

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value <= 0:
                raise GrantError(f"limit {f.name} must be a positive integer, got {value!r}")

    def profile_settings(self) -> dict[str, int | str]:
        """The settings profile, every entry pinned with CONST.

        readonly = 1 (not 2): no SET at all, so no present or future setting can be used to
        loosen a limit or a policy (e.g. `serialize_query_plan = 1` makes shards skip row
        policies of local tables), and CREATE TEMPORARY TABLE, which every table function
        needs, is refused even if it were granted.
        """
        return {
            "readonly": 1,
            "max_execution_time": self.max_execution_time,
            "max_result_rows": self.max_result_rows,
            # throw, not break: a silently truncated result reads as a wrong number.
            "result_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_usage,
            "max_concurrent_queries_for_user": self.max_concurrent_queries,
            "serialize_query_plan": 0,
        }

    def quota(self) -> dict[str, int]:
        """The quota's MAX values for one hour, keyed by ClickHouse's quota resource names."""
        return {
            "queries": self.queries_per_hour,
            "result_rows": self.result_rows_per_hour,
            "read_rows": self.read_rows_per_hour,
            "execution_time": self.execution_time_per_hour,
        }


@dataclass(frozen=True, slots=True)
class Password:
    """A password as ClickHouse stores it: SHA-256 hex of (password + salt), and the salt."""

    sha256_hex: str
    salt: str | None = None

    def __post_init__(self) -> None:
        if not _SHA256_HEX.fullmatch(self.sha256_hex):
            raise GrantError("a password hash must be 64 hexadecimal characters (SHA-256)")
        if self.salt is not None and not re.fullmatch(r"[0-9a-f]{16,64}", self.salt):
            raise GrantError("a password salt must be 16-64 lowercase hexadecimal characters")

    @classmethod
    def from_sha256_hex(cls, value: str) -> Password:
        """An unsalted hash the operator computed (`echo -n PASSWORD | sha256sum`)."""
        if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
            raise GrantError("--password-sha256 must be 64 hexadecimal characters")
        return cls(value.lower())

    @classmethod
    def from_plaintext(cls, password: str) -> Password:
        """Hash `password` here with a random salt, so the statement never carries it."""
        if not password:
            raise GrantError("the password is empty")
        salt = secrets.token_hex(16)
        return cls(hashlib.sha256((password + salt).encode()).hexdigest(), salt)


@dataclass(frozen=True, slots=True)
class AnalystAccess:
    """Everything granted to org N's analysts, independent of how it is rendered."""

    database: str
    org: int
    relations: tuple[Relation, ...]
    limits: Limits = Limits()
    #: The cluster's remote_servers has an interserver <secret>, so shards run a Distributed
    #: query as the analyst and enforce the policies of the shard-local tables.
    interserver_secret: bool = False

    @property
    def role(self) -> str:
        return org_role(self.database, self.org)

    @property
    def condition(self) -> str:
        """The row policy's USING expression."""
        return _org_condition(self.org).sql(dialect="clickhouse")

    @property
    def select_targets(self) -> tuple[str, ...]:
        """Tables and views granted SELECT: the relations, and the shard-local table behind
        each Distributed one (a Distributed read runs as the analyst on the local shard)."""
        names: list[str] = []
        for r in self.relations:
            names.append(r.name)
            if r.local:
                names.append(r.local)
        return tuple(dict.fromkeys(names))

    @property
    def policy_targets(self) -> tuple[str, ...]:
        """Tables and views carrying the row policy.

        ClickHouse 26.9 refuses to read a Distributed table that has a row policy (the filter
        cannot travel to remote shards) and asks for it on the underlying tables instead. Those
        are enforced on a remote shard only when it runs the query as the analyst (interserver
        secret); without that assurance the Distributed table keeps its policy too and reads of
        it fail closed.
        """
        names: list[str] = []
        for r in self.relations:
            if r.kind != "distributed" or not self.interserver_secret:
                names.append(r.name)
            if r.local:
                names.append(r.local)
        return tuple(dict.fromkeys(names))


def plan_access(
    *,
    database: str,
    org: int,
    relations: Iterable[Relation],
    limits: Limits | None = None,
    interserver_secret: bool = False,
) -> AnalystAccess:
    """Validate the inputs and bundle what org `org`'s role is given."""
    relations = tuple(relations)
    if not relations:
        raise GrantError("the migrations create no table an analyst could query")
    return AnalystAccess(
        database=_validate_database(database),
        org=validate_org(org),
        relations=relations,
        limits=limits or Limits(),
        interserver_secret=interserver_secret,
    )


# -- rendering -----------------------------------------------------------------------------------


def _on_cluster(cluster: str | None) -> str:
    return f" ON CLUSTER {_ident(cluster)}" if cluster else ""


def _setting_value(value: int | str) -> str:
    return str(value) if isinstance(value, int) else _string(value)


def grant_statements(
    access: AnalystAccess,
    *,
    user: str,
    password: Password | None = None,
    cluster: str | None = None,
) -> list[str]:
    """The statements that give `user` read access to `access.org`'s rows, in a safe order.

    Row policies exist before any SELECT is granted, so no moment exists where the role can
    read unfiltered rows. With `password`, the user is (re)created and ends up holding only this
    org's role; without it the user must already exist and is given the role and profile.
    Re-running is idempotent and brings the role to exactly these grants (after a migration
    that adds a table or view, run it again).
    """
    user = validate_user(user)
    cluster = validate_cluster(cluster)
    on = _on_cluster(cluster)
    role = _ident(access.role)
    db = access.database
    out = [
        f"CREATE ROLE IF NOT EXISTS {role}{on}",
        # The role holds exactly what follows, whatever was granted to it by hand before.
        f"REVOKE{on} ALL ON *.* FROM {role}",
    ]
    for name in access.policy_targets:
        out.append(
            f"CREATE ROW POLICY OR REPLACE {role}{on} ON {_table(db, name)} "
            f"AS PERMISSIVE FOR SELECT USING {access.condition} TO {role}"
        )
    settings = ", ".join(
        f"{name} = {_setting_value(value)} CONST"
        for name, value in access.limits.profile_settings().items()
    )
    out.append(f"CREATE SETTINGS PROFILE OR REPLACE {role}{on} SETTINGS {settings} TO {role}")
    maxes = ", ".join(f"{name} = {value}" for name, value in access.limits.quota().items())
    out.append(
        f"CREATE QUOTA OR REPLACE {role}{on} KEYED BY user_name "
        f"FOR INTERVAL 1 hour MAX {maxes} TO {role}"
    )
    for name in access.select_targets:
        out.append(f"GRANT{on} SELECT ON {_table(db, name)} TO {role}")
    quser = _ident(user)
    profile = _string(access.role)
    if password is not None:
        salt = f" SALT {_string(password.salt)}" if password.salt else ""
        out.append(
            f"CREATE USER OR REPLACE {quser}{on} "
            f"IDENTIFIED WITH sha256_hash BY {_string(password.sha256_hex)}{salt} "
            f"DEFAULT DATABASE {_ident(db)} DEFAULT ROLE NONE SETTINGS PROFILE {profile}"
        )
    else:
        # The profile on the user too, not only on the role: `SET ROLE NONE` must not shed it.
        out.append(f"ALTER USER {quser}{on} SETTINGS PROFILE {profile}")
    out.append(f"GRANT{on} {role} TO {quser}")
    out.append(f"ALTER USER {quser}{on} DEFAULT ROLE {role}")
    return out


def revoke_statements(
    access: AnalystAccess,
    *,
    user: str | None = None,
    keep_user: bool = False,
    drop_org: bool = False,
    cluster: str | None = None,
) -> list[str]:
    """The statements undoing `grant_statements`.

    `user`: drop that user (or, with `keep_user`, only take this org's role from it).
    `drop_org`: drop the org's role, row policies, profile and quota, which ends access for
    every analyst of the org. Access ends first (user, then role and its grants); row policies
    go last, so no moment exists where a grant outlives its policy.
    """
    if user is None and not drop_org:
        raise GrantError("nothing to revoke: give a user (--user), the org (--drop-org), or both")
    cluster = validate_cluster(cluster)
    on = _on_cluster(cluster)
    role = _ident(access.role)
    out = []
    if user is not None:
        quser = _ident(validate_user(user))
        if keep_user:
            out.append(f"REVOKE{on} {role} FROM {quser}")
        else:
            out.append(f"DROP USER IF EXISTS {quser}{on}")
    if drop_org:
        out.append(f"DROP ROLE IF EXISTS {role}{on}")
        for name in access.policy_targets:
            out.append(f"DROP ROW POLICY IF EXISTS {role} ON {_table(access.database, name)}{on}")
        out.append(f"DROP QUOTA IF EXISTS {role}{on}")
        out.append(f"DROP SETTINGS PROFILE IF EXISTS {role}{on}")
    return out


_SECRET_LITERALS = re.compile(r"BY '[^']*'( SALT '[^']*')?")


def redact(statement: str) -> str:
    """The statement with password hash and salt elided, for error messages and logs."""
    return _SECRET_LITERALS.sub("BY '…'", statement)


def apply_statements(
    run: Callable[[str], None],
    statements: Iterable[str],
    *,
    on_done: Callable[[str], None] | None = None,
) -> int:
    """Run each statement in order (e.g. `ServerClickHouse.command_sync`); stop at the first
    failure with a `GrantError` naming it. Returns how many ran."""
    statements = list(statements)
    for idx, statement in enumerate(statements, start=1):
        try:
            run(statement)
        except Exception as exc:
            raise GrantError(
                f"statement {idx} of {len(statements)} failed ({redact(statement)[:160]}): {exc}"
            ) from exc
        if on_done:
            on_done(statement)
    return len(statements)
