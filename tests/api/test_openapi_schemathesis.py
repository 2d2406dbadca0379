"""schemathesis against the real app: the OpenAPI document at /schema/openapi.json is the API.

The document is loaded from the running app (real chDB, PostgreSQL and Redis through the
fixtures). Cases are generated from it by schemathesis (positive and negative data, a fixed
seed, derandomized, no example database), sent to the app through the in-process test client,
and every answer is checked: no 5xx, a status the operation documents, a documented content
type, a body matching the documented schema, and the documented response headers.

Bounded: `CASES_PER_OPERATION` cases per operation and mode (a few hundred in all). Generation
happens first, outside the event loop (hypothesis is synchronous); the requests follow.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import build_services, insert_metric, make_app, seed_events

SEED = 20261203
# Generated cases of these would revoke the admin token the rest of the run uses (small ids
# exist); they get the unauthenticated cases only (tests/api/test_tokens.py covers them).
SELF_DESTRUCTIVE = {("DELETE", "/tokens/{token_id}")}
CASES_PER_OPERATION = {GenerationMode.POSITIVE: 10, GenerationMode.NEGATIVE: 4}
UNAUTHENTICATED_CASES = 1
ANSWER_WITHIN_S = 60  # a very loose bound: it proves that no request hangs
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def generate(operation: Any, mode: GenerationMode, count: int, **fixed: Any) -> list[Any]:
    """`count` cases of `operation` (fewer if hypothesis runs out), always the same ones."""
    cases: list[Any] = []

    @seed(SEED)
    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode, **fixed))
    def collect(case: Any) -> None:
        if len(cases) < count:
            cases.append(case)

    try:
        collect()
    except Unsatisfiable:  # nothing to negate in an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE
    return cases


def _request_kwargs(case: Any, headers: dict[str, str]) -> dict[str, Any]:
    """schemathesis' requests-style kwargs as httpx wants them."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers") or {},
        "params": kwargs.get("params"),
    }
    if kwargs.get("cookies"):  # none are documented; httpx takes them per client only
        out["headers"]["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
    if "json" in kwargs:
        out["content"] = msgspec.json.encode(kwargs["json"])
        out["headers"].setdefault("Content-Type", "application/json")
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        out["content"] = data if isinstance(data, bytes) else str(data).encode()
    return out


def known_requests(ids: dict[str, int]) -> list[tuple[str, str, dict[str, Any], Any, int]]:
    """Requests that reach the answers random data rarely does (a metric that compiles, SQL
    that runs, a current If-Match), in order: (method, path, path ids, body, expected status).
    Their answers get the same checks as the generated cases."""
    metric = {"metric_id": ids["metric_id"]}
    views = {"name": "views", "definition": {"text": "SELECT count() AS views"}}
    chart = {"chart_type": "line", "metric_id": ids["metric_id"]}
    alert = {"name": "a", "comparator": ">", "threshold": 1, "for_seconds": 60, **metric}
    sql = "SELECT event, count() AS n FROM events GROUP BY event ORDER BY event"
    return [
        *[("POST", "/sql", {}, {"sql": sql, "format": f}, 200) for f in ("json", "csv", "parquet")],
        ("POST", "/query", {}, {"definition": views["definition"], "group_by": "country"}, 200),
        ("POST", "/metrics", {}, {"name": "users", "definition": {"text": "SELECT uniq(user_id) AS u"}}, 201),
        ("POST", "/metrics", {}, views, 409),  # name_taken
        ("POST", "/alerts", {}, {**alert, "name": "b"}, 201),
        ("POST", "/alerts/backtest", {}, {**alert, "from": "now-1h"}, 200),
        ("POST", "/ui/data/heatmap", {}, metric, 200),
        ("POST", "/ui/data/top", {}, {**metric, "dimension": "country"}, 200),
        ("PUT", "/metrics/{metric_id}", metric, {**views, "version": 1}, 200),
        ("PUT", "/metrics/{metric_id}", metric, {**views, "version": 1}, 409),  # stale
        ("PUT", "/dashboards/{dashboard_id}", {"dashboard_id": ids["dashboard_id"]},
         {"name": "d2", "charts": [chart], "version": 1}, 200),
        ("PUT", "/alerts/{alert_id}", {"alert_id": ids["alert_id"]}, {**alert, "version": 1}, 200),
        ("DELETE", "/metrics/{metric_id}", metric, None, 428),
        ("DELETE", "/dashboards/{dashboard_id}", {"dashboard_id": ids["dashboard_id"]}, None, 428),
    ]  # fmt: skip


@pytest.fixture
async def fuzzed_app(ch, pg_url, redis_url, app_settings, make_org):
    """The app over real chDB, PostgreSQL and Redis, with an org that has data and objects."""
    from litestar.testing import AsyncTestClient

    # Schemathesis sends hundreds of deliberately unauthenticated requests from one address:
    # the failed-attempt throttle (tested in tests/api/test_tokens.py) would then refuse the
    # known requests' first use of other roles' tokens with 429.
    lenient = msgspec.structs.replace(app_settings, auth_fail_max=1_000_000)
    services = build_services(ch, pg_url, redis_url, base=lenient)
    org = await make_org("fuzz")
    now = time.time()
    seed_events(
        ch,
        [
            {"org_id": org.id, "ts": now - 60 * i, "event": e, "user_id": f"u{i}", "value": i}
            for i, e in enumerate(["pageview", "purchase", "error", "signup"] * 5)
        ],
    )
    metric_id = await insert_metric(pg_url, org.id, "views", "SELECT count() AS views")
    async with AsyncTestClient(app=make_app(services)) as client:
        headers = org.h("admin")
        dashboard = await client.post(
            "/dashboards",
            json={"name": "d", "charts": [{"chart_type": "line", "metric_id": metric_id}]},
            headers=headers,
        )
        alert = await client.post(
            "/alerts",
            json={
                "name": "a",
                "metric_id": metric_id,
                "comparator": ">",
                "threshold": 1,
                "for_seconds": 60,
            },
            headers=headers,
        )
        assert dashboard.status_code == 201 and alert.status_code == 201, alert.text
        ids = {
            "metric_id": metric_id,
            "dashboard_id": dashboard.json()["id"],
            "alert_id": alert.json()["id"],
        }
        yield client, org, ids


async def test_the_api_answers_as_its_openapi_document_says(fuzzed_app):
    client, org, ids = fuzzed_app
    document = (await client.get("/schema/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    admin = org.h("admin")

    planned: list[tuple[Any, dict[str, str]]] = []
    expected_statuses: list[int] = []  # of the known requests, planned last
    for result in schema.get_all_operations():
        operation = result.ok()
        own_ids = {
            p.name: ids[p.name] for p in operation.path_parameters if p.name in ids
        }  # also cases on objects that exist, so success answers are checked too
        auth = (
            {"Authorization": f"Bearer {org.api_key}"} if operation.path == "/v1/events" else admin
        )
        for mode, count in CASES_PER_OPERATION.items():
            if (operation.method.upper(), operation.path) in SELF_DESTRUCTIVE:
                break
            cases = generate(operation, mode, count)
            if own_ids and mode is GenerationMode.POSITIVE:
                cases += generate(operation, mode, count, path_parameters=own_ids)
            planned += [(case, auth) for case in cases]
        planned += [
            (case, {})
            for case in generate(operation, GenerationMode.POSITIVE, UNAUTHENTICATED_CASES)
        ]

    for method, path, path_ids, body, expected in known_requests(ids):
        operation = schema[path][method]
        case = operation.Case(
            path_parameters=path_ids,
            **({} if body is None else {"body": body, "media_type": "application/json"}),
        )
        planned.append((case, admin))
        expected_statuses.append(expected)

    failures: list[str] = []
    statuses: dict[int, int] = {}
    by_operation: dict[str, set[int]] = {}
    known_from = len(planned) - len(expected_statuses)
    for number, (case, headers) in enumerate(planned):
        try:
            response = await asyncio.wait_for(
                client.request(**_request_kwargs(case, headers)), ANSWER_WITHIN_S
            )
        except TimeoutError:
            failures.append(f"{case.method} {case.formatted_path}: no answer: {case!r}"[:1500])
            continue
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if number >= known_from and response.status_code != expected_statuses[number - known_from]:
            failures.append(
                f"{case.method} {case.formatted_path}: {response.status_code} "
                f"(expected {expected_statuses[number - known_from]}): {response.text[:300]}"
            )
        by_operation.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as exc:
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{str(exc).strip()[:800]}\n  body: {response.text[:300]}"
            )

    print(f"{len(planned)} cases, statuses {sorted(statuses.items())}")
    for name, seen in sorted(by_operation.items()):
        print("  ", name, sorted(seen))
    assert len(planned) >= 200, len(planned)
    assert not failures, f"{len(failures)} of {len(planned)} cases failed:\n" + "\n".join(
        failures[:20]
    )
    # The run reached real answers, not only refusals.
    assert statuses.get(200, 0) + statuses.get(201, 0) + statuses.get(204, 0) >= 20, statuses
    assert statuses.get(401, 0) >= len(document["paths"]) - 3, statuses
