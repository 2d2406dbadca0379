"""The alert state in PostgreSQL, owned by the evaluator: load definitions + state, write
transitions and events (one transaction per tick, state before side effects; an event's
silence and notification targets are read in that transaction), delivery attempts and
outcomes, history. (What users write, the definitions, goes through app/store/alerts.py.)"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from app.store.base import Repo

from .channels import Target

_LOAD = (
    "SELECT a.id, a.org_id, a.name, a.metric_id, a.metric_inline, a.filters, a.comparator, "
    "a.threshold, a.for_seconds, a.resolve_after_seconds, a.severity, a.enabled, a.webhook_url, "
    "a.kind, a.recovery_threshold, a.keep_firing_seconds, a.anomaly, a.group_by, a.max_groups, "
    "a.state, a.state_since, a.last_value, a.version, m.definition AS metric_definition "
    "FROM alerts a LEFT JOIN metrics m ON m.id = a.metric_id AND m.org_id = a.org_id"
)

_EVENT_COLUMNS = (
    "id, alert_id, kind, value, threshold, at, details, group_key, delivery, delivery_attempts, "
    "delivery_error, delivered_at, silenced_by"
)
# The silence covering an event of an alert — on the alert, or on its saved metric — active
# at the event's second (a replay after a restart) or now, when it is recorded.
_SILENCE = (
    "SELECT s.id FROM alert_silences s JOIN alerts a ON a.id = %(alert)s AND a.org_id = s.org_id "
    "WHERE s.org_id = %(org)s AND (s.alert_id = a.id OR s.metric_id = a.metric_id) "
    "AND ((s.starts_at <= %(at)s AND s.ends_at > %(at)s) "
    "OR (s.starts_at <= now() AND s.ends_at > now())) ORDER BY s.ends_at DESC, s.id LIMIT 1"
)
# An alert's channels (the composite foreign keys keep them the alert's org's).
_TARGETS = (
    "SELECT c.id, c.kind, c.name, c.config, c.secret FROM alert_channel_links l "
    "JOIN alert_channels c ON c.id = l.channel_id AND c.org_id = l.org_id "
    "WHERE l.alert_id = %s AND l.org_id = %s ORDER BY c.id"
)


def to_ts(second: int | None) -> dt.datetime | None:
    return None if second is None else dt.datetime.fromtimestamp(second, dt.UTC)


def to_second(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


@dataclass(slots=True)
class Change:
    """One alert's state change to persist; `event` set for firing/resolved."""

    alert_id: int
    org_id: int
    state: str
    since: int
    value: float | None
    event: dict[str, Any] | None = None  # kind, value, threshold, at (second), details, webhook
    # filled in by `apply` with the event: who is notified, or the silence that mutes it
    targets: list[Target] | None = None
    silenced_by: int | None = None
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
        (skipped when the alert was deleted meanwhile) with its delivery: `silenced` when a
        silence covers the event's second, `pending` when it has targets, else `none`. A
        group's change updates its alert_groups row and the alert's summary (`firing` while
        any group fires)."""
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
                await _resolve_delivery(conn, c)
                row = await (
                    await conn.execute(
                        "INSERT INTO alert_events (alert_id, org_id, kind, value, threshold, at, "
                        "details, delivery, silenced_by, group_key) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                        (
                            c.alert_id,
                            c.org_id,
                            ev["kind"],
                            ev["value"],
                            ev["threshold"],
                            to_ts(ev["at"]),
                            Jsonb(ev["details"]),
                            _delivery_of(c),
                            c.silenced_by,
                            c.group_key,
                        ),
                    )
                ).fetchone()
                c.event_id = row["id"]

    async def record_delivery(
        self, event_id: int, delivery: str, attempts: int, error: str | None
    ) -> None:
        """An event's delivery summary, once every target settled."""
        async with self.conn() as conn:
            await conn.execute(
                "UPDATE alert_events SET delivery = %s, delivery_attempts = %s, "
                "delivery_error = %s, delivered_at = CASE WHEN %s = 'delivered' THEN now() END "
                "WHERE id = %s",
                (delivery, attempts, error, delivery, event_id),
            )

    async def record_attempt(
        self, event_id: int, org_id: int, target: Target, attempt: int, outcome: Any
    ) -> None:
        """One delivery attempt (`outcome`: app.alerts.delivery.Attempt)."""
        async with self.conn() as conn:
            await conn.execute(
                "INSERT INTO alert_deliveries (event_id, org_id, channel_id, channel_kind, "
                "channel_name, attempt, status, response_code, error) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    event_id,
                    org_id,
                    target.channel_id,
                    target.kind,
                    target.name,
                    attempt,
                    outcome.status,
                    outcome.code,
                    outcome.error,
                ),
            )

    async def undelivered(self, max_age_s: int) -> list[dict[str, Any]]:
        """Events whose delivery was never settled (the process stopped first), each with
        the targets not yet delivered to (`targets`: a list of Target)."""
        rows = await self.fetchall(
            "SELECT e.id, e.org_id, e.alert_id, e.kind, e.value, e.threshold, e.at, e.details, "
            "a.webhook_url, EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.event_id = e.id "
            "AND d.channel_id IS NULL AND d.status = 'delivered') AS legacy_delivered "
            "FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
            "WHERE e.delivery = 'pending' AND e.at > now() - make_interval(secs => %s) "
            "ORDER BY e.id",
            (max_age_s,),
        )
        if not rows:
            return rows
        channels = await self.fetchall(
            "SELECT e.id AS event_id, c.id, c.kind, c.name, c.config, c.secret "
            "FROM alert_events e JOIN alert_channel_links l ON l.alert_id = e.alert_id "
            "AND l.org_id = e.org_id JOIN alert_channels c ON c.id = l.channel_id "
            "AND c.org_id = l.org_id WHERE e.id = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
            "alert_deliveries d WHERE d.event_id = e.id AND d.channel_id = c.id "
            "AND d.status = 'delivered') ORDER BY e.id, c.id",
            ([r["id"] for r in rows],),
        )
        by_event: dict[int, list[Target]] = {}
        for c in channels:
            by_event.setdefault(c["event_id"], []).append(Target.of_row(c))
        for r in rows:
            targets = by_event.get(r["id"], [])
            if r["webhook_url"] and not r["legacy_delivered"]:
                targets.append(Target.legacy(r["webhook_url"]))
            r["targets"] = targets
        return rows

    async def deliveries(self, org_id: int, event_ids: list[int]) -> list[dict[str, Any]]:
        """The delivery attempts of these events (of this org), oldest first."""
        if not event_ids:
            return []
        return await self.fetchall(
            "SELECT event_id, channel_id, channel_kind, channel_name, attempt, status, "
            "response_code, error, at FROM alert_deliveries "
            "WHERE org_id = %s AND event_id = ANY(%s) ORDER BY event_id, id",
            (org_id, event_ids),
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


async def _resolve_delivery(conn: Any, change: Change) -> None:
    """Within `apply`'s transaction: the silence covering the event, else its targets."""
    ev = change.event
    assert ev is not None
    row = await (
        await conn.execute(
            _SILENCE, {"alert": change.alert_id, "org": change.org_id, "at": to_ts(ev["at"])}
        )
    ).fetchone()
    if row is not None:
        change.silenced_by, change.targets = row["id"], []
        return
    rows = await (await conn.execute(_TARGETS, (change.alert_id, change.org_id))).fetchall()
    targets = [Target.of_row(r) for r in rows]
    if ev.get("webhook_url"):
        targets.append(Target.legacy(ev["webhook_url"]))
    change.targets = targets


def _delivery_of(change: Change) -> str:
    if change.silenced_by is not None:
        return "silenced"
    return "pending" if change.targets else "none"
