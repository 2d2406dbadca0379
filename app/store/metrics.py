"""Saved metrics of an org."""

from __future__ import annotations

from typing import Any

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from app.store.base import EDITOR_SQL, Conflict, NotFound, Repo, check_version

# Every statement names the metrics table `m` (the last editor is looked up through it).
_COLUMNS = "id, name, description, definition, unit, version, created_at, updated_at, " + (
    EDITOR_SQL.format(alias="m")
)


class MetricRepo(Repo):
    async def list(self, org_id: int) -> list[dict[str, Any]]:
        return await self.fetchall(
            f"SELECT {_COLUMNS} FROM metrics m WHERE org_id = %s ORDER BY id", (org_id,)
        )

    async def get(self, org_id: int, metric_id: int) -> dict[str, Any]:
        row = await self.fetchone(
            f"SELECT {_COLUMNS} FROM metrics m WHERE id = %s AND org_id = %s", (metric_id, org_id)
        )
        if row is None:
            raise NotFound("metric")
        return row

    async def create(
        self,
        org_id: int,
        name: str,
        description: str,
        definition: dict[str, Any],
        unit: dict[str, Any] | None = None,
        updated_by: int | None = None,
    ) -> dict[str, Any]:
        """A new metric; `unit` (how its values read, see api/schemas.py Unit) may be None."""
        try:
            row = await self.fetchone(
                "INSERT INTO metrics AS m (org_id, name, description, definition, unit, "
                f"updated_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (org_id, name, description, Jsonb(definition), _json(unit), updated_by),
            )
        except pg_errors.UniqueViolation:
            raise _name_taken(name) from None
        assert row is not None
        return row

    async def update(
        self,
        org_id: int,
        metric_id: int,
        version: int,
        name: str,
        description: str,
        definition: dict[str, Any],
        unit: dict[str, Any] | None = None,
        updated_by: int | None = None,
    ) -> dict[str, Any]:
        async with self.conn() as conn:
            try:
                row = await (
                    await conn.execute(
                        "UPDATE metrics m SET name = %s, description = %s, definition = %s, "
                        "unit = %s, version = version + 1, updated_at = now(), updated_by = %s "
                        f"WHERE id = %s AND org_id = %s AND version = %s RETURNING {_COLUMNS}",
                        (
                            name,
                            description,
                            Jsonb(definition),
                            _json(unit),
                            updated_by,
                            metric_id,
                            org_id,
                            version,
                        ),
                    )
                ).fetchone()
            except pg_errors.UniqueViolation:
                raise _name_taken(name) from None
            if row is None:
                await check_version(conn, "metrics", org_id, metric_id)
            return row

    async def delete(self, org_id: int, metric_id: int, version: int) -> None:
        async with self.conn() as conn:
            try:
                cur = await conn.execute(
                    "DELETE FROM metrics WHERE id = %s AND org_id = %s AND version = %s",
                    (metric_id, org_id, version),
                )
            except pg_errors.ForeignKeyViolation:
                raise Conflict(
                    "metric_in_use",
                    "the metric is used by a chart or an alert; remove those first",
                    {"metric_id": metric_id},
                ) from None
            if cur.rowcount == 0:
                await check_version(conn, "metrics", org_id, metric_id)


def _json(value: dict[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def _name_taken(name: str) -> Conflict:
    return Conflict("name_taken", f"a metric named {name!r} already exists", {"field": "name"})
