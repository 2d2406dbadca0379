"""Notification channels and silences of an org's alerts (docs/alerts.md, "Channels" and
"Silences"). Editors write, viewers read; ids of another org are 404 (or, inside an alert or
a silence, a 422 naming the field) — never said to exist."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import FromPath, QueryParameter

from app.alerts.channels import check_address, check_smtp_host, new_secret
from app.alerts.netguard import check_url
from app.api.alerts import decode_body
from app.api.common import MAX_BODY_BYTES, IfMatch, check_id, etag, expected_version
from app.api.schemas import (
    ChannelIn,
    ChannelOut,
    EmailChannelIn,
    SilenceIn,
    SilenceOut,
)
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.errors import ApiError
from app.openapi import api_doc
from app.store import NotFound

MAX_SILENCE_S = 366 * 86400  # a silence longer than a year is a disabled alert


def _public_settings(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """What may be shown of a channel's settings (no URL path/query, no password)."""
    if kind == "email":
        shown = {k: config.get(k) for k in ("host", "port", "security", "from", "to", "username")}
        return shown | {"has_password": bool(config.get("password"))}
    parts = urlsplit(config.get("url", ""))
    return {"url_hint": f"{parts.scheme}://{parts.netloc}/…"}


def _channel_out(row: dict[str, Any], secret: str | None = None) -> ChannelOut:
    return ChannelOut(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        settings=_public_settings(row["kind"], row["config"]),
        alert_ids=list(row["alert_ids"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        secret=secret,
    )


def _config(data: Any, allow_private: bool, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The settings to store, checked like an alert's webhook_url (SSRF guard); what an
    update leaves out (a URL, a password) is kept from `stored`."""
    if isinstance(data, EmailChannelIn):
        problem = check_smtp_host(data.host, data.port, allow_private=allow_private)
        if problem:
            raise ApiError(422, "invalid_smtp_host", f"host {problem}", {"field": "host"})
        for field, address in [("from", data.from_)] + [
            (f"to[{i}]", a) for i, a in enumerate(data.to)
        ]:
            problem = check_address(address)
            if problem:
                raise ApiError(422, "invalid_email", problem, {"field": field})
        password = data.password
        if password is None and stored is not None and data.username == stored.get("username"):
            password = stored.get("password")
        if password and not data.username:
            raise ApiError(
                422, "invalid_field", "a password needs a username", {"field": "username"}
            )
        if data.username and data.security == "none":
            raise ApiError(
                422,
                "invalid_field",
                "credentials are never sent without TLS: use security starttls or tls",
                {"field": "security"},
            )
        return {
            "host": data.host,
            "port": data.port,
            "security": data.security,
            "from": data.from_,
            "to": list(data.to),
            "username": data.username,
            "password": password,
        }
    url = data.url if data.url is not None else (stored or {}).get("url")
    if url is None:
        raise ApiError(422, "invalid_field", "url is required", {"field": "url"})
    problem = check_url(url, allow_private=allow_private)
    if problem is not None:
        raise ApiError(422, "invalid_url", f"url {problem}", {"field": "url"})
    return {"url": url}


class ChannelController(Controller):
    path = "/alerts/channels"
    tags = ["alerts"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @get("/")
    async def list_channels(
        self, services: ServicesDep, principal: PrincipalDep
    ) -> list[ChannelOut]:
        return [_channel_out(r) for r in await services.store.channels.list(principal.org_id)]

    @post("/", opt=api_doc(request_body=ChannelIn, etag=True))
    async def create_channel(
        self, request: Request, services: ServicesDep, principal: PrincipalDep
    ) -> Response[ChannelOut]:
        """A webhook, Slack or email channel. The answer holds the signing `secret`: it is
        shown this once (rotate it with POST /alerts/channels/{id}/secret). Body: ChannelIn."""
        principal.require("editor")
        data = await decode_body(request, ChannelIn)
        kind = type(data).__struct_config__.tag
        config = _config(data, services.settings.alert_webhook_allow_private, None)
        secret = new_secret()
        row = await services.store.channels.create(
            principal.org_id, data.name, kind, config, secret
        )
        return Response(
            _channel_out(row, secret), status_code=201, headers={"ETag": etag(row["version"])}
        )

    @get("/{channel_id:int}", opt=api_doc(etag=True))
    async def get_channel(
        self, services: ServicesDep, principal: PrincipalDep, channel_id: FromPath[int]
    ) -> Response[ChannelOut]:
        row = await services.store.channels.get(principal.org_id, check_id(channel_id))
        return Response(_channel_out(row), headers={"ETag": etag(row["version"])})

    @put("/{channel_id:int}", opt=api_doc(request_body=ChannelIn, etag=True))
    async def update_channel(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        channel_id: FromPath[int],
        if_match: IfMatch = None,
    ) -> Response[ChannelOut]:
        """New name and settings; the kind cannot change. Body: ChannelIn (with `version`,
        or send If-Match)."""
        principal.require("editor")
        check_id(channel_id)
        data = await decode_body(request, ChannelIn)
        version = expected_version(request, data.version)
        stored = await services.store.channels.stored_config(principal.org_id, channel_id)
        kind = type(data).__struct_config__.tag
        if kind != stored["kind"]:
            raise ApiError(
                422,
                "invalid_field",
                f"this channel is a {stored['kind']} channel",
                {"field": "kind"},
            )
        config = _config(data, services.settings.alert_webhook_allow_private, stored["config"])
        row = await services.store.channels.update(
            principal.org_id, channel_id, version, data.name, config
        )
        return Response(_channel_out(row), headers={"ETag": etag(row["version"])})

    @post("/{channel_id:int}/secret", status_code=200, opt=api_doc(etag=True))
    async def rotate_secret(
        self, services: ServicesDep, principal: PrincipalDep, channel_id: FromPath[int]
    ) -> Response[ChannelOut]:
        """A new signing secret, shown once; the old one stops signing at once."""
        principal.require("editor")
        secret = new_secret()
        row = await services.store.channels.rotate_secret(
            principal.org_id, check_id(channel_id), secret
        )
        return Response(_channel_out(row, secret), headers={"ETag": etag(row["version"])})

    @delete("/{channel_id:int}", status_code=204, opt=api_doc(errors={409}))
    async def delete_channel(
        self,
        request: Request,
        services: ServicesDep,
        principal: PrincipalDep,
        channel_id: FromPath[int],
        if_match: IfMatch = None,
    ) -> None:
        """Refused with 409 `channel_in_use` while alerts notify it."""
        principal.require("editor")
        check_id(channel_id)
        await services.store.channels.delete(
            principal.org_id, channel_id, expected_version(request)
        )


def _instant(value: int | str, field: str) -> datetime:
    """Epoch seconds or ISO 8601 (UTC when no offset) → an aware datetime; else a 422."""
    if isinstance(value, int):
        if not 0 <= value <= 253402300799:
            raise ApiError(422, "invalid_time", f"{field} is out of range", {"field": field})
        return datetime.fromtimestamp(value, UTC)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            422, "invalid_time", f"{field} must be epoch seconds or ISO 8601", {"field": field}
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _silence_out(row: dict[str, Any], now: datetime) -> SilenceOut:
    active = row["starts_at"] <= now < row["ends_at"]
    return msgspec.convert(row | {"active": active}, SilenceOut)


class SilenceController(Controller):
    path = "/alerts/silences"
    tags = ["alerts"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @get("/")
    async def list_silences(
        self,
        services: ServicesDep,
        principal: PrincipalDep,
        include_expired: Annotated[bool, QueryParameter()] = False,
    ) -> list[SilenceOut]:
        """Current and future silences (`include_expired=true`: also the ended ones)."""
        rows = await services.store.silences.list(principal.org_id, include_expired=include_expired)
        now = datetime.now(UTC)
        return [_silence_out(r, now) for r in rows]

    @post("/", opt=api_doc(request_body=SilenceIn))
    async def create_silence(
        self, request: Request, services: ServicesDep, principal: PrincipalDep
    ) -> Response[SilenceOut]:
        """Mute the notifications of one alert, or of every alert of a saved metric, until a
        time; evaluation goes on and events are recorded. Body: SilenceIn."""
        principal.require("editor")
        data = await decode_body(request, SilenceIn)
        if (data.alert_id is None) == (data.metric_id is None):
            raise ApiError(
                422,
                "invalid_field",
                "give exactly one of alert_id and metric_id",
                {"field": "alert_id"},
            )
        ref_field = "alert_id" if data.alert_id is not None else "metric_id"
        ref = data.alert_id if data.alert_id is not None else data.metric_id
        if not 1 <= ref <= 2**31 - 1:
            kind = ref_field.removesuffix("_id")
            raise ApiError(422, f"unknown_{kind}", f"no {kind} with id {ref}", {"field": ref_field})
        now = datetime.now(UTC).replace(microsecond=0)
        starts = now if data.starts is None else _instant(data.starts, "starts")
        until = _instant(data.until, "until")
        if until <= max(starts, now):
            raise ApiError(
                422, "invalid_time", "until must be in the future, after starts", {"field": "until"}
            )
        if (until - now).total_seconds() > MAX_SILENCE_S:
            raise ApiError(
                422,
                "invalid_time",
                "a silence may last at most 366 days (disable the alert)",
                {"field": "until"},
            )
        row = await services.store.silences.create(
            principal.org_id,
            alert_id=data.alert_id,
            metric_id=data.metric_id,
            starts_at=starts,
            ends_at=until,
            reason=data.reason,
            created_by=f"user {principal.user_id}",
        )
        return Response(_silence_out(row, datetime.now(UTC)), status_code=201)

    @delete("/{silence_id:int}", status_code=204)
    async def delete_silence(
        self, services: ServicesDep, principal: PrincipalDep, silence_id: FromPath[int]
    ) -> None:
        """End a silence now (notifications resume with the next event)."""
        principal.require("editor")
        if not 1 <= silence_id <= 2**63 - 1:
            raise NotFound("silence")
        await services.store.silences.delete(principal.org_id, silence_id)
