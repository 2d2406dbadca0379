"""Annotations of an org: deploy markers and incidents (a time, an optional end, a title, tags)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.store.base import Conflict, NotFound, Repo

_COLUMNS = "id, starts_at, ends_at, title, tags, source, created_at"


class AnnotationRepo(Repo):
    async def create(
        self,
        org_id: int,
        starts_at: datetime,
        ends_at: datetime | None,
        title: str,
        tags: list[str],
        source: str,
        max_per_org: int,
    ) -> dict[str, Any]:
        """A new annotation; Conflict `too_many_annotations` when the org has `max_per_org`.
        The count and the insert share one transaction under a per-org advisory lock, so
        concurrent creates cannot pass the cap together."""
        async with self.conn() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('annotations'), %s)", (org_id,)
            )
            count = await (
                await conn.execute(
                    "SELECT count(*) AS n FROM annotations WHERE org_id = %s", (org_id,)
                )
            ).fetchone()
            if count["n"] >= max_per_org:
                raise Conflict(
                    "too_many_annotations",
                    f"the org has {max_per_org} annotations, the most it may keep; delete old ones",
                    {"limit": max_per_org},
                )
            row = await (
                await conn.execute(
                    "INSERT INTO annotations (org_id, starts_at, ends_at, title, tags, source) "
                    f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                    (org_id, starts_at, ends_at, title, tags, source),
                )
            ).fetchone()
        assert row is not None
        return row

    async def in_range(
        self, org_id: int, start: datetime, end: datetime, limit: int
    ) -> list[dict[str, Any]]:
        """The org's annotations overlapping [start, end), oldest first, at most `limit`."""
        return await self.fetchall(
            f"SELECT {_COLUMNS} FROM annotations WHERE org_id = %s AND starts_at < %s "
            "AND coalesce(ends_at, starts_at) >= %s ORDER BY starts_at, id LIMIT %s",
            (org_id, end, start, limit),
        )

    async def delete(self, org_id: int, annotation_id: int) -> None:
        """Delete one of the org's annotations; another org's id is simply not found."""
        row = await self.fetchone(
            "DELETE FROM annotations WHERE id = %s AND org_id = %s RETURNING id",
            (annotation_id, org_id),
        )
        if row is None:
            raise NotFound("annotation")
