"""`clickpulse analysts grant|revoke`: the relation set, the DDL, ClickHouse's parser, hostile input.

* The relations granted are derived from the rendered migrations; they are compared with what
  the migrations actually create in chDB (`system.tables`), and with the CREATE statements of
  the cluster rendering.
* Every statement, single-server and ON CLUSTER, grant and revoke, goes through ClickHouse's own
  parser in chDB twice: `EXPLAIN AST` (top node kind checked) and `formatQuery` (the canonical
  re-rendering is asserted on, so quoting and ON CLUSTER are checked as ClickHouse reads them).
* chDB refuses to *execute* access-control DDL (no writable access storage), so the behaviour is
  checked by having ClickHouse enforce the same plan (grants, row-policy condition, profile
  with its CONST constraints) for a user defined in users.xml, in a chDB subprocess started
  with that config: reads through every table and view return only the org's rows, and
  writes, SET, table functions and ungranted tables are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from app.analyst_access.grants import (
    AnalystAccess,
    GrantError,
    Limits,
    Password,
    analyst_relations,
    apply_statements,
    grant_statements,
    org_role,
    plan_access,
    revoke_statements,
    validate_cluster,
    validate_org,
    validate_user,
)
from app.cli import main
from app.clickhouse import ClickHouse
from app.migrate import Migration, render_clickhouse

REPO = Path(__file__).resolve().parents[2]
ORG = 7
USER = "jane.doe"
HASH = hashlib.sha256(b"correct horse").hexdigest()
SUBPROCESS_GUARD_S = 300  # hang guard only; nothing asserts on time


def _access(database: str = "clickpulse", cluster: str | None = None, **kw) -> AnalystAccess:
    migrations = render_clickhouse(database=database, cluster=cluster)
    return plan_access(
        database=database, org=ORG, relations=analyst_relations(migrations, database), **kw
    )


# -- the relation set ---------------------------------------------------------------------------


def test_relations_are_the_tables_and_views_the_migrations_create_minus_internal(
    ch: ClickHouse,
) -> None:
    created = ch.query_sync(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}",
        {"db": ch.database},
    ).rows
    internal = {"events_queue", "schema_migrations"}
    expected = {
        name: "view" if engine == "View" else "table"
        for name, engine in created
        if engine != "MaterializedView" and name not in internal
    }
    relations = analyst_relations(render_clickhouse(database=ch.database), ch.database)

    assert {r.name: r.kind for r in relations} == expected
    assert {"events", "rollup_1s", "rollup_detail_1d", "metrics_1m", "metrics_detail_1d"} <= set(
        expected
    )
    assert all("org_id" in r.columns for r in relations)


def test_cluster_relations_are_the_distributed_tables_and_views() -> None:
    migrations = render_clickhouse(database="cp", cluster="c1")
    text = "\n".join(m.text for m in migrations)
    # An independent reading of the same statements: every CREATE TABLE / CREATE VIEW (not
    # MATERIALIZED) minus the plumbing (shard-local storage, the queue, dead letters).
    created = set(re.findall(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS cp\.(\w+)", text))
    internal = {n for n in created if n.endswith("_local")} | {
        "events_queue",
        "events_queue_errors",
    }
    relations = analyst_relations(migrations, "cp")

    assert {r.name for r in relations} == created - internal
    distributed = {r.name: r.local for r in relations if r.kind == "distributed"}
    assert distributed == {
        name: f"{name}_local" for name in created - internal if f"{name}_local" in created
    }
    assert "events" in distributed and "metrics_1m" not in distributed


def test_a_new_table_or_view_gets_a_policy_and_one_without_org_id_stops_the_grant() -> None:
    base = render_clickhouse(database="cp")
    extra = Migration(
        "clickhouse/0099_new.sql",
        "CREATE TABLE IF NOT EXISTS cp.sessions (org_id UInt32, id String) "
        "ENGINE = MergeTree ORDER BY (org_id, id);\n"
        "CREATE VIEW IF NOT EXISTS cp.session_count AS "
        "SELECT org_id, count() AS n FROM cp.sessions GROUP BY org_id;\n"
        "CREATE VIEW IF NOT EXISTS cp.all_sessions AS SELECT * FROM cp.sessions;",
    )
    access = plan_access(database="cp", org=ORG, relations=analyst_relations([*base, extra], "cp"))
    ddl = grant_statements(access, user=USER)
    for name in ("sessions", "session_count", "all_sessions"):
        assert (
            f'CREATE ROW POLICY OR REPLACE "cp_org_7" ON "cp"."{name}" AS PERMISSIVE FOR SELECT '
            f'USING "org_id" = 7 TO "cp_org_7"' in ddl
        )
        assert f'GRANT SELECT ON "cp"."{name}" TO "cp_org_7"' in ddl

    no_org = Migration(
        "clickhouse/0100_lookup.sql",
        "CREATE TABLE IF NOT EXISTS cp.countries (code String) ENGINE = MergeTree ORDER BY code",
    )
    with pytest.raises(GrantError, match="countries has no org_id column"):
        analyst_relations([*base, no_org], "cp")
    # A view hiding org_id behind an alias cannot be policed either.
    renamed = Migration(
        "clickhouse/0101_view.sql",
        "CREATE VIEW IF NOT EXISTS cp.v AS SELECT org_id AS tenant, count() AS n "
        "FROM cp.events GROUP BY tenant",
    )
    with pytest.raises(GrantError, match="v has no org_id column"):
        analyst_relations([*base, renamed], "cp")
    # Syntax sqlglot does not model must not hide a view from the policies.
    opaque = Migration(
        "clickhouse/0102_definer.sql",
        "CREATE VIEW cp.d DEFINER = admin SQL SECURITY DEFINER AS SELECT * FROM cp.events",
    )
    with pytest.raises(GrantError, match="cannot classify"):
        analyst_relations([*base, opaque], "cp")


# -- the DDL --------------------------------------------------------------------------------------


def test_grant_ddl_single_server_grants_select_and_a_policy_on_every_relation_and_nothing_else():
    access = _access()
    ddl = grant_statements(access, user=USER, password=Password.from_sha256_hex(HASH))
    names = [r.name for r in access.relations]
    role = '"clickpulse_org_7"'

    policies = [s for s in ddl if s.startswith("CREATE ROW POLICY")]
    grants = [s for s in ddl if s.startswith("GRANT SELECT")]
    assert policies == [
        f'CREATE ROW POLICY OR REPLACE {role} ON "clickpulse"."{n}" AS PERMISSIVE FOR SELECT '
        f'USING "org_id" = 7 TO {role}'
        for n in names
    ]
    assert grants == [f'GRANT SELECT ON "clickpulse"."{n}" TO {role}' for n in names]
    # No moment exists where the role can read a relation that has no policy yet.
    assert ddl.index(policies[-1]) < ddl.index(grants[0])
    # Nothing but SELECT: the only other GRANT hands the role to the user.
    assert [s for s in ddl if s.startswith("GRANT") and s not in grants] == [
        f'GRANT {role} TO "jane.doe"'
    ]
    assert ddl[:2] == [f"CREATE ROLE IF NOT EXISTS {role}", f"REVOKE ALL ON *.* FROM {role}"]
    assert ddl[-2:] == [f'GRANT {role} TO "jane.doe"', f'ALTER USER "jane.doe" DEFAULT ROLE {role}']
    user = next(s for s in ddl if s.startswith("CREATE USER"))
    assert user == (
        f"CREATE USER OR REPLACE \"jane.doe\" IDENTIFIED WITH sha256_hash BY '{HASH}' "
        "DEFAULT DATABASE \"clickpulse\" DEFAULT ROLE NONE SETTINGS PROFILE 'clickpulse_org_7'"
    )
    assert not any("ON CLUSTER" in s for s in ddl)
    forbidden = re.compile(r"\b(INSERT|ALTER TABLE|dictGet|FILE|URL|REMOTE|S3|TEMPORARY)\b")
    assert not [s for s in ddl if forbidden.search(s)]


def test_profile_and_quota_pin_the_limits() -> None:
    limits = Limits(max_execution_time=30, max_result_rows=500, queries_per_hour=99)
    ddl = grant_statements(_access(limits=limits), user=USER)
    profile = next(s for s in ddl if s.startswith("CREATE SETTINGS PROFILE"))
    quota = next(s for s in ddl if s.startswith("CREATE QUOTA"))
    assert profile == (
        'CREATE SETTINGS PROFILE OR REPLACE "clickpulse_org_7" SETTINGS readonly = 1 CONST, '
        "max_execution_time = 30 CONST, max_result_rows = 500 CONST, "
        "result_overflow_mode = 'throw' CONST, max_memory_usage = 4000000000 CONST, "
        "max_concurrent_queries_for_user = 4 CONST, serialize_query_plan = 0 CONST "
        'TO "clickpulse_org_7"'
    )
    assert quota == (
        'CREATE QUOTA OR REPLACE "clickpulse_org_7" KEYED BY user_name FOR INTERVAL 1 hour '
        "MAX queries = 99, result_rows = 20000000, read_rows = 20000000000, "
        'execution_time = 3600 TO "clickpulse_org_7"'
    )
    # Without a password the user exists already: it still gets the profile on itself.
    assert "ALTER USER \"jane.doe\" SETTINGS PROFILE 'clickpulse_org_7'" in ddl
    assert not any(s.startswith("CREATE USER") for s in ddl)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(GrantError, match="positive integer"):
            Limits(max_execution_time=bad)  # 0 would mean "unlimited" to ClickHouse


def test_cluster_distributed_tables_keep_their_policy_unless_the_cluster_has_a_secret() -> None:
    closed = _access(cluster="c1")
    assert "events" in closed.policy_targets and "events_local" in closed.policy_targets
    assert "events_local" in closed.select_targets
    trusted = _access(cluster="c1", interserver_secret=True)
    # ClickHouse 26.9 refuses reads of a Distributed table that has a row policy; with a
    # secret the shards enforce the local tables' policies for the analyst.
    assert "events" not in trusted.policy_targets
    assert {"events_local", "rollup_1s_local", "metrics_1m"} <= set(trusted.policy_targets)
    assert trusted.select_targets == closed.select_targets
    assert not any(
        t.endswith("_errors") or t.startswith("events_queue") for t in closed.select_targets
    )


def test_password_from_env_is_hashed_with_a_salt_and_never_printed() -> None:
    plain = "s3cret-'; DROP USER default; --"
    password = Password.from_plaintext(plain)
    assert (
        password.salt
        and password.sha256_hex == hashlib.sha256((plain + password.salt).encode()).hexdigest()
    )
    assert Password.from_plaintext(plain).salt != password.salt
    ddl = "\n".join(grant_statements(_access(), user=USER, password=password))
    assert plain not in ddl and "s3cret" not in ddl
    assert f"BY '{password.sha256_hex}' SALT '{password.salt}'" in ddl
    assert plain not in repr(password)
    with pytest.raises(GrantError):
        Password.from_plaintext("")


# -- ClickHouse's parser ----------------------------------------------------------------------

EXPECTED_NODE = {
    "CREATE ROLE": "CreateRoleQuery",
    "REVOKE": "GrantQuery",
    "GRANT": "GrantQuery",
    "CREATE ROW POLICY": "CREATE ROW POLICY or ALTER ROW POLICY query",
    "CREATE SETTINGS PROFILE": "CreateSettingsProfileQuery",
    "CREATE QUOTA": "CreateQuotaQuery",
    "CREATE USER": "CreateUserQuery",
    "ALTER USER": "CreateUserQuery",
    "DROP USER": "DROP USER query",
    "DROP ROLE": "DROP ROLE query",
    "DROP ROW POLICY": "DROP ROW POLICY query",
    "DROP QUOTA": "DROP QUOTA query",
    "DROP SETTINGS PROFILE": "DROP SETTINGS PROFILE query",
}


def _clickhouse_reads(ch: ClickHouse, statement: str) -> str:
    """ClickHouse's canonical text of `statement`, after checking EXPLAIN AST's node kind."""
    kind = max((k for k in EXPECTED_NODE if statement.startswith(k)), key=len)
    tree = ch.query_sync("EXPLAIN AST " + statement).rows
    assert tree[0][0].split(" (children")[0] == EXPECTED_NODE[kind], statement
    # formatQuery takes the statement as a bound value and refuses multi-statement text.
    return ch.query_sync("SELECT formatQuery({q:String})", {"q": statement}).scalar()


@pytest.mark.parametrize("cluster", [None, "c1"])
def test_clickhouse_parses_every_statement(ch: ClickHouse, cluster: str | None) -> None:
    access = _access(cluster=cluster)
    ddl = grant_statements(
        access, user=USER, password=Password.from_plaintext("pw"), cluster=cluster
    )
    ddl += grant_statements(access, user=USER, cluster=cluster)
    ddl += revoke_statements(access, user=USER, drop_org=True, cluster=cluster)
    ddl += revoke_statements(access, user=USER, keep_user=True, cluster=cluster)

    canonical = [_clickhouse_reads(ch, s) for s in ddl]

    on_cluster = [c.count(" ON CLUSTER c1") for c in canonical]
    assert on_cluster == [1 if cluster else 0] * len(ddl)
    assert not any("ON CLUSTER" in c for c in canonical) or cluster
    on = " ON CLUSTER c1" if cluster else ""
    granted = {
        m.group(1)
        for c in canonical
        if (m := re.fullmatch(rf"GRANT{on} SELECT ON clickpulse\.(\w+) TO clickpulse_org_7", c))
    }
    assert granted == set(access.select_targets)
    policies = {
        m.group(1)
        for c in canonical
        if (
            m := re.fullmatch(
                rf"CREATE ROW POLICY OR REPLACE clickpulse_org_7 ON clickpulse\.(\w+){on} "
                r"AS PERMISSIVE FOR SELECT USING org_id = 7 TO clickpulse_org_7",
                c,
            )
        )
    }
    assert policies == set(access.policy_targets)
    assert f"GRANT{on} clickpulse_org_7 TO `jane.doe`" in canonical
    assert f"DROP USER IF EXISTS `jane.doe`{on}" in canonical


# -- hostile input ---------------------------------------------------------------------------------

HOSTILE_USERS = [
    "",
    "jane'",
    'jane"',
    "jane`",
    "jane;DROP USER default",
    "jane\nGRANT ALL ON *.* TO jane",
    "jane doe",
    "jane@'%'",
    "-jane",
    "1jane",
    "jané",
    "a" * 65,
    None,
    7,
]


@pytest.mark.parametrize("name", HOSTILE_USERS)
def test_hostile_user_names_are_rejected(name: object) -> None:
    with pytest.raises(GrantError, match="invalid user name"):
        validate_user(name)
    with pytest.raises(GrantError):
        grant_statements(_access(), user=name)  # type: ignore[arg-type]
    with pytest.raises(GrantError):
        revoke_statements(_access(), user=name)  # type: ignore[arg-type]


@pytest.mark.parametrize("org", [0, -1, 2**32, "7", 7.0, True, None])
def test_bad_org_ids_are_rejected(org: object) -> None:
    with pytest.raises(GrantError, match="invalid org id"):
        validate_org(org)
    with pytest.raises(GrantError, match="invalid org id"):
        plan_access(database="cp", org=org, relations=_access().relations)  # type: ignore[arg-type]


@pytest.mark.parametrize("cluster", ["c1;DROP", "c 1", "c'1", "c`1", "c\n1"])
def test_hostile_cluster_names_are_rejected(cluster: str) -> None:
    with pytest.raises(GrantError, match="invalid cluster name"):
        validate_cluster(cluster)


@pytest.mark.parametrize(
    "value", ["", "abc", HASH[:-1], HASH + "0", HASH[:-1] + "g", f"{HASH[:60]}';--"]
)
def test_bad_password_hashes_are_rejected(value: str) -> None:
    with pytest.raises(GrantError, match="64 hexadecimal"):
        Password.from_sha256_hex(value)


def test_valid_names_are_quoted_as_one_identifier(ch: ClickHouse) -> None:
    ddl = grant_statements(_access(), user="a.b-c_d")
    assert _clickhouse_reads(ch, ddl[-1]) == "ALTER USER `a.b-c_d` DEFAULT ROLE clickpulse_org_7"
    assert org_role("clickpulse", 42) == "clickpulse_org_42"


# -- the command ------------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CLICKPULSE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_cli_grant_prints_the_statements(env, capsys) -> None:
    # Printing only: the URL selects server mode (a cluster needs one) but is never contacted.
    env.setenv("CLICKPULSE_CLICKHOUSE_URL", "http://127.0.0.1:9")
    env.setenv("CLICKPULSE_CLICKHOUSE_CLUSTER", "c9")
    env.setenv("ANALYST_PW", "hunter2-hunter2")
    rc = main(["analysts", "grant", "--org", "7", "--user", USER, "--password-env", "ANALYST_PW"])
    out, err = capsys.readouterr()
    statements = out.strip().split(";\n")
    assert rc == 0 and err == ""
    assert statements[0] == 'CREATE ROLE IF NOT EXISTS "clickpulse_org_7" ON CLUSTER "c9"'
    assert all('ON CLUSTER "c9"' in s for s in statements)
    assert "hunter2" not in out
    # The cluster rendering: the Distributed tables' local storage is covered too.
    assert 'GRANT ON CLUSTER "c9" SELECT ON "clickpulse"."events_local" TO "clickpulse_org_7"' in (
        statements
    )


def test_cli_revoke_and_the_refusals(env, capsys) -> None:
    assert main(["analysts", "revoke", "--org", "7", "--user", USER, "--drop-org"]) == 0
    out = capsys.readouterr().out.strip().split(";\n")
    assert out[:2] == ['DROP USER IF EXISTS "jane.doe"', 'DROP ROLE IF EXISTS "clickpulse_org_7"']
    assert out[-2:] == [
        'DROP QUOTA IF EXISTS "clickpulse_org_7"',
        'DROP SETTINGS PROFILE IF EXISTS "clickpulse_org_7";',
    ]

    assert main(["analysts", "revoke", "--org", "7"]) == 2
    assert main(["analysts", "grant", "--org", "0", "--user", USER]) == 2
    assert main(["analysts", "grant", "--org", "7", "--user", "x;y"]) == 2
    assert main(["analysts", "grant", "--org", "7", "--user", USER, "--password-env", "NOPE"]) == 2
    # --apply needs a ClickHouse server; nothing is printed when it refuses.
    assert main(["analysts", "grant", "--org", "7", "--user", USER, "--apply"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid org id 0" in err and "invalid user name 'x;y'" in err
    assert "NOPE is unset" in err and "CLICKPULSE_CLICKHOUSE_URL" in err
    with pytest.raises(SystemExit):
        main(["analysts", "grant", "--org", "seven", "--user", USER])


def test_apply_stops_at_the_first_refused_statement(ch: ClickHouse) -> None:
    # chDB's session user may not manage access (and chDB has no writable access storage):
    # the first statement is refused, and nothing after it runs.
    ran: list[str] = []

    def run(statement: str) -> None:
        ran.append(statement)
        ch.command_sync(statement)

    ddl = grant_statements(_access(ch.database), user=USER, password=Password.from_plaintext("p"))
    with pytest.raises(GrantError, match=r"statement 1 of \d+ failed \(CREATE ROLE") as info:
        apply_statements(run, ddl)
    assert ran == ddl[:1]
    assert "ACCESS_DENIED" in str(info.value)


# -- behaviour: ClickHouse enforcing the plan ----------------------------------------------------

_SETUP = """
import sys
from datetime import UTC, datetime
from app.clickhouse import EmbeddedClickHouse, close_embedded
from app.migrate import migrate_clickhouse, render_clickhouse
from tests.pipeline.events import queue_batch

