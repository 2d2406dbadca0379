"""The ClickHouse DDL in every variant the settings can select (docs/pipeline.md, "Variants").

Each variant is rendered through `app.runtime.render_for` (so the settings → variant choice is
tested too), every statement is parsed by sqlglot and by ClickHouse's own parser (chDB:
`EXPLAIN AST`, `formatQuery`), and the schema the statements describe is checked: ON CLUSTER,
Replicated engines, Distributed tables over existing local tables, the Kafka settings, the
`_error` filters, and a materialized-view graph that reaches every table from events_queue.
The embedded rendering is frozen by checksum: deployed ledgers hold those checksums.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import sqlglot
from sqlglot import exp

from app.clickhouse import ClickHouseError
from app.config import Settings
from app.migrate import Migration, migrate_clickhouse, split_statements
from app.querybuilder import catalog
from app.runtime import render_for
from tests.pipeline.events import queue_batch

DB = "clickpulse"
CLUSTER = "clickpulse"
BROKERS = "kafka-1:9092,kafka-2:9092"
TOPIC = "clickpulse_events"
SERVER_URL = "http://default:@ch:8123"

VARIANTS: dict[str, Settings] = {
    "embedded": Settings(),
    "server": Settings(clickhouse_url=SERVER_URL),
    "server_kafka": Settings(clickhouse_url=SERVER_URL, kafka_brokers=BROKERS),
    "cluster": Settings(clickhouse_url=SERVER_URL, clickhouse_cluster=CLUSTER),
    "cluster_kafka": Settings(
        clickhouse_url=SERVER_URL,
        clickhouse_cluster=CLUSTER,
        kafka_brokers=BROKERS,
        kafka_num_consumers=3,
        kafka_flush_interval_ms=400,
    ),
}
KAFKA = {"server_kafka", "cluster_kafka"}
CLUSTERED = {"cluster", "cluster_kafka"}

# sha256 of each file's embedded rendering (database `clickpulse`, default TTL) as shipped.
# Deployed ledgers compare these; a change here means every deployment refuses to start.
# Add a file once it has shipped; never edit an entry.
FROZEN_EMBEDDED = {
    "migrations/clickhouse/0001_events.sql": "6154bcf34834490d3eae2a9564b55691c04232fc195122c9d7fc7fce7c31dd7d",
    "migrations/clickhouse/0002_rollups.sql": "b64aab64b30d1793e959fc55a361e4aaf323fa39044d54f29e40988a09756f15",
    "migrations/clickhouse/0003_rollup_details.sql": "5663eefeefd5175e4431dd9385688a3e96210c83f79d35372402aa4300da9e78",
    "materialized_views/0001_events_mv.sql": "ce60ce706dbe6921c28ca7aeda0d4b6bddc9d531cbd7f0e90368bafb8d50fbc5",
    "materialized_views/0002_rollup_1s_mv.sql": "aebbc6e6cee8e856a359a98118abe057a954d24e104750839e897c68113283b8",
    "materialized_views/0003_rollup_1m_mv.sql": "1572e4f956e9e4dda265c8ef15ac916b3babee23e9034da529fb8d968b4def43",
    "materialized_views/0004_rollup_1h_mv.sql": "16d267e8764b6ccaf028ad2373cf50c244c957fe036c0d6b123c7c677db04cdf",
    "materialized_views/0005_rollup_1d_mv.sql": "52a5a72e355725d35bc6f83171896ddc53dbca0c042f67299974a995c8929417",
    "materialized_views/0006_rollup_detail_1m_mv.sql": "b980ac41327b8a1168cc80e18d0c0865942d603a6e6a74f1893533b374f3a5e3",
    "materialized_views/0007_rollup_detail_1h_mv.sql": "9733189e8599f43548a07d7f661a6a05bc1fbca428241279c72b49be10cf4444",
    "materialized_views/0008_rollup_detail_1d_mv.sql": "51e7899c43cb0d2ae7afdcf3dfcb395519c726a3fe220f00950ccdfe6e3f1fcf",
}

# The tables the app reads by name (app/querybuilder/catalog.py; the guard allows exactly these).
APP_TABLES = [
    "events",
    "rollup_1s",
    "rollup_1m",
    "rollup_1h",
    "rollup_1d",
    "rollup_detail_1m",
    "rollup_detail_1h",
    "rollup_detail_1d",
]


def render(variant: str) -> list[Migration]:
    return render_for(VARIANTS[variant], DB)


# -- a model of what the statements create ------------------------------------------------------


@dataclass
class Obj:
    """One table or view a statement creates."""

    name: str
    kind: str  # "table", "view" or "mv"
    file: str
    position: int  # statement index over the whole rendering: creation order
    engine: str = ""
    engine_args: list[exp.Expression] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    like: str | None = None  # CREATE TABLE … AS <like>
    to: str | None = None  # materialized view target
    sources: set[str] = field(default_factory=set)
    select: exp.Expression | None = None


@dataclass
class Rendering:
    variant: str
    statements: list[tuple[str, str, exp.Expression]]  # (file, text, sqlglot tree)
    objects: dict[str, Obj]
    alters: list[tuple[str, int]]  # (table, statement position) of ALTER … MODIFY SETTING

    def engine_of(self, name: str) -> str:
        return self.objects[name].engine

    def columns_of(self, name: str) -> list[str]:
        obj = self.objects[name]
        return self.columns_of(obj.like) if obj.like else obj.columns


_ALTER_SETTING = re.compile(
    r"^ALTER TABLE (\w+)\.(\w+) (?:ON CLUSTER \w+ )?MODIFY SETTING \w+ = (?:\w+|'\w+')"
    r"(?:, \w+ = (?:\w+|'\w+'))*$"
)


# …nor ALTER … ADD/MATERIALIZE PROJECTION (rollup_1s' time-first order, migration 0007).
_ALTER_PROJECTION = re.compile(
    r"^ALTER TABLE (\w+)\.(\w+) (?:ON CLUSTER \w+ )?"
    r"(?:ADD PROJECTION IF NOT EXISTS \w+ \(SELECT \* ORDER BY \w+(?:, \w+)*\)"
    r"|MATERIALIZE PROJECTION \w+)$"
)


def _ours(table: exp.Table) -> str:
    assert table.db == DB, f"{table.sql('clickhouse')} is not qualified with the database"
    return table.name


def _model(variant: str) -> Rendering:
    statements, objects, alters = [], {}, []
    position = 0
    for migration in render(variant):
        for text in split_statements(migration.text):
            tree = sqlglot.parse_one(text, dialect="clickhouse")
            statements.append((migration.name, text, tree))
            position += 1
            if isinstance(tree, exp.Command):
                # sqlglot has no ALTER … MODIFY SETTING (it falls back to an opaque Command):
                # only that shape is let through, and ClickHouse's parser checks it below.
                flat = " ".join(text.split())
                setting = _ALTER_SETTING.match(flat) or _ALTER_PROJECTION.match(flat)
                assert setting, f"sqlglot could not parse: {text[:80]}"
                assert setting.group(1) == DB, text
                alters.append((setting.group(2), position))
                continue
            if not isinstance(tree, exp.Create):
                continue
            target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            kind = tree.args["kind"].lower()
            props = tree.args.get("properties")
            prop_list = props.expressions if props else []
            if kind == "view" and any(isinstance(p, exp.MaterializedProperty) for p in prop_list):
                kind = "mv"
            obj = Obj(_ours(target), kind, migration.name, position)
            if isinstance(tree.this, exp.Schema):
                obj.columns = [
                    c.name for c in tree.this.expressions if isinstance(c, exp.ColumnDef)
                ]
            for prop in prop_list:
                if isinstance(prop, exp.EngineProperty):
                    engine = prop.this
                    # sqlglot reads `ENGINE = Null` as the NULL literal
                    obj.engine = "Null" if isinstance(engine, exp.Null) else engine.name
                    obj.engine_args = list(getattr(engine, "expressions", []) or [])
                elif isinstance(prop, exp.SettingsProperty):
                    for eq in prop.expressions:
                        obj.settings[eq.this.name] = eq.expression.name
                elif isinstance(prop, exp.ToTableProperty):
                    obj.to = _ours(prop.this)
            query = tree.expression
            if isinstance(query, exp.Table):
                obj.like = _ours(query)
            elif query is not None:
                obj.select = query
                obj.sources = {_ours(t) for t in query.find_all(exp.Table)}
            assert obj.name not in objects, f"{obj.name} is created twice"
            objects[obj.name] = obj
    return Rendering(variant, statements, objects, alters)


@pytest.fixture(scope="module", params=list(VARIANTS))
def rendering(request) -> Rendering:
    return _model(request.param)


# -- the embedded rendering is frozen -------------------------------------------------------------


def test_embedded_rendering_of_shipped_files_is_byte_identical():
    rendered = {m.name: m.checksum for m in render("embedded")}
    assert set(FROZEN_EMBEDDED) <= set(rendered)
    changed = [name for name, digest in FROZEN_EMBEDDED.items() if rendered[name] != digest]
    assert changed == []


def test_server_without_cluster_or_kafka_renders_the_embedded_text():
    assert [(m.name, m.text) for m in render("server")] == [
        (m.name, m.text) for m in render("embedded")
    ]


def test_embedded_settings_never_render_kafka_or_a_cluster():
    # chDB has no Kafka engine (its topic is consumed by the in-process bridge) and is no cluster.
    with_kafka = Settings(kafka_brokers=BROKERS)
    assert [m.text for m in render_for(with_kafka, DB)] == [m.text for m in render("embedded")]
    with pytest.raises(ValueError, match="CLICKPULSE_CLICKHOUSE_CLUSTER needs"):
        Settings(clickhouse_cluster=CLUSTER)


def test_the_frozen_digests_are_sha256_of_the_text():
    first = render("embedded")[0]
    assert FROZEN_EMBEDDED[first.name] == hashlib.sha256(first.text.encode()).hexdigest()


# -- every statement parses, by sqlglot and by ClickHouse ------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_statement_parses_in_clickhouse(ch_root, variant):
    model = _model(variant)  # sqlglot: raises on a syntax error, Command = not understood
    assert len(model.statements) >= 17  # 9 tables, 8 views at least
    for name, text, tree in model.statements:
        ch_root.command_sync(f"EXPLAIN AST {text}")  # ClickHouse's parser; raises on a typo
        formatted = ch_root.query_sync("SELECT formatQuery({q:String})", {"q": text}).scalar()
        if isinstance(tree, exp.Command):  # an ALTER sqlglot cannot model (see _model)
            assert formatted.startswith(f"ALTER TABLE {DB}."), formatted
            continue
        # Both parsers read the same object and engine.
        created = tree.find(exp.Table)
        assert f"{DB}.{created.name}" in formatted, (name, formatted[:120])
        engine = re.search(r"ENGINE = (\w+)", formatted)
        if engine:
            assert engine.group(1) == model.objects[created.name].engine, name


def test_a_typo_fails_both_parsers(ch_root):
    broken = "CREATE TABLE x.t ON CLUSTER (a UInt8) ENGINE = Null"
    with pytest.raises(Exception, match="Syntax error"):
        ch_root.command_sync(f"EXPLAIN AST {broken}")
    with pytest.raises(sqlglot.errors.ParseError):
        sqlglot.parse_one("CREATE TABLE x.t (a UInt8 ENGINE = Null", dialect="clickhouse")


# -- structure per variant -------------------------------------------------------------------------


def test_on_cluster_exactly_in_cluster_variants(ch_root, rendering):
    for name, text, _ in rendering.statements:
        formatted = ch_root.query_sync("SELECT formatQuery({q:String})", {"q": text}).scalar()
        has = f"ON CLUSTER {CLUSTER}" in formatted
        assert has == (rendering.variant in CLUSTERED), (name, text[:100])


def test_merge_tree_engines_are_replicated_exactly_in_cluster_variants(rendering):
    paths = set()
    merge_trees = [o for o in rendering.objects.values() if o.engine.endswith("MergeTree")]
    assert len(merge_trees) >= 8
    for obj in merge_trees:
        replicated = obj.engine.startswith("Replicated")
        assert replicated == (rendering.variant in CLUSTERED), obj.name
        if replicated:
            path, replica = (a.name for a in obj.engine_args)
            assert path.startswith("/clickhouse/tables/{shard}/{database}/"), path
            assert replica == "{replica}"
            paths.add(path)
    if rendering.variant in CLUSTERED:
        assert len(paths) == len(merge_trees), "two tables share a replication path"


def test_settings_are_altered_on_existing_merge_tree_tables(rendering):
    # A Distributed table has no MergeTree settings: in a cluster an ALTER must name the local.
    for table, position in rendering.alters:
        obj = rendering.objects[table]
        assert obj.position < position and obj.engine.endswith("MergeTree"), (table, obj.engine)


def test_distributed_tables_cover_every_local_table(rendering):
    objs = rendering.objects
    distributed = {n: o for n, o in objs.items() if o.engine == "Distributed"}
    locals_ = {n for n in objs if n.endswith("_local")}
    if rendering.variant not in CLUSTERED:
        assert distributed == {} and locals_ == set()
        return
    assert {f"{n}_local" for n in distributed} == locals_
    for name, obj in distributed.items():
        cluster, database, local, sharding = obj.engine_args
        assert (cluster.name, database.name, local.name) == (CLUSTER, DB, f"{name}_local")
        assert obj.like == local.name, name
        target = objs[local.name]
        assert target.position < obj.position, f"{name} is created before {local.name}"
        assert target.engine.startswith("Replicated") or (
            name == "events_queue" and target.engine == "Null"
        ), (name, target.engine)
        if name == "events_queue_errors":  # no org to shard by: spread evenly
            assert isinstance(sharding, exp.Rand), name
        else:
            assert sharding.sql("clickhouse") == "cityHash64(org_id)", name


def test_app_table_names_are_unchanged_and_allowed_by_the_guard(rendering):
    objs = rendering.objects
    for name in APP_TABLES:
        assert name in catalog.METRIC_TABLES, name
        assert name in objs and objs[name].kind == "table", name
        if rendering.variant in CLUSTERED:
            assert objs[name].engine == "Distributed", name
        else:
            assert objs[name].engine.endswith("MergeTree"), name
    # ...and the app's columns are the same through either name.
    assert rendering.columns_of("events") == rendering.columns_of("events_queue")


def test_events_queue_engine_and_kafka_settings(rendering):
    queue = rendering.objects["events_queue"]
    if rendering.variant in KAFKA:
        consumers = VARIANTS[rendering.variant].kafka_num_consumers
        assert queue.engine == "Kafka"
        assert queue.settings == {
            "kafka_broker_list": BROKERS,
            "kafka_topic_list": TOPIC,
            "kafka_group_name": f"{DB}_events",
            "kafka_format": "JSONEachRow",
            "kafka_num_consumers": str(consumers),
            "kafka_thread_per_consumer": "1",
            "kafka_flush_interval_ms": str(VARIANTS[rendering.variant].kafka_flush_interval_ms),
            "kafka_handle_error_mode": "stream",
        }
        assert "events_queue_errors" in rendering.objects
    elif rendering.variant in CLUSTERED:
        assert queue.engine == "Distributed"
        assert rendering.engine_of("events_queue_local") == "Null"
    else:
        assert queue.engine == "Null" and queue.settings == {}
    text = "\n".join(t for _, t, _ in rendering.statements)
    assert "kafka_skip_broken_messages" not in text


def _error_filter(obj: Obj) -> str | None:
    where = obj.select.args.get("where") if obj.select is not None else None
    return where.this.sql("clickhouse") if where is not None else None


def test_views_of_the_kafka_queue_filter_errors_and_no_other_view_mentions_them(rendering):
    objs = rendering.objects
    mvs = [o for o in objs.values() if o.kind == "mv"]
    kafka = rendering.variant in KAFKA
    readers = [o for o in mvs if "events_queue" in o.sources]
    if kafka:
        assert {o.name for o in readers} == {
            "events_mv",
            "rollup_1s_mv",
            "rollup_detail_1m_mv",
            "events_queue_errors_mv",
        }
        for obj in readers:
            expected = "LENGTH(_error) > 0" if obj.to.startswith("events_queue_errors") else None
            assert _error_filter(obj) == (expected or "LENGTH(_error) = 0"), obj.name
    for obj in mvs:
        mentions = {c.name for c in obj.select.find_all(exp.Column) if c.name.startswith("_")}
        if not (kafka and obj in readers):
            assert mentions == set(), obj.name
    # The queue's views in the cluster rendering without Kafka read the shard-local Null table.
    if rendering.variant == "cluster":
        assert {o.name for o in mvs if "events_queue_local" in o.sources} == {
            "events_mv",
            "rollup_1s_mv",
            "rollup_detail_1m_mv",
        }


def test_materialized_view_graph_is_consistent(rendering):
    objs = rendering.objects
    clustered = rendering.variant in CLUSTERED
    edges: dict[str, set[str]] = {}
    for obj in objs.values():
        if obj.kind == "mv":
            assert obj.to in objs and objs[obj.to].position < obj.position, obj.name
            for source in obj.sources:
                assert objs[source].position < obj.position, (obj.name, source)
                # A view on a Distributed table fires only where the INSERT was sent.
                assert objs[source].engine != "Distributed", (obj.name, source)
                edges.setdefault(source, set()).add(obj.to)
            if clustered and any(s.endswith("_local") for s in obj.sources):
                assert obj.to.endswith("_local"), f"{obj.name} cascades out of its shard"
            if obj.select is not None and not obj.select.is_star:
                names = [e.alias_or_name for e in obj.select.expressions]
                assert sorted(names) == sorted(rendering.columns_of(obj.to)), obj.name
        elif obj.engine == "Distributed":
            edges.setdefault(obj.name, set()).add(obj.like)
        elif obj.kind == "view":  # plain views (analyst views) read what the app reads
            for source in obj.sources:
                assert not source.endswith("_local"), f"{obj.name} would read one shard only"
    reached, todo = set(), ["events_queue"]
    while todo:
        table = todo.pop()
        if table not in reached:
            reached.add(table)
            todo.extend(edges.get(table, ()))
    storage = {
        n
        for n, o in objs.items()
        if o.kind == "table" and o.engine not in ("Distributed", "Kafka", "Null")
    }
    assert storage and storage <= reached, storage - reached


# -- the Kafka variant's views, applied in chDB --------------------------------------------------

_STAND_IN_COLUMNS = """,
    _topic       LowCardinality(String) MATERIALIZED '',
    _partition   UInt64 MATERIALIZED 0,
    _offset      UInt64 MATERIALIZED 0,
    _raw_message String MATERIALIZED '',
    _error       String MATERIALIZED ''
)"""


def _without_kafka_table(migrations: list[Migration]) -> list[Migration]:
    """The server+Kafka rendering with the Kafka table replaced by a Null one carrying the
    virtual columns the views read (chDB has no Kafka engine), as MATERIALIZED columns: left
    out of `SELECT *` like virtual columns, and settable with insert_allow_materialized_columns."""
    first = migrations[0]
    head, kafka, rest = first.text.partition("\nENGINE = Kafka")
    assert kafka, "the first statement is the Kafka table"
    _settings, semicolon, tail = rest.partition(";")
    columns_end = head.rstrip().rfind(")")
    head = head[:columns_end].rstrip() + _STAND_IN_COLUMNS
    return [Migration(first.name, head + "\nENGINE = Null" + semicolon + tail), *migrations[1:]]


def test_kafka_rendering_minus_the_kafka_table_routes_rows_and_dead_letters(ch_root):
    db = f"t_{uuid.uuid4().hex[:12]}"
    ch = ch_root.with_database(db)
    migrations = render_for(VARIANTS["server_kafka"], db)
    try:
        report = migrate_clickhouse(ch, _without_kafka_table(migrations))
        assert "materialized_views/0009_events_queue_errors_mv.sql" in report.applied
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
        good = [
            {"org_id": 7, "ts": start + timedelta(seconds=i), "user_id": f"u{i % 3}", "value": 2.5}
            for i in range(5)
        ]
        ch.insert_sync("events_queue", queue_batch(good))
        # What the Kafka engine makes of a message it cannot parse: defaults plus _error.
        ch.command_sync(
            f"INSERT INTO {db}.events_queue (org_id, _topic, _partition, _offset, _raw_message, "
            "_error) SETTINGS insert_allow_materialized_columns = 1 VALUES "
            "(0, 'clickpulse_events', 3, 41, '{\"org_id\": \"x\"', 'Cannot parse input'), "
            "(0, 'clickpulse_events', 3, 42, 'not json', 'Cannot parse input')"
        )
        q = ch.query_sync
        assert q(f"SELECT count(), sum(org_id) FROM {db}.events").rows == [[5, 35]]
        for table in ("rollup_1s", "rollup_1m", "rollup_1h", "rollup_1d"):
            assert q(f"SELECT sum(events), sum(value_sum) FROM {db}.{table}").rows == [[5, 12.5]], (
                table
            )
        for table in ("rollup_detail_1m", "rollup_detail_1h", "rollup_detail_1d"):
            assert q(f"SELECT countDistinct(org_id), min(org_id) FROM {db}.{table}").rows == [
                [1, 7]
            ], table
        errors = q(
            f"SELECT topic, kafka_partition, kafka_offset, raw_message, error "
            f"FROM {db}.events_queue_errors ORDER BY kafka_offset"
        ).rows
        assert errors == [
            ["clickpulse_events", 3, 41, '{"org_id": "x"', "Cannot parse input"],
            ["clickpulse_events", 3, 42, "not json", "Cannot parse input"],
        ]
    finally:
        ch.command_sync(f"DROP DATABASE IF EXISTS {db} SYNC")
        ch.close()


def test_cluster_ledger_is_replicated_across_every_node():
    """The ledger DDL `migrate_clickhouse` sends for a cluster, captured from a stand-in."""

    class Recorder:
        database = "prod"

        def __init__(self, ledger_exists: bool):
            self.ledger_exists = ledger_exists
            self.sent: list[str] = []

        def command_sync(self, sql, params=None):
            self.sent.append(sql)
            self.ledger_exists = self.ledger_exists or "schema_migrations" in sql

        def query_sync(self, sql, params=None):
            if not self.ledger_exists:
                raise ClickHouseError("Table prod.schema_migrations does not exist")
            return type("Result", (), {"rows": []})()

    fresh = Recorder(ledger_exists=False)
    migrate_clickhouse(fresh, [], cluster=CLUSTER)  # type: ignore[arg-type]
    assert fresh.sent[0] == f"CREATE DATABASE IF NOT EXISTS prod ON CLUSTER {CLUSTER}"
    assert f"schema_migrations ON CLUSTER {CLUSTER} " in fresh.sent[1]
    # One ledger for the whole cluster: no {shard} in its path.
    assert "ReplicatedMergeTree('/clickhouse/tables/{database}/schema_migrations'" in fresh.sent[1]
    # A node starting against an up-to-date ledger sends nothing ON CLUSTER.
    again = Recorder(ledger_exists=True)
    migrate_clickhouse(again, [], cluster=CLUSTER)  # type: ignore[arg-type]
    assert again.sent == []
