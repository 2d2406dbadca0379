"""Annotations over HTTP: create with an ingest key or an editor token, list by range, delete;
the org boundary (another org's ids and annotations), what an ingest key may not do, limits."""

from __future__ import annotations

import pytest

from app.api import annotations as annotations_api

T0 = "2026-12-01T10:00:00Z"


async def create(api, headers, **body):
    return await api.post(
        "/annotations", json={"time": T0, "title": "deploy", **body}, headers=headers
    )


async def test_create_list_delete(api, org):
    r = await create(api, org.h("editor"), title="deploy v1.2", tags=["deploy", "api"])
    assert r.status_code == 201, r.text
    point = r.json()
    assert point == {
        "id": point["id"], "time": "2026-12-01T10:00:00Z", "end": None,
        "title": "deploy v1.2", "tags": ["deploy", "api"], "source": "user",
    }  # fmt: skip
    # An ingest key creates (a deploy script); a span with an end; a time in another zone.
    r = await api.post(
        "/annotations",
        json={
            "time": "2026-12-01T12:30:00+02:00",
            "end": "2026-12-01T11:00:00Z",
            "title": "incident",
        },
        headers={"Authorization": f"Bearer {org.api_key}"},
    )
    assert r.status_code == 201, r.text
    span = r.json()
    assert (span["time"], span["end"], span["source"]) == (
        "2026-12-01T10:30:00Z", "2026-12-01T11:00:00Z", "key",
    )  # fmt: skip
    far = (await create(api, org.h("editor"), time="2026-11-01T00:00:00Z", title="old")).json()

    r = await api.get(
        "/annotations", params={"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T12:00:00Z"},
        headers=org.h("viewer"),
    )  # fmt: skip
    assert r.status_code == 200
    assert [a["id"] for a in r.json()] == [point["id"], span["id"]]
    # A span reaches into a range that starts after its start.
    r = await api.get(
        "/annotations", params={"from": "2026-12-01T10:45:00Z", "to": "2026-12-01T12:00:00Z"},
        headers=org.h("viewer"),
    )  # fmt: skip
    assert [a["id"] for a in r.json()] == [span["id"]]
    # [from, to): an annotation at `to` is outside.
    r = await api.get(
        "/annotations", params={"from": "2026-12-01T09:00:00Z", "to": T0}, headers=org.h("viewer")
    )
    assert r.json() == []

    r = await api.delete(f"/annotations/{point['id']}", headers=org.h("editor"))
    assert r.status_code == 204
    r = await api.delete(f"/annotations/{point['id']}", headers=org.h("editor"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.get(
        "/annotations",
        params={"from": "2026-10-01T00:00:00Z", "to": "2026-12-02T00:00:00Z"},
        headers=org.h("viewer"),
    )
    assert [a["id"] for a in r.json()] == [far["id"], span["id"]]


async def test_other_orgs_annotations_are_unreachable(api, org, other_org):
    mine = (await create(api, org.h("editor"), title="ours")).json()
    theirs = (await create(api, other_org.h("editor"), title="theirs")).json()
    window = {"from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z"}
    r = await api.get("/annotations", params=window, headers=org.h("viewer"))
    assert [a["title"] for a in r.json()] == ["ours"]
    # Another org's id: 404, the same answer as an id that never existed, and it stays.
    r = await api.delete(f"/annotations/{theirs['id']}", headers=org.h("admin"))
    assert r.status_code == 404
    never = await api.delete("/annotations/999999", headers=org.h("admin"))
    assert (never.status_code, never.json()) == (404, r.json())
    r = await api.get("/annotations", params=window, headers=other_org.h("viewer"))
    assert [a["id"] for a in r.json()] == [theirs["id"]]
    # An ingest key creates in its own org only.
    r = await api.post(
        "/annotations", json={"time": T0, "title": "by key"},
        headers={"Authorization": f"Bearer {other_org.api_key}"},
    )  # fmt: skip
    r = await api.get("/annotations", params=window, headers=org.h("viewer"))
    assert [a["id"] for a in r.json()] == [mine["id"]]


async def test_ingest_key_may_only_create_and_viewer_may_only_read(api, org):
    a = (await create(api, org.h("editor"))).json()
    key = {"Authorization": f"Bearer {org.api_key}"}
    r = await api.delete(f"/annotations/{a['id']}", headers=key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await api.get("/annotations", headers=key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await api.delete(f"/annotations/{a['id']}", headers=org.h("viewer"))
    assert r.status_code == 403
    r = await create(api, org.h("viewer"))
    assert r.status_code == 403
    r = await api.post(
        "/annotations",
        json={"time": T0, "title": "x"},
        headers={"Authorization": "Bearer cpk_" + "A" * 43},
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = await api.get(
        "/annotations",
        params={"from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z"},
        headers=org.h("viewer"),
    )
    assert [x["id"] for x in r.json()] == [a["id"]]  # still there


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"time": T0, "title": ""}, "title"),
        ({"time": T0, "title": "x" * 201}, "title"),
        ({"time": T0, "title": "a\u0000b"}, "title"),  # PostgreSQL refuses NUL: never a 500
        ({"time": T0, "title": "two\nlines"}, "title"),
        ({"time": T0, "title": "x", "tags": ["t"] * 11}, "tags"),
        ({"time": T0, "title": "x", "tags": ["a" * 51]}, "tags"),
        ({"time": "2026-12-01T10:00:00", "title": "x"}, "time"),  # no zone: ambiguous
        ({"time": T0, "title": "x", "color": "red"}, "color"),
    ],
)
async def test_refuses_bad_bodies(api, org, body, field):
    r = await api.post("/annotations", json=body, headers=org.h("editor"))
    assert r.status_code == 400, r.text
    assert field in r.text


async def test_end_before_time_and_body_size(api, org):
    r = await create(api, org.h("editor"), end="2026-12-01T09:00:00Z")
    assert r.status_code == 422 and r.json()["error"]["where"] == {"field": "end"}
    r = await create(api, org.h("editor"), title="x" * 20_000)
    assert r.status_code == 413


async def test_count_limit_per_org(api, org, other_org, monkeypatch):
    monkeypatch.setattr(annotations_api, "MAX_PER_ORG", 2)
    for _ in range(2):
        assert (await create(api, org.h("editor"))).status_code == 201
    r = await create(api, org.h("editor"))
    assert r.status_code == 409
    assert r.json()["error"] == {
        "code": "too_many_annotations", "message": r.json()["error"]["message"], "where": {"limit": 2},
    }  # fmt: skip
    assert (await create(api, other_org.h("editor"))).status_code == 201  # per org


async def test_a_revoked_ingest_key_cannot_create(api, org):
    keys = (await api.get("/api-keys", headers=org.h("admin"))).json()
    assert len(keys) == 1
    r = await api.delete(f"/api-keys/{keys[0]['id']}", headers=org.h("admin"))
    assert r.status_code in (200, 204), r.text
    r = await api.post(
        "/annotations", json={"time": T0, "title": "late deploy"},
        headers={"Authorization": f"Bearer {org.api_key}"},
    )  # fmt: skip
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"
    r = await api.get("/annotations", params={"from": T0, "to": "now"}, headers=org.h("viewer"))
    assert r.json() == []
