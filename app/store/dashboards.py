"""Dashboards and their charts (charts are written with their dashboard, never alone)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from app.store.base import (
    EDITOR_SQL,
    Invalid,
    NotFound,
    Repo,
    check_version,
    owned_metric_ids,
)

# Every statement names the dashboards table `d` (the last editor is looked up through it).
_DASH = "id, name, description, version, created_at, updated_at, " + EDITOR_SQL.format(alias="d")
_CHART_COLUMNS = (
    "title, chart_type, metric_id, metric_inline, granularity, default_range, "
    "dimension, comparison, options, layout"
)
_CHART = f"id, position, {_CHART_COLUMNS}"


class DashboardRepo(Repo):
    async def list(self, org_id: int) -> list[dict[str, Any]]:
        return await self.fetchall(
            f"SELECT {_DASH}, (SELECT count(*) FROM charts c WHERE c.dashboard_id = d.id "
            "AND c.org_id = d.org_id) AS chart_count "
            "FROM dashboards d WHERE org_id = %s ORDER BY id",
            (org_id,),
        )

    async def get(self, org_id: int, dashboard_id: int) -> dict[str, Any]:
        async with self.conn() as conn:
            row = await (
                await conn.execute(
                    f"SELECT {_DASH} FROM dashboards d WHERE id = %s AND org_id = %s",
                    (dashboard_id, org_id),
                )
            ).fetchone()
            if row is None:
                raise NotFound("dashboard")
            row["charts"] = await (
                await conn.execute(
                    f"SELECT {_CHART} FROM charts WHERE dashboard_id = %s AND org_id = %s "
                    "ORDER BY position, id",
                    (dashboard_id, org_id),
                )
            ).fetchall()
            return row

    async def create(
        self,
        org_id: int,
        name: str,
        description: str,
        charts: list[dict[str, Any]],
        updated_by: int | None = None,
    ) -> dict[str, Any]:
        async with self.conn() as conn, conn.transaction():
            await _check_metrics(conn, org_id, charts)
            row = await (
                await conn.execute(
                    "INSERT INTO dashboards AS d (org_id, name, description, updated_by) "
                    f"VALUES (%s, %s, %s, %s) RETURNING {_DASH}",
                    (org_id, name, description, updated_by),
                )
            ).fetchone()
            row["charts"] = await _insert_charts(conn, org_id, row["id"], charts)
            return row

    async def update(
        self,
        org_id: int,
        dashboard_id: int,
        version: int,
        name: str,
        description: str,
        charts: list[dict[str, Any]],
        updated_by: int | None = None,
    ) -> dict[str, Any]:
        async with self.conn() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "UPDATE dashboards d SET name = %s, description = %s, version = version + 1, "
                    "updated_at = now(), updated_by = %s "
                    "WHERE id = %s AND org_id = %s AND version = %s "
                    f"RETURNING {_DASH}",
                    (name, description, updated_by, dashboard_id, org_id, version),
                )
            ).fetchone()
            if row is None:
                await check_version(conn, "dashboards", org_id, dashboard_id)
            await _check_metrics(conn, org_id, charts)
            await conn.execute(
                "DELETE FROM charts WHERE dashboard_id = %s AND org_id = %s", (dashboard_id, org_id)
            )
            row["charts"] = await _insert_charts(conn, org_id, dashboard_id, charts)
            return row

    async def duplicate(
        self, org_id: int, dashboard_id: int, name: str, updated_by: int | None = None
    ) -> dict[str, Any]:
        """A copy of the org's dashboard `dashboard_id` named `name`, with copies of its
        charts (same metrics, types, options and layout); NotFound for another org's id."""
        async with self.conn() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "INSERT INTO dashboards AS d (org_id, name, description, updated_by) "
                    "SELECT org_id, %s, description, %s FROM dashboards "
                    f"WHERE id = %s AND org_id = %s RETURNING {_DASH}",
                    (name, updated_by, dashboard_id, org_id),
                )
            ).fetchone()
            if row is None:
                raise NotFound("dashboard")
            await conn.execute(
                f"INSERT INTO charts (dashboard_id, org_id, position, {_CHART_COLUMNS}) "
                f"SELECT %s, org_id, position, {_CHART_COLUMNS} FROM charts "
                "WHERE dashboard_id = %s AND org_id = %s ORDER BY position, id",
                (row["id"], dashboard_id, org_id),
            )
            row["charts"] = await (
                await conn.execute(
                    f"SELECT {_CHART} FROM charts WHERE dashboard_id = %s AND org_id = %s "
                    "ORDER BY position, id",
                    (row["id"], org_id),
                )
            ).fetchall()
            return row

    async def delete(self, org_id: int, dashboard_id: int, version: int) -> None:
        async with self.conn() as conn:
            cur = await conn.execute(
                "DELETE FROM dashboards WHERE id = %s AND org_id = %s AND version = %s",
                (dashboard_id, org_id, version),
            )
            if cur.rowcount == 0:
                await check_version(conn, "dashboards", org_id, dashboard_id)


async def _check_metrics(conn: Any, org_id: int, charts: list[dict[str, Any]]) -> None:
    wanted = {c["metric_id"] for c in charts if c.get("metric_id") is not None}
    owned = await owned_metric_ids(conn, org_id, wanted)
    for i, chart in enumerate(charts):
        if chart.get("metric_id") is not None and chart["metric_id"] not in owned:
            # Another org's metric is reported exactly like a missing one.
            raise Invalid(
                "unknown_metric",
                f"no metric with id {chart['metric_id']}",
                {"field": f"charts[{i}].metric_id"},
            )


async def _insert_charts(
    conn: Any, org_id: int, dashboard_id: int, charts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = []
    for position, chart in enumerate(charts):
        row = await (
            await conn.execute(
                "INSERT INTO charts (dashboard_id, org_id, position, title, chart_type, metric_id, "
                "metric_inline, granularity, default_range, dimension, comparison, options, layout) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_CHART}",
                (
                    dashboard_id,
                    org_id,
                    position,
                    chart.get("title", ""),
                    chart["chart_type"],
                    chart.get("metric_id"),
                    _jsonb(chart.get("metric_inline")),
                    chart.get("granularity", "auto"),
                    chart.get("default_range", "1h"),
                    chart.get("dimension"),
                    _jsonb(chart.get("comparison")),
                    Jsonb(chart.get("options") or {}),
                    _jsonb(chart.get("layout")),
                ),
            )
        ).fetchone()
        out.append(row)
    return out


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)
