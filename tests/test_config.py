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


def test_metrics_and_log_settings(monkeypatch):
    monkeypatch.setenv("CLICKPULSE_METRICS_PORT", "9464")
    monkeypatch.setenv("CLICKPULSE_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("CLICKPULSE_METRICS_TOKEN", "t" * 16)
    monkeypatch.setenv("CLICKPULSE_METRICS_TOP_ORGS", "5")
    monkeypatch.setenv("CLICKPULSE_LOG_FORMAT", "JSON")
    settings = Settings.from_env()
    assert (settings.metrics_port, settings.metrics_host) == (9464, "0.0.0.0")
    assert (settings.metrics_token, settings.metrics_top_orgs) == ("t" * 16, 5)
    assert settings.log_format == "json"
    assert Settings().metrics_port is None and Settings().log_format == "text"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # Every org's figures on a reachable address without a token: refused.
        ({"metrics_port": 9464, "metrics_host": "0.0.0.0"}, "set CLICKPULSE_METRICS_TOKEN"),
        ({"metrics_port": 9464, "metrics_host": "10.0.0.5"}, "set CLICKPULSE_METRICS_TOKEN"),
        ({"metrics_port": 9464, "metrics_host": "::"}, "set CLICKPULSE_METRICS_TOKEN"),
        ({"metrics_token": "short"}, "at least 16 characters"),
        ({"metrics_top_orgs": -1}, "CLICKPULSE_METRICS_TOP_ORGS"),
        ({"log_format": "xml"}, "CLICKPULSE_LOG_FORMAT must be one of text, json"),
    ],
)
def test_bad_metrics_and_log_settings(values, message):
    with pytest.raises(ValueError, match=message):
        Settings(**values)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_metrics_need_no_token(host):
    assert Settings(metrics_port=0, metrics_host=host).metrics_token is None


def test_the_clickhouse_http_port_is_off_unless_set(monkeypatch):
    monkeypatch.delenv("CLICKPULSE_CLICKHOUSE_HTTP_PORT", raising=False)
    assert Settings.from_env().clickhouse_http_port is None
    monkeypatch.setenv("CLICKPULSE_CLICKHOUSE_HTTP_PORT", "8124")
    assert Settings.from_env().clickhouse_http_port == 8124
    monkeypatch.setenv("CLICKPULSE_CLICKHOUSE_HTTP_PORT", "0")  # any free port
    assert Settings.from_env().clickhouse_http_port == 0
