"""An org's notification channels and alert silences (docs/alerts.md, "Channels" and
"Silences"). Every statement names the caller's org id; ids of another org are not found."""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from app.store.base import Conflict, Invalid, NotFound, Repo, check_version

_CHANNEL = (
    "c.id, c.name, c.kind, c.config, c.version, c.created_at, c.updated_at, "
    "ARRAY(SELECT l.alert_id FROM alert_channel_links l WHERE l.channel_id = c.id "
    "AND l.org_id = c.org_id ORDER BY l.alert_id) AS alert_ids"
)
_SILENCE = "id, alert_id, metric_id, starts_at, ends_at, reason, created_by, created_at"


class ChannelRepo(Repo):
    async def list(self, org_id: int) -> list[dict[str, Any]]:
        return await self.fetchall(
            f"SELECT {_CHANNEL} FROM alert_channels c WHERE c.org_id = %s ORDER BY c.id",
            (org_id,),
        )

    async def get(self, org_id: int, channel_id: int) -> dict[str, Any]:
        row = await self.fetchone(
            f"SELECT {_CHANNEL} FROM alert_channels c WHERE c.id = %s AND c.org_id = %s",
            (channel_id, org_id),
        )
        if row is None:
            raise NotFound("channel")
        return row

    async def create(
        self, org_id: int, name: str, kind: str, config: dict[str, Any], secret: str
    ) -> dict[str, Any]:
        async with self.conn() as conn:
            try:
                row = await (
                    await conn.execute(
                        "INSERT INTO alert_channels (org_id, name, kind, config, secret) "
                        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                        (org_id, name, kind, Jsonb(config), secret),
                    )
                ).fetchone()
            except pg_errors.UniqueViolation:
                raise _name_taken(name) from None
            return await _read_channel(conn, org_id, row["id"])

    async def stored_config(self, org_id: int, channel_id: int) -> dict[str, Any]:
        """The full stored settings (for an update that keeps the URL or password)."""
        row = await self.fetchone(
            "SELECT kind, config FROM alert_channels WHERE id = %s AND org_id = %s",
            (channel_id, org_id),
        )
        if row is None:
            raise NotFound("channel")
        return row

    async def update(
        self, org_id: int, channel_id: int, version: int, name: str, config: dict[str, Any]
    ) -> dict[str, Any]:
        """New name and settings (the kind never changes: a channel is one kind)."""
        async with self.conn() as conn:
            try:
                row = await (
                    await conn.execute(
                        "UPDATE alert_channels SET name = %s, config = %s, "
                        "version = version + 1, updated_at = now() "
                        "WHERE id = %s AND org_id = %s AND version = %s RETURNING id",
                        (name, Jsonb(config), channel_id, org_id, version),
                    )
                ).fetchone()
            except pg_errors.UniqueViolation:
                raise _name_taken(name) from None
            if row is None:
                await _check_channel_version(conn, org_id, channel_id)
            return await _read_channel(conn, org_id, channel_id)

    async def rotate_secret(self, org_id: int, channel_id: int, secret: str) -> dict[str, Any]:
        async with self.conn() as conn:
            cur = await conn.execute(
                "UPDATE alert_channels SET secret = %s, version = version + 1, "
                "updated_at = now() WHERE id = %s AND org_id = %s",
                (secret, channel_id, org_id),
            )
            if cur.rowcount == 0:
                raise NotFound("channel")
            return await _read_channel(conn, org_id, channel_id)

    async def delete(self, org_id: int, channel_id: int, version: int) -> None:
        """Refused (409 `channel_in_use`, naming the alerts) while alerts use it."""
        async with self.conn() as conn:
            users = await (
                await conn.execute(
                    "SELECT alert_id FROM alert_channel_links WHERE channel_id = %s "
                    "AND org_id = %s ORDER BY alert_id",
                    (channel_id, org_id),
                )
            ).fetchall()
            if users:
                ids = [r["alert_id"] for r in users]
                raise Conflict(
                    "channel_in_use",
                    f"alerts {', '.join(map(str, ids))} notify this channel; "
                    "remove it from them first",
                    {"alert_ids": ids},
                )
            try:
                cur = await conn.execute(
                    "DELETE FROM alert_channels WHERE id = %s AND org_id = %s AND version = %s",
                    (channel_id, org_id, version),
                )
            except pg_errors.ForeignKeyViolation:  # linked meanwhile
                raise Conflict("channel_in_use", "an alert notifies this channel") from None
            if cur.rowcount == 0:
                await _check_channel_version(conn, org_id, channel_id)


class SilenceRepo(Repo):
    async def list(self, org_id: int, *, include_expired: bool = False) -> list[dict[str, Any]]:
        sql = f"SELECT {_SILENCE} FROM alert_silences WHERE org_id = %s"
        if not include_expired:
            sql += " AND ends_at > now()"
        return await self.fetchall(sql + " ORDER BY ends_at, id", (org_id,))

    async def create(
        self,
        org_id: int,
        *,
        alert_id: int | None,
        metric_id: int | None,
        starts_at: dt.datetime,
        ends_at: dt.datetime,
        reason: str,
        created_by: str,
    ) -> dict[str, Any]:
        """A silence of one of the org's alerts or saved metrics (422 naming the field when
        the id is not the org's)."""
        async with self.conn() as conn:
            if alert_id is not None:
                table, field, ref = "alerts", "alert_id", alert_id
            else:
                table, field, ref = "metrics", "metric_id", metric_id
            found = await (
                await conn.execute(
                    f"SELECT 1 FROM {table} WHERE id = %s AND org_id = %s", (ref, org_id)
                )
            ).fetchone()
            if found is None:
                kind = field.removesuffix("_id")
                raise Invalid(f"unknown_{kind}", f"no {kind} with id {ref}", {"field": field})
            return await (
                await conn.execute(
                    "INSERT INTO alert_silences (org_id, alert_id, metric_id, starts_at, ends_at, "
                    f"reason, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_SILENCE}",
                    (org_id, alert_id, metric_id, starts_at, ends_at, reason, created_by),
                )
            ).fetchone()

    async def delete(self, org_id: int, silence_id: int) -> None:
        async with self.conn() as conn:
            cur = await conn.execute(
                "DELETE FROM alert_silences WHERE id = %s AND org_id = %s", (silence_id, org_id)
            )
            if cur.rowcount == 0:
                raise NotFound("silence")


def _name_taken(name: str) -> Conflict:
    return Conflict("name_taken", f"a channel named {name!r} exists", {"field": "name"})


async def _read_channel(conn: Any, org_id: int, channel_id: int) -> dict[str, Any]:
    return await (
        await conn.execute(
            f"SELECT {_CHANNEL} FROM alert_channels c WHERE c.id = %s AND c.org_id = %s",
            (channel_id, org_id),
        )
    ).fetchone()


async def _check_channel_version(conn: Any, org_id: int, channel_id: int) -> None:
    try:
        await check_version(conn, "alert_channels", org_id, channel_id)
    except NotFound:
        raise NotFound("channel") from None
