"""Admin: ingest API keys and the org's quotas; and who am I."""

from __future__ import annotations

from dataclasses import asdict

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody

from app.api.common import MAX_BODY_BYTES, check_id
from app.api.schemas import ApiKeyIn, ApiKeyOut, LimitsIn, LimitsOut, Me
from app.deps import AUTH, PrincipalDep, ServicesDep
from app.limits import validate_overrides


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["admin"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @get("/")
    async def list_keys(self, services: ServicesDep, principal: PrincipalDep) -> list[ApiKeyOut]:
        """The org's ingest keys (prefix only; secrets are never shown again)."""
        principal.require("admin")
        rows = await services.store.api_keys.list(principal.org_id)
        return [msgspec.convert(r, ApiKeyOut) for r in rows]

    @post("/")
    async def create_key(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[ApiKeyIn]
    ) -> ApiKeyOut:
        """A new ingest key; `key` is in this answer only (only its SHA-256 is stored)."""
        principal.require("admin")
        row, secret = await services.store.api_keys.create(principal.org_id, data.name)
        out = msgspec.convert(row, ApiKeyOut)
        out.key = secret
        return out

    @delete("/{key_id:int}", status_code=204)
    async def revoke_key(
        self, services: ServicesDep, principal: PrincipalDep, key_id: FromPath[int]
    ) -> None:
        """Revoke a key (idempotent); ingest refuses it from then on."""
        principal.require("admin")
        await services.store.api_keys.revoke(principal.org_id, check_id(key_id))


class OrgController(Controller):
    path = "/org"
    tags = ["admin"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @get("/limits")
    async def get_limits(self, services: ServicesDep, principal: PrincipalDep) -> LimitsOut:
        principal.require("admin")
        overrides = await services.store.orgs.get_limits(principal.org_id)
        effective = await services.limiter.limits_for(principal.org_id)
        return LimitsOut(
            overrides=overrides,
            effective=asdict(effective),
            ceilings=asdict(services.limiter.ceilings),
        )

    @put("/limits")
    async def set_limits(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[LimitsIn]
    ) -> LimitsOut:
        """Replace the org's quota overrides (fields left out use the defaults). A value above
        the operator's ceiling → 422 `invalid_limits` with `where.field` and `where.ceiling`."""
        principal.require("admin")
        limiter = services.limiter
        overrides = validate_overrides(
            {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None},
            limiter.ceilings,
        )
        saved = await services.store.orgs.set_limits(principal.org_id, overrides)
        limiter.forget(principal.org_id)
        effective = await limiter.limits_for(principal.org_id)
        return LimitsOut(
            overrides=saved, effective=asdict(effective), ceilings=asdict(limiter.ceilings)
        )


@get("/me", tags=["admin"], dependencies=AUTH)
async def me(principal: PrincipalDep) -> Me:
    """The org, user and role of the calling token."""
    return Me(org_id=principal.org_id, user_id=principal.user_id, role=principal.role)
