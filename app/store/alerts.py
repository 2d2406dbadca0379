"""Threshold alerts of an org (definitions; the evaluator owns the state columns)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from app.store.base import Invalid, NotFound, Repo, check_version, owned_metric_ids

_COLUMNS = (
    "id, name, metric_id, metric_inline, filters, comparator, threshold, for_seconds, "
    "resolve_after_seconds, severity, enabled, webhook_url, kind, recovery_threshold, "
    "keep_firing_seconds, anomaly, group_by, max_groups, state, state_since, last_value, "
    "version, created_at, updated_at"
)
# What a user writes; the rest is the evaluator's state.
_WRITABLE = (
    "name",
    "metric_id",
    "metric_inline",
    "filters",
    "comparator",
    "threshold",
    "for_seconds",
    "resolve_after_seconds",
    "severity",
    "enabled",
    "webhook_url",
    "kind",
    "recovery_threshold",
    "keep_firing_seconds",
    "anomaly",
    "group_by",
    "max_groups",
)
_JSON = {"metric_inline", "filters", "anomaly", "group_by"}


def _values(data: dict[str, Any]) -> list[Any]:
    out = []
    for name in _WRITABLE:
        value = data.get(name)
        if name in _JSON and value is not None:
            value = Jsonb(value)
        out.append(value)
    return out


class AlertRepo(Repo):
    async def list(self, org_id: int) -> list[dict[str, Any]]:
        return await self.fetchall(
            f"SELECT {_COLUMNS} FROM alerts WHERE org_id = %s ORDER BY id", (org_id,)
        )

    async def get(self, org_id: int, alert_id: int) -> dict[str, Any]:
        row = await self.fetchone(
            f"SELECT {_COLUMNS} FROM alerts WHERE id = %s AND org_id = %s", (alert_id, org_id)
        )
        if row is None:
            raise NotFound("alert")
        return row

    async def create(self, org_id: int, data: dict[str, Any]) -> dict[str, Any]:
        async with self.conn() as conn:
            await _check_metric(conn, org_id, data)
            placeholders = ", ".join(["%s"] * (len(_WRITABLE) + 1))
            return await (
                await conn.execute(
                    f"INSERT INTO alerts (org_id, {', '.join(_WRITABLE)}) VALUES ({placeholders}) "
                    f"RETURNING {_COLUMNS}",
                    (org_id, *_values(data)),
                )
            ).fetchone()

    async def update(
        self, org_id: int, alert_id: int, version: int, data: dict[str, Any]
    ) -> dict[str, Any]:
        async with self.conn() as conn:
            await _check_metric(conn, org_id, data)
            assignments = ", ".join(f"{name} = %s" for name in _WRITABLE)
            row = await (
                await conn.execute(
                    f"UPDATE alerts SET {assignments}, version = version + 1, updated_at = now() "
                    f"WHERE id = %s AND org_id = %s AND version = %s RETURNING {_COLUMNS}",
                    (*_values(data), alert_id, org_id, version),
                )
            ).fetchone()
            if row is None:
                await check_version(conn, "alerts", org_id, alert_id)
            return row

    async def delete(self, org_id: int, alert_id: int, version: int) -> None:
        async with self.conn() as conn:
            cur = await conn.execute(
                "DELETE FROM alerts WHERE id = %s AND org_id = %s AND version = %s",
                (alert_id, org_id, version),
            )
            if cur.rowcount == 0:
                await check_version(conn, "alerts", org_id, alert_id)


async def _check_metric(conn: Any, org_id: int, data: dict[str, Any]) -> None:
    metric_id = data.get("metric_id")
    if metric_id is not None and not await owned_metric_ids(conn, org_id, {metric_id}):
        raise Invalid("unknown_metric", f"no metric with id {metric_id}", {"field": "metric_id"})
