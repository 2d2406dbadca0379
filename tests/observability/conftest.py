"""Observability tests: the real app served by uvicorn in the test's event loop (as the push
tests do), its metrics port scraped over HTTP and parsed by prometheus_client's parser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from tests.conftest import build_test_services
from tests.push.conftest import Node, serve

SCRAPE_TOKEN = "scrape-" + "s3cr3t" * 4  # the operator's CLICKPULSE_METRICS_TOKEN


class Samples(dict):
    """{(sample name, frozenset(labels)): value} of one scrape."""

    def get_value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the series is absent (not yet counted)."""
        return self.get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> dict[frozenset, float]:
        return {labels: v for (n, labels), v in self.items() if n == name}


def parse(text: str) -> Samples:
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metrics_url(node: Node) -> str:
    server = node.services.metrics_server
    assert server is not None and server.port
    return f"http://127.0.0.1:{server.port}/metrics"


async def scrape(node: Node, token: str = SCRAPE_TOKEN) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(metrics_url(node), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


@pytest.fixture
def metrics_settings(app_settings: Settings) -> Settings:
    return msgspec.structs.replace(
        app_settings,
        push_tick_ms=0,  # poll rounds are driven by the tests
        push_poll_all_s=0,
        alert_sync_s=0,
        metrics_port=0,
        metrics_token=SCRAPE_TOKEN,
        limit_rate_per_s=1000.0,
        limit_burst=1000,
    )


@pytest.fixture
def make_node(ch, pg_url: str, metrics_settings: Settings):
    """`async with make_node(**settings) as node:` — a served app with its metrics port."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Node]:
        settings = msgspec.structs.replace(metrics_settings, **overrides)
        async with serve(build_test_services(ch, pg_url, settings)) as node:
            yield node

    return factory
