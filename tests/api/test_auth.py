"""Auth and tenancy: tokens, roles, org from the credential only."""

from __future__ import annotations

from tests.api.conftest import pg_exec


async def test_missing_malformed_unknown_token_is_401(api, org):
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer cpk_not_a_user_token"},
        {"Authorization": "Bearer cpt_unknown"},
    ):
        r = await api.get("/dashboards", headers=headers)
        assert r.status_code == 401, headers
        body = r.json()
        assert body["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


async def test_me_reports_org_and_role_from_the_token(api, org):
    for role in ("viewer", "editor", "admin"):
        r = await api.get("/me", headers=org.h(role))
        assert r.status_code == 200
        assert r.json()["org_id"] == org.id
        assert r.json()["role"] == role


async def test_revoked_and_expired_tokens_are_401(api, api_services, org, pg_url):
    api_services.auth.fresh_s = 0  # no lookup cache: revocation is immediate
    assert (await api.get("/me", headers=org.h("viewer"))).status_code == 200
    await pg_exec(pg_url, "UPDATE user_tokens SET revoked_at = now() WHERE org_id = %s", (org.id,))
    assert (await api.get("/me", headers=org.h("viewer"))).status_code == 401
    await pg_exec(
        pg_url,
        "UPDATE user_tokens SET revoked_at = NULL, expires_at = now() - interval '1 minute' "
        "WHERE org_id = %s",
        (org.id,),
    )
    assert (await api.get("/me", headers=org.h("editor"))).status_code == 401


async def test_role_too_low_is_403(api, org):
    body = {"name": "d", "charts": []}
    r = await api.post("/dashboards", json=body, headers=org.h("viewer"))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert r.json()["error"]["where"] == {"required_role": "editor"}
    assert (await api.post("/dashboards", json=body, headers=org.h("editor"))).status_code == 201
    assert (await api.get("/api-keys", headers=org.h("editor"))).status_code == 403
    assert (await api.get("/api-keys", headers=org.h("admin"))).status_code == 200


async def test_org_id_in_a_body_is_refused_not_used(api, org):
    r = await api.post("/dashboards", json={"name": "x", "org_id": 999}, headers=org.h("editor"))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_request"
