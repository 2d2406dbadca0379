"""JSON nesting depth (app/jsondepth.py): measured without decoding, refused before decoding on
every body-taking route, in JSON query parameters and in WebSocket frames (tests/push)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.routes import HTTPRoute

from app.ingest.compat import SEGMENT_PATHS
from app.jsondepth import nesting_depth, too_deep
from app.server import create_app

DEEP = 100_000
DEEP_ARRAY = b"[" * DEEP + b"]" * DEEP
# 40,000 levels: 240 KB, under the 256 KiB limit of config bodies (more would be a 413).
DEEP_OBJECT_LEVELS = 40_000
DEEP_OBJECT = b'{"a":' * DEEP_OBJECT_LEVELS + b"1" + b"}" * DEEP_OBJECT_LEVELS
DEEP_UNCLOSED = b"[" * DEEP  # no decoder gets to the end to see it is malformed
DEEP_BODIES = {"array": DEEP_ARRAY, "object": DEEP_OBJECT, "unclosed": DEEP_UNCLOSED}

# POST/PUT handlers that read no body: a deep body must still not hurt them, but they answer
# whatever they answer without it (here 404: no alert 1).
# Routes that read no body (it is never decoded) → what they answer whatever it holds.
BODYLESS = {
    "/alerts/{alert_id:int}/test": 404,
    "/ws/ticket": 201,
    "/alerts/channels/{channel_id:int}/secret": 404,  # no body: rotates an (absent) channel's secret
    "/dashboards/{dashboard_id:int}/duplicate": 404,  # no body: copies an (absent) dashboard
    "/metrics/{metric_id:int}/duplicate": 404,  # no body: copies an (absent) metric
}
# Routes whose own body limit is below the deep bodies' size: refused whole (413), never decoded.
SMALL_BODIES = {"/annotations"}


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b"[]", 1),
        (b"[[], [[]], {}]", 3),
        (b'{"a": {"b": [1, {"c": null}]}}', 4),
        (b'["[[[[", "{{{{"]', 1),  # brackets in strings are text
        (b'["\\"[[[", [1]]', 2),  # an escaped quote does not end the string
        (b'["\\\\", [[1]]]', 3),  # an escaped backslash does not escape the quote after it
        (b'["\\\\\\"[[", [1]]', 2),
        ('["é[[", {"ü": ["x"]}]', 3),
        (b"]]]", 0),
        (b'["unterminated [[[', 4),  # malformed: counted conservatively
        (DEEP_ARRAY, DEEP),
        (DEEP_OBJECT, DEEP_OBJECT_LEVELS),
        (DEEP_UNCLOSED, DEEP),
    ],
)
def test_nesting_depth_is_exact_outside_strings(text, depth):
    assert nesting_depth(text) == depth


def test_too_deep_is_strictly_more_than_the_limit():
    assert not too_deep(b"[" * 64 + b"]" * 64, 64)
    assert too_deep(b"[" * 65 + b"]" * 65, 64)
    # Many brackets, shallow: the count alone does not decide.
    assert not too_deep(b"[" + b"{}," * 1000 + b"{}]", 64)


def _body_routes(app: Any) -> list[tuple[str, str, str]]:
    """(method, template path, request path) of every POST/PUT/PATCH handler the app mounts."""
    out = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method in sorted(route.methods & {"POST", "PUT", "PATCH"}):
            path = re.sub(r"\{[^}:]+:int\}", "1", route.path)
            path = re.sub(r"\{[^}]+\}", "x", path)
            out.append((method, route.path, path))
    return out


def test_every_body_route_is_enumerated(services):
    routes = {(m, p) for m, p, _ in _body_routes(create_app(services))}
    # The enumeration sees the routes (a broken enumeration would make the tests below vacuous).
    assert {("POST", "/v1/events"), ("POST", "/query"), ("PUT", "/org/limits")} <= routes
    assert len(routes) >= 15


def _assert_error_shape(response: Any) -> dict[str, Any]:
    body = response.json()
    assert {"code", "message"} <= set(body["error"]), body
    if set(body) != {"error"}:
        # Segment's routes repeat code and message at the top, where Segment's and
        # RudderStack's SDKs read them (app/ingest/compat.py, SegmentErrorResponse).
        assert response.request.url.path in SEGMENT_PATHS, body
        assert body == {
            "error": body["error"],
            **{k: body["error"][k] for k in ("code", "message")},
        }
    return body["error"]


@pytest.mark.parametrize("shape", sorted(DEEP_BODIES))
async def test_deep_bodies_never_500_unauthenticated(client, shape):
    for method, template, path in _body_routes(client.app):
        response = await client.request(
            method, path, content=DEEP_BODIES[shape], headers={"Content-Type": "application/json"}
        )
        where = f"{method} {template}"
        allowed = (400, 401, 413) if template in SMALL_BODIES else (400, 401)
        assert response.status_code in allowed, (where, response.status_code, response.text)
        error = _assert_error_shape(response)
        if response.status_code == 400:
            assert error["code"] == "invalid_request", where
            assert error["where"]["max_depth"] == 64, where


@pytest.mark.parametrize("shape", sorted(DEEP_BODIES))
async def test_deep_bodies_are_400_invalid_request_authenticated(client, org, shape):
    for method, template, path in _body_routes(client.app):
        key = org.api_key if template == "/v1/events" else org.admin_token
        response = await client.request(
            method,
            path,
            content=DEEP_BODIES[shape],
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        where = f"{method} {template}"
        if template in BODYLESS:
            assert response.status_code == BODYLESS[template], (where, response.text)
            continue
        if template in SMALL_BODIES:
            assert response.status_code == 413, (where, response.status_code, response.text)
            continue
        assert response.status_code == 400, (where, response.status_code, response.text)
        error = _assert_error_shape(response)
        assert error["code"] == "invalid_request", (where, error)
        assert error["message"] == "the JSON nests deeper than 64 levels"


async def test_ndjson_ingest_body_is_bounded_too(client, org):
    response = await client.post(
        "/v1/events",
        content=b'{"event": "ok"}\n' + DEEP_OBJECT,
        headers={"Content-Type": "application/x-ndjson", **org.ingest_headers},
    )
    assert response.status_code == 400
    assert _assert_error_shape(response)["code"] == "invalid_request"


async def test_depth_within_the_limit_is_decoded_as_before(client, org):
    # 64 levels reach the decoder, which answers its own (non-depth) validation error.
    body = b'{"name": "d", "panels": ' + b"[" * 63 + b"]" * 63 + b"}"
    response = await client.post("/dashboards", content=body, headers=org.admin_headers)
    assert response.status_code == 400
    assert "deeper" not in response.json()["error"]["message"]


async def test_the_limit_is_a_setting(make_client, org):
    async with make_client(max_json_depth=4) as (client, _):
        response = await client.post(
            "/query", content=b'{"a": [[[[1]]]]}', headers=org.admin_headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "the JSON nests deeper than 4 levels"


async def test_deep_json_query_parameters_are_400(client, org):
    created = await client.post(
        "/metrics",
        json={"name": "m", "definition": {"text": "SELECT count() AS n"}},
        headers=org.admin_headers,
    )
    assert created.status_code == 201, created.text
    url = f"/metrics/{created.json()['id']}/history"
    deep = "[" * 10_000 + "]" * 10_000
    for params in ({"filter": deep}, {"compare": ("{" + '"a":') * 500 + "1" + "}" * 500}):
        response = await client.get(url, params=params, headers=org.admin_headers)
        assert response.status_code == 400, (params.keys(), response.text)
        error = _assert_error_shape(response)
        assert error["code"] == "invalid_request"
        assert error["where"]["param"] in ("filter[0]", "compare")
