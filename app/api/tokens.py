"""Admin: the org's user tokens (`/tokens`): list, create (the secret is in that answer only),
revoke. Revoking drops the token's cached lookups here and closes its sockets on this node;
other nodes follow within CLICKPULSE_AUTH_CACHE_S (their caches expire, their push tiers
re-check open sockets that often)."""

from __future__ import annotations

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody

from app.api.common import MAX_BODY_BYTES, check_id
from app.api.schemas import TokenIn, TokenOut
from app.credentials import hash_secret
from app.deps import AUTH, PrincipalDep, ServicesDep


class TokenController(Controller):
    path = "/tokens"
    tags = ["admin"]
    dependencies = AUTH
    request_max_body_size = MAX_BODY_BYTES

    @get("/")
    async def list_tokens(self, services: ServicesDep, principal: PrincipalDep) -> list[TokenOut]:
        """The org's user tokens, revoked and expired ones included (prefix only)."""
        principal.require("admin")
        rows = await services.store.tokens.list(principal.org_id)
        return [msgspec.convert(r, TokenOut) for r in rows]

    @post("/")
    async def create_token(
        self, services: ServicesDep, principal: PrincipalDep, data: JSONBody[TokenIn]
    ) -> TokenOut:
        """A new token for `email` with `role` in this org (the member's role is set to it);
        `token` is in this answer only. Expires after `ttl_days` (default
        CLICKPULSE_TOKEN_TTL_DAYS)."""
        principal.require("admin")
        ttl_days = data.ttl_days if data.ttl_days is not None else services.settings.token_ttl_days
        row, secret = await services.store.tokens.create(
            principal.org_id, data.email.strip(), data.role, ttl_days
        )
        services.auth.created(hash_secret(secret))
        out = msgspec.convert(row, TokenOut)
        out.token = secret
        return out

    @delete("/{token_id:int}", status_code=204)
    async def revoke_token(
        self, services: ServicesDep, principal: PrincipalDep, token_id: FromPath[int]
    ) -> None:
        """Revoke a token (idempotent): requests with it are refused from now on (on other
        nodes within CLICKPULSE_AUTH_CACHE_S) and its WebSockets are closed with 4401."""
        principal.require("admin")
        token_hash = await services.store.tokens.revoke(principal.org_id, check_id(token_id))
        services.auth.revoked(token_hash)
        if "push" in services.settings.roles and services.push is not None:
            services.push.close_token(token_hash)
