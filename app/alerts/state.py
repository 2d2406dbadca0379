"""The alert state in PostgreSQL, owned by the evaluator: load definitions + state, write
transitions and events (one transaction per tick, state before side effects), webhook delivery
outcomes, history. (What users write, the definitions, goes through app/store/alerts.py.)"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from app.store.base import Repo

_LOAD = (
    "SELECT a.id, a.org_id, a.name, a.metric_id, a.metric_inline, a.filters, a.comparator, "
    "a.threshold, a.for_seconds, a.resolve_after_seconds, a.severity, a.enabled, a.webhook_url, "
    "a.kind, a.recovery_threshold, a.keep_firing_seconds, a.anomaly, a.group_by, a.max_groups, "
    "a.state, a.state_since, a.last_value, a.version, m.definition AS metric_definition "
    "FROM alerts a LEFT JOIN metrics m ON m.id = a.metric_id AND m.org_id = a.org_id"
)

_EVENT_COLUMNS = (
    "id, alert_id, kind, value, threshold, at, details, group_key, delivery, delivery_attempts, "
    "delivery_error, delivered_at"
)


def to_ts(second: int | None) -> dt.datetime | None:
    return None if second is None else dt.datetime.fromtimestamp(second, dt.UTC)


def to_second(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


@dataclass
class Change:
    """One alert's state change to persist; `event` set for firing/resolved."""

    alert_id: int
    org_id: int
    state: str
    since: int
    value: float | None
    event: dict[str, Any] | None = None  # kind, value, threshold, at (second), details, webhook
    event_id: int | None = None  # filled in by `apply`
    applied: bool = False
    group_key: str | None = None  # a grouped alert's group (its state is in alert_groups)


class AlertStateRepo(Repo):
    async def load(
        self, *, org_id: int | None = None, alert_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Definitions with their state (every org: the evaluator is an internal service);
        disabled alerts included so the caller can drop them."""
        sql, params = _LOAD, []
        where = []
        if org_id is not None:
            where.append("a.org_id = %s")
            params.append(org_id)
        if alert_id is not None:
            where.append("a.id = %s")
            params.append(alert_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return await self.fetchall(sql, params)

    async def states(self, ids: list[int]) -> list[dict[str, Any]]:
        return await self.fetchall(
            "SELECT id, state, state_since, last_value FROM alerts WHERE id = ANY(%s)", (ids,)
        )

    async def group_states(self, ids: list[int]) -> dict[int, list[tuple[str, str, int | None]]]:
        """Stored group states of grouped alerts: alert id → [(group, state, since)]."""
        rows = await self.fetchall(
            "SELECT alert_id, group_key, state, state_since FROM alert_groups "
            "WHERE alert_id = ANY(%s) ORDER BY alert_id, group_key",
            (ids,),
        )
        out: dict[int, list[tuple[str, str, int | None]]] = {}
        for r in rows:
            out.setdefault(r["alert_id"], []).append(
                (r["group_key"], r["state"], to_second(r["state_since"]))
            )
        return out

    async def apply(self, changes: list[Change]) -> None:
        """Every change of one tick in one transaction: the state row first, then the event
        (skipped when the alert was deleted meanwhile). A group's change updates its
        alert_groups row and the alert's summary (`firing` while any group fires)."""
        async with self.conn() as conn, conn.transaction():
            for c in changes:
                if c.group_key is not None:
                    await conn.execute(
                        "INSERT INTO alert_groups (alert_id, org_id, group_key, state, "
                        "state_since, last_value) SELECT id, org_id, %s, %s, %s, %s FROM alerts "
                        "WHERE id = %s AND org_id = %s ON CONFLICT (alert_id, group_key) DO "
                        "UPDATE SET state = EXCLUDED.state, state_since = EXCLUDED.state_since, "
                        "last_value = EXCLUDED.last_value, updated_at = now()",
                        (c.group_key, c.state, to_ts(c.since), c.value, c.alert_id, c.org_id),
                    )
                    cur = await conn.execute(
                        "UPDATE alerts SET state = CASE WHEN EXISTS (SELECT 1 FROM alert_groups "
                        "g WHERE g.alert_id = alerts.id AND g.state = 'firing') THEN 'firing' "
                        "ELSE 'ok' END, state_since = %s, last_value = %s "
                        "WHERE id = %s AND org_id = %s",
                        (to_ts(c.since), c.value, c.alert_id, c.org_id),
                    )
                else:
                    cur = await conn.execute(
                        "UPDATE alerts SET state = %s, state_since = %s, last_value = %s "
                        "WHERE id = %s AND org_id = %s",
                        (c.state, to_ts(c.since), c.value, c.alert_id, c.org_id),
                    )
                c.applied = cur.rowcount == 1
                if c.event is None or not c.applied:
                    continue
                ev = c.event
                row = await (
                    await conn.execute(
                        "INSERT INTO alert_events (alert_id, org_id, kind, value, threshold, at, "
                        "details, delivery, group_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "RETURNING id",
                        (
                            c.alert_id,
                            c.org_id,
                            ev["kind"],
                            ev["value"],
                            ev["threshold"],
                            to_ts(ev["at"]),
                            Jsonb(ev["details"]),
                            "pending" if ev.get("webhook_url") else "none",
                            c.group_key,
                        ),
                    )
                ).fetchone()
                c.event_id = row["id"]

    async def record_delivery(
        self, event_id: int, delivery: str, attempts: int, error: str | None
    ) -> None:
        async with self.conn() as conn:
            await conn.execute(
                "UPDATE alert_events SET delivery = %s, delivery_attempts = %s, "
                "delivery_error = %s, delivered_at = CASE WHEN %s = 'delivered' THEN now() END "
                "WHERE id = %s",
                (delivery, attempts, error, delivery, event_id),
            )

    async def undelivered(self, max_age_s: int) -> list[dict[str, Any]]:
        """Events whose webhook was never settled (the process stopped first)."""
        return await self.fetchall(
            "SELECT e.id, e.org_id, e.alert_id, e.kind, e.value, e.threshold, e.at, e.details, "
            "a.webhook_url FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
            "WHERE e.delivery = 'pending' AND e.at > now() - make_interval(secs => %s) "
            "ORDER BY e.id",
            (max_age_s,),
        )

    async def events(
        self, org_id: int, alert_id: int, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        """History of one alert, newest first, keyset-paged by event id."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM alert_events WHERE org_id = %s AND alert_id = %s"
        params: list[Any] = [org_id, alert_id]
        if before is not None:
            sql += " AND id < %s"
            params.append(before)
        sql += " ORDER BY id DESC LIMIT %s"
        params.append(limit)
        return await self.fetchall(sql, params)