data_dir, db = sys.argv[1], sys.argv[2]
ch = EmbeddedClickHouse(database=db, data_dir=data_dir)
migrate_clickhouse(ch, render_clickhouse(database=db))
now = datetime.now(UTC)
rows = [dict(org_id=org, ts=now, user_id=f"u{i}", value=1.0) for org in (7, 8) for i in range(4)]
ch.insert_sync("events_queue", queue_batch(rows))
ch.close()
close_embedded()
"""

# Runs as the restricted user; chdb directly, because the app's facade adds a SETTINGS clause
# to every query, which readonly = 1 refuses (as it refuses it from any client).
_PROBE = """
import json, re, sys
import chdb

data_dir, config, db = sys.argv[1], sys.argv[2], sys.argv[3]
relations, probes = json.loads(sys.argv[4]), json.loads(sys.argv[5])
conn = chdb.connect(f"{data_dir}?config-file={config}")

def run(sql):
    try:
        text = conn.query(sql, "JSONCompactEachRow").bytes().decode()
    except Exception as exc:
        match = re.search(r"\\(([A-Z_]+)\\)", str(exc))
        return match.group(1) if match else str(exc)
    return [json.loads(line) for line in text.splitlines() if line.strip()]

out = {"orgs": {}, "probes": {}}
for name in relations:
    out["orgs"][name] = run(f"SELECT org_id, count() FROM {db}.{name} GROUP BY org_id ORDER BY org_id")
