"""The OpenAPI document documents, for every route, the errors that route can answer
(app/openapi.py): checked over the real app's routes, and on a new route nobody documented."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
import pytest
from litestar import Litestar, get, put
from litestar.params import FromPath
from litestar.routes import HTTPRoute

from app.api.common import IfMatch
from app.deps import AUTH, PrincipalDep
from app.openapi import ApiOpenAPIConfig, api_doc

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture
async def document(client) -> dict[str, Any]:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


def _operations(app: Litestar, document: dict[str, Any]):
    """(method, path, handler, operation) for every documented route of `app`."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            operation = document["paths"].get(route.path_format or "/", {}).get(method.lower())
            if operation is not None:
                yield method, route.path_format, handler, operation


def _error_body(operation: dict[str, Any], status: int) -> Any:
    answer = operation["responses"].get(str(status))
    assert answer is not None, f"{status} is not documented"
    return answer["content"]["application/json"]["schema"]


async def test_every_route_documents_the_errors_it_can_answer(client, document):
    app = client.app
    seen = 0
    for method, path, handler, operation in _operations(app, document):
        seen += 1
        where = f"{method} {path}"
        params = operation.get("parameters", [])
        if "principal" in handler.resolve_dependencies():
            for status in (401, 403, 429, 503):
                assert _error_body(operation, status) == ERROR_REF, (where, status)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], where
            for status in (429, 503):
                retry = operation["responses"][str(status)]["headers"]["Retry-After"]
                assert retry["required"] is True, (where, status)
        if any(p["in"] == "path" for p in params):
            assert _error_body(operation, 404) == ERROR_REF, where
        if "requestBody" in operation:
            assert {"400", "413"} <= set(operation["responses"]), where
        # A handler that applies the If-Match rule declares the header and documents it.
        if "expected_version(" in inspect.getsource(handler.fn):
            assert any(p["in"] == "header" and p["name"] == "If-Match" for p in params), where
            for status in (400, 409, 428):
                assert _error_body(operation, status) == ERROR_REF, (where, status)
        # Every error answer is the one error shape (only /readyz's 503 is its own body).
        for status, answer in operation["responses"].items():
            if status[0] in "45" and (path, status) != ("/readyz", "503"):
                assert answer["content"] == {"application/json": {"schema": ERROR_REF}}, (
                    where,
                    status,
                )
    assert seen >= 30
    assert document["components"]["schemas"]["ErrorResponse"]["required"] == ["error"]
    assert set(document["components"]["schemas"]["ErrorBody"]["properties"]) == {
        "code",
        "message",
        "where",
    }
    # Litestar's own error body ({status_code, detail, extra}) is described nowhere.
    assert "status_code" not in msgspec.json.encode(document).decode()


async def test_the_documented_error_body_is_what_the_api_sends(client, document, org):
    import jsonschema_rs

    schemas = document["components"]["schemas"]
    resolved = {
        "type": "object",
        "properties": {"error": schemas["ErrorBody"]},
        "required": schemas["ErrorResponse"]["required"],
    }
    validator = jsonschema_rs.validator_for(resolved)
    answers = [
        await client.get("/me"),  # 401
        await client.get("/dashboards/999999", headers=org.admin_headers),  # 404
        await client.put("/dashboards/1", json={"name": "x"}, headers=org.admin_headers),  # 428
        await client.post("/dashboards", content=b"{", headers=org.admin_headers),  # 400
    ]
    assert [a.status_code for a in answers] == [401, 404, 428, 400]
    for answer in answers:
        assert validator.is_valid(answer.json()), answer.text


async def test_the_if_match_rule_is_documented_on_versioned_writes(document):
    for path in ("/dashboards/{dashboard_id}", "/metrics/{metric_id}", "/alerts/{alert_id}"):
        for method in ("put", "delete"):
            operation = document["paths"][path][method]
            names = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
            assert names == ["If-Match"], (path, method)
            assert "428" in operation["responses"] and "409" in operation["responses"]
        for method, status in (("get", "200"), ("put", "200")):
            etag = document["paths"][path][method]["responses"][status]["headers"]["ETag"]
            assert etag["required"] is True, (path, method)
    events = document["paths"]["/alerts/{alert_id}/events"]["get"]["responses"]["200"]
    assert events["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AlertEventsOut"
    }
    # /sql answers three media types; /readyz's 503 is its readiness body.
    sql = document["paths"]["/sql"]["post"]["responses"]["200"]["content"]
    assert set(sql) == {"application/json", "text/csv", "application/vnd.apache.parquet"}
    ready = document["paths"]["/readyz"]["get"]["responses"]["503"]
    assert ready["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }
    events = document["paths"]["/v1/events"]["post"]
    assert set(events["responses"]) == {"200", "400", "401", "413", "429", "503"}
    assert set(events["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert "requestBody" in document["paths"]["/alerts"]["post"]


def test_a_new_route_is_documented_without_anyone_remembering_to():
    """Another engineer's route: authenticated, a path id, If-Match, an extra 409."""

    @put("/widgets/{widget_id:int}", dependencies=AUTH, opt=api_doc(errors={409}))
    async def update_widget(
        principal: PrincipalDep, widget_id: FromPath[int], if_match: IfMatch = None
    ) -> dict[str, int]:
        return {}

    @get("/open", sync_to_thread=False)
    def open_route() -> dict[str, int]:
        return {}

    config = ApiOpenAPIConfig(title="t", version="1", path="/schema")
    app = Litestar([update_widget, open_route], openapi_config=config)
    config.bind(app)
    document = app.openapi_schema.to_schema()
    widget = document["paths"]["/widgets/{widget_id}"]["put"]["responses"]
    assert set(widget) == {"200", "400", "401", "403", "404", "409", "428", "429", "503"}
    assert widget["401"]["content"]["application/json"]["schema"] == ERROR_REF
    assert set(document["paths"]["/open"]["get"]["responses"]) == {"200"}
