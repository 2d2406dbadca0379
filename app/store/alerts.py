"""Threshold alerts of an org (definitions and their channel links; the evaluator owns the
state columns). Each alert is read with its channel ids and the silence muting it now."""

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
# An alert as read: its columns, its channels, the silence muting it now (the latest-ending).
_SELECT = (
    "SELECT "
    + ", ".join(f"a.{c.strip()}" for c in _COLUMNS.split(","))
    + ", ARRAY(SELECT l.channel_id FROM alert_channel_links l WHERE l.alert_id = a.id "
    "AND l.org_id = a.org_id ORDER BY l.channel_id) AS channel_ids, "
    "s.id AS silence_id, s.ends_at AS silence_ends_at, s.reason AS silence_reason, "
    "s.metric_id AS silence_metric_id FROM alerts a LEFT JOIN LATERAL (SELECT * FROM "
    "alert_silences s WHERE s.org_id = a.org_id AND (s.alert_id = a.id OR s.metric_id = "
    "a.metric_id) AND s.starts_at <= now() AND s.ends_at > now() ORDER BY s.ends_at DESC, "
    "s.id LIMIT 1) s ON true"
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
        return await self.fetchall(f"{_SELECT} WHERE a.org_id = %s ORDER BY a.id", (org_id,))

    async def get(self, org_id: int, alert_id: int) -> dict[str, Any]:
        row = await self.fetchone(
            f"{_SELECT} WHERE a.id = %s AND a.org_id = %s", (alert_id, org_id)
        )
        if row is None:
            raise NotFound("alert")
        return row

    async def create(self, org_id: int, data: dict[str, Any]) -> dict[str, Any]:
        """Insert the alert and its channel links in one transaction."""
        async with self.conn() as conn, conn.transaction():
            await _check_metric(conn, org_id, data)
            placeholders = ", ".join(["%s"] * (len(_WRITABLE) + 1))
            row = await (
                await conn.execute(
                    f"INSERT INTO alerts (org_id, {', '.join(_WRITABLE)}) VALUES ({placeholders}) "
                    "RETURNING id",
                    (org_id, *_values(data)),
                )
            ).fetchone()
            await _link_channels(conn, org_id, row["id"], data.get("channel_ids") or [])
            return await _read(conn, org_id, row["id"])

    async def update(
        self, org_id: int, alert_id: int, version: int, data: dict[str, Any]
    ) -> dict[str, Any]:
        async with self.conn() as conn, conn.transaction():
            await _check_metric(conn, org_id, data)
            assignments = ", ".join(f"{name} = %s" for name in _WRITABLE)
            row = await (
                await conn.execute(
                    f"UPDATE alerts SET {assignments}, version = version + 1, updated_at = now() "
                    "WHERE id = %s AND org_id = %s AND version = %s RETURNING id",
                    (*_values(data), alert_id, org_id, version),
                )
            ).fetchone()
            if row is None:
                await check_version(conn, "alerts", org_id, alert_id)
            await conn.execute(
                "DELETE FROM alert_channel_links WHERE alert_id = %s AND org_id = %s",
                (alert_id, org_id),
            )
            await _link_channels(conn, org_id, alert_id, data.get("channel_ids") or [])
            return await _read(conn, org_id, alert_id)

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


async def _read(conn: Any, org_id: int, alert_id: int) -> dict[str, Any]:
    return await (
        await conn.execute(f"{_SELECT} WHERE a.id = %s AND a.org_id = %s", (alert_id, org_id))
    ).fetchone()


async def _link_channels(conn: Any, org_id: int, alert_id: int, channel_ids: list[int]) -> None:
    """Link the alert to these channels of the org: any other id (another org's, or none)
    is a 422 naming it — and the composite foreign key refuses it regardless."""
    wanted = sorted(set(channel_ids))
    if not wanted:
        return
    rows = await (
        await conn.execute(
            "SELECT id FROM alert_channels WHERE org_id = %s AND id = ANY(%s)", (org_id, wanted)
        )
    ).fetchall()
    owned = {r["id"] for r in rows}
    for i, cid in enumerate(channel_ids):
        if cid not in owned:
            raise Invalid(
                "unknown_channel", f"no channel with id {cid}", {"field": f"channel_ids[{i}]"}
            )
    for cid in wanted:
        await conn.execute(
            "INSERT INTO alert_channel_links (alert_id, channel_id, org_id) VALUES (%s, %s, %s)",
            (alert_id, cid, org_id),
        )