for label, sql in probes.items():
    out["probes"][label] = run(sql)
print(json.dumps(out))
"""


def _users_xml(access: AnalystAccess) -> str:
    """The plan as a users.xml user: the profile with CONST constraints, the quota, the SELECT
    grants and the row-policy condition, exactly as `grant_statements` renders them."""
    settings = access.limits.profile_settings()
    profile = "".join(f"<{k}>{v}</{k}>" for k, v in settings.items())
    constraints = "".join(f"<{k}><const/></{k}>" for k in settings)
    quota = "".join(f"<{k}>{v}</{k}>" for k, v in access.limits.quota().items())
    grants = "".join(
        f"<query>GRANT SELECT ON {access.database}.{t}</query>" for t in access.select_targets
    )
    filters = "".join(
        f"<{t}><filter>{escape(access.condition)}</filter></{t}>" for t in access.policy_targets
    )
    return f"""<clickhouse>
  <profiles><default/><analyst>{profile}<constraints>{constraints}</constraints></analyst></profiles>
  <quotas><default/><analyst><interval><duration>3600</duration>{quota}</interval></analyst></quotas>
  <users><default>
    <password></password><networks><ip>::/0</ip></networks>
    <profile>analyst</profile><quota>analyst</quota>
    <grants>{grants}</grants>
    <databases><{access.database}>{filters}</{access.database}></databases>
  </default></users>
