"""What the ClickHouse HTTP interface says about the server: version, time zone, and the
columns of each analyst table, read once per process from ClickHouse (our own tables' schema,
the same for every org: no rows are read)."""

from __future__ import annotations

import asyncio

from app.api.clickhouse_http.protocol import SHOWN_SETTINGS
from app.clickhouse import ClickHouse
from app.querybuilder.analyst.system import ColumnFact, ServerFacts
from app.querybuilder.catalog import ANALYST_TABLES, low_cardinality_columns


class FactsCache:
    """`ServerFacts` for one ClickHouse database, read on first use (one read at a time)."""

    def __init__(self, ch: ClickHouse):
        self.ch = ch
        self._facts: ServerFacts | None = None
        self._lock = asyncio.Lock()

    @property
    def version(self) -> str:
        """The server's version once read (error answers carry it), else "0"."""
        return self._facts.version if self._facts is not None else "0"

    async def get(self) -> ServerFacts:
        """The facts, reading them from ClickHouse the first time."""
        if self._facts is None:
            async with self._lock:
                if self._facts is None:
                    self._facts = await self._read()
        return self._facts

    async def _read(self) -> ServerFacts:
        ch = self.ch
        info = await ch.query("SELECT version() AS v, timezone() AS tz")
        version, timezone = info.rows[0]
        plain = low_cardinality_columns()
        columns: dict[str, tuple[ColumnFact, ...]] = {}
        for table in sorted(ANALYST_TABLES):
            described = await ch.query(f"DESCRIBE TABLE {ch.table(table)}")
            cast = set(plain.get(table, ()))
            columns[table] = tuple(
                ColumnFact(
                    name=row["name"],
                    # An analyst reads these as String (guard.isolated_read casts them).
                    type="String" if row["name"] in cast else row["type"],
                    default_kind=row.get("default_type", ""),
                    default_expression=row.get("default_expression", ""),
                    comment=row.get("comment", ""),
                )
                for row in described.dicts()
            )
        return ServerFacts(
            database=ch.database,
            version=str(version),
            timezone=str(timezone),
            columns=columns,
            settings=tuple(SHOWN_SETTINGS.items()),
        )
