"""Settings from the environment: defaults, parsing, and clear errors naming the variable."""

from __future__ import annotations

import pytest

from app.config import Settings


def test_defaults_run_the_embedded_stack(monkeypatch):
    for name in ("CLICKPULSE_CLICKHOUSE_URL", "DATABASE_URL", "REDIS_URL", "CLICKPULSE_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings.clickhouse_url is None and settings.database_url is None
    assert settings.redis_url is None and settings.port == 8000


def test_values_are_parsed_by_kind(monkeypatch):
    monkeypatch.setenv("CLICKPULSE_PORT", "9001")
    monkeypatch.setenv("CLICKPULSE_INGEST_KEY_CACHE_TTL_S", "0.5")
    monkeypatch.setenv("CLICKPULSE_INGEST_TRUST_FORWARDED_FOR", "yes")
    monkeypatch.setenv("CLICKPULSE_EVENTS_TTL_DAYS", "")  # empty = default
    settings = Settings.from_env()
    assert settings.port == 9001
    assert settings.ingest_key_cache_ttl_s == 0.5
    assert settings.ingest_trust_forwarded_for is True
    assert settings.events_ttl_days == 90


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CLICKPULSE_PORT", "80x", "CLICKPULSE_PORT must be an integer, got '80x'"),
        ("CLICKPULSE_INGEST_KEY_CACHE_TTL_S", "soon", "must be a number"),
        ("CLICKPULSE_INGEST_TRUST_FORWARDED_FOR", "maybe", "must be a boolean"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_the_clickhouse_http_port_is_off_unless_set(monkeypatch):
    monkeypatch.delenv("CLICKPULSE_CLICKHOUSE_HTTP_PORT", raising=False)
    assert Settings.from_env().clickhouse_http_port is None
    monkeypatch.setenv("CLICKPULSE_CLICKHOUSE_HTTP_PORT", "8124")
    assert Settings.from_env().clickhouse_http_port == 8124
    monkeypatch.setenv("CLICKPULSE_CLICKHOUSE_HTTP_PORT", "0")  # any free port
    assert Settings.from_env().clickhouse_http_port == 0