</clickhouse>"""


def _python(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_GUARD_S,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_clickhouse_enforcing_the_plan_shows_only_the_orgs_rows(tmp_path: Path) -> None:
    db = "cp"
    data_dir = tmp_path / "chdb"
    _python(textwrap.dedent(_SETUP), str(data_dir), db)

    access = plan_access(
        database=db,
        org=ORG,
        relations=analyst_relations(render_clickhouse(database=db), db),
        limits=Limits(max_result_rows=3),
    )
    (tmp_path / "users.xml").write_text(_users_xml(access))
    config = tmp_path / "config.xml"
    config.write_text(
        "<clickhouse><user_directories><users_xml>"
        f"<path>{tmp_path / 'users.xml'}</path>"
        "</users_xml></user_directories></clickhouse>"
    )
    probes = {
        "readonly": "SELECT getSetting('readonly'), getSetting('max_execution_time')",
        "insert": f"INSERT INTO {db}.events (org_id) VALUES (8)",
        "set": "SET max_execution_time = 3600",
        "settings_clause": f"SELECT count() FROM {db}.events SETTINGS max_result_rows = 1000",
        "plan_trick": "SET serialize_query_plan = 1",
        "file": "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "url": "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
        "remote": "SELECT * FROM remote('127.0.0.1:9', system.one)",
        "s3": "SELECT * FROM s3('http://127.0.0.1:9/bucket/k.csv', 'CSV', 'a String')",
        "queue": f"SELECT count() FROM {db}.events_queue",
        "ledger": f"SELECT count() FROM {db}.schema_migrations",
        "too_many_rows": f"SELECT * FROM {db}.events",
        "where_other_org": f"SELECT count() FROM {db}.events WHERE org_id = 8",
        "tables": f"SELECT arraySort(groupArray(name)) FROM system.tables WHERE database = '{db}'",
        "drop": f"DROP TABLE {db}.events",
        "temporary": "CREATE TEMPORARY TABLE t (a UInt8)",
    }
    relations = [r.name for r in access.relations]
    result = json.loads(
        _python(
            textwrap.dedent(_PROBE),
            str(data_dir),
            str(config),
            db,
            json.dumps(relations),
            json.dumps(probes),
        )
    )

    # Every table and view: rows of org 7 only (the data holds orgs 7 and 8 everywhere).
    for name in relations:
        orgs = result["orgs"][name]
        assert isinstance(orgs, list) and [row[0] for row in orgs] == [ORG], (name, orgs)
        assert orgs[0][1] > 0
    p = result["probes"]
    assert p["readonly"] == [[1, 60]]
    assert p["where_other_org"] == [[0]]
    assert p["too_many_rows"] == "TOO_MANY_ROWS_OR_BYTES"  # max_result_rows = 3, org 7 has 4
    # readonly = 1: no setting can change, by SET or by a SETTINGS clause.
    for label in ("set", "settings_clause", "plan_trick"):
        assert p[label] == "READONLY", (label, p[label])
    # Writes, DDL, table functions (the role has no CREATE TEMPORARY TABLE or source grants)
    # and the internal tables are refused.
    for label in ("insert", "drop", "temporary", "file", "url", "remote", "s3", "queue", "ledger"):
        assert p[label] == "ACCESS_DENIED", (label, p[label])
    assert p["tables"] == [[sorted(access.select_targets)]]
