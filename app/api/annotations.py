"""Annotations: an org's deploy markers and incidents, drawn on every time chart of the org.

    POST   /annotations           {time, end?, title, tags?}   ingest key (cpk_) or editor token
    GET    /annotations?from&to   the org's annotations overlapping [from, to)   viewer token
    DELETE /annotations/{id}                                      editor token

An ingest key may only create: it is a deploy script's credential, often in CI logs, so it
must not read what the org annotated nor erase incidents (docs/api.md, "Annotations"). The
org is the credential's, always; another org's id is a plain 404.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta

from app.api.common import check_id
from app.api.params import time_range
from app.auth import Principal
from app.credentials import API_KEY_PREFIX, bearer_token
from app.deps import ServicesDep, client_address, provide_principal
from app.errors import ApiError
from app.ingest.routes import ingest_state
from app.openapi import api_doc

MAX_PER_ORG = 10_000  # kept per org; older ones are deleted by hand (or by a script)
MAX_LISTED = 500  # per GET: a chart shows no more than this many markers
DEFAULT_RANGE_S = 86400
BODY_LIMIT = 16 * 1024

Tag = Annotated[str, Meta(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f\x7f]+$")]
Instant = Annotated[datetime, Meta(tz=True)]


class AnnotationIn(msgspec.Struct, forbid_unknown_fields=True):
    time: Instant
    # No control characters: one line of text (and PostgreSQL refuses NUL outright)
    title: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
    end: Instant | None = None  # a span (an incident) when given; a point (a deploy) when not
    tags: Annotated[list[Tag], Meta(max_length=10)] = msgspec.field(default_factory=list)


class AnnotationOut(msgspec.Struct):
    id: int
    time: datetime
    end: datetime | None
    title: str
    tags: list[str]
    source: str  # "user" (a user token) or "key" (an ingest key)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: an org, and either a user role or an ingest key (`role` None)."""

    org_id: int
    role: str | None

    def require_user(self, role: str, what: str) -> None:
        if self.role is None:
            raise ApiError(
                403,
                "forbidden",
                f"an ingest key may only create annotations; {what} needs a user token",
                {"header": "Authorization"},
            )
        Principal(self.org_id, 0, self.role).require(role)


async def provide_caller(request: Request, services: ServicesDep) -> Caller:
    """An ingest key (`cpk_…`) or a user token (`cpt_…`); either way the org's request rate
    is charged."""
    token = bearer_token(request.headers.get("authorization"))
    if token is not None and token.startswith(API_KEY_PREFIX):
        key = await ingest_state(services).keys.authenticate(
            services.store, request.headers.get("authorization"), client_address(request)
        )
        await services.limiter.check_rate(key.org_id)
        return Caller(key.org_id, None)
    principal = await provide_principal(request, services)
    return Caller(principal.org_id, principal.role)


def _out(row: dict) -> AnnotationOut:
    return AnnotationOut(
        id=row["id"],
        time=row["starts_at"].astimezone(UTC),
        end=row["ends_at"].astimezone(UTC) if row["ends_at"] is not None else None,
        title=row["title"],
        tags=list(row["tags"]),
        source=row["source"],
    )


if TYPE_CHECKING:
    CallerDep = Caller
else:
    CallerDep = NamedDependency[Any]  # as app/deps.py: Litestar need not model the dataclass


class AnnotationController(Controller):
    path = "/annotations"
    tags = ["annotations"]
    dependencies = {"caller": Provide(provide_caller)}
    request_max_body_size = BODY_LIMIT

    @post("/", status_code=201, opt=api_doc(errors={409}))  # 409: the org's count limit
    async def create_annotation(
        self, services: ServicesDep, caller: CallerDep, data: JSONBody[AnnotationIn]
    ) -> AnnotationOut:
        """Mark a deploy (a time) or an incident (a time and an `end`) with a title and tags."""
        if caller.role is not None:
            caller.require_user("editor", "this")
        if data.end is not None and data.end < data.time:
            raise ApiError(
                422, "invalid_annotation", "end must not be before time", {"field": "end"}
            )
        row = await services.store.annotations.create(
            caller.org_id,
            data.time,
            data.end,
            data.title,
            list(data.tags),
            "key" if caller.role is None else "user",
            MAX_PER_ORG,
        )
        return _out(row)

    @get("/")
    async def list_annotations(
        self,
        services: ServicesDep,
        caller: CallerDep,
        from_: Annotated[str | None, QueryParameter(name="from", max_length=64)] = None,
        to: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> list[AnnotationOut]:
        """The org's annotations overlapping [from, to) (default: the last 24 hours), oldest
        first, at most 500."""
        caller.require_user("viewer", "reading annotations")
        start, end = time_range(from_, to, DEFAULT_RANGE_S, time.time())
        rows = await services.store.annotations.in_range(
            caller.org_id,
            datetime.fromtimestamp(start, UTC),
            datetime.fromtimestamp(end, UTC),
            MAX_LISTED,
        )
        return [_out(r) for r in rows]

    @delete("/{annotation_id:int}", status_code=204)
    async def delete_annotation(
        self, services: ServicesDep, caller: CallerDep, annotation_id: FromPath[int]
    ) -> None:
        caller.require_user("editor", "deleting an annotation")
        await services.store.annotations.delete(caller.org_id, check_id(annotation_id))
