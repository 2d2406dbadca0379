"""Offline enrichment: user agent → device class / browser / OS, IP → country."""

from __future__ import annotations

import pytest

from app.ingest.enrich import Enricher, country_of, parse_user_agent
from tests.ingest.helpers import CHROME_WINDOWS_UA, GB_IP, GOOGLEBOT_UA, IPHONE_UA

IPAD_UA = (
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET_UA = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (IPHONE_UA, ("mobile", "Mobile Safari", "iOS")),
        (IPAD_UA, ("tablet", "Mobile Safari", "iOS")),
        (ANDROID_PHONE_UA, ("mobile", "Chrome Mobile", "Android")),
        (ANDROID_TABLET_UA, ("tablet", "Chrome", "Android")),
        (CHROME_WINDOWS_UA, ("desktop", "Chrome", "Windows")),
        (GOOGLEBOT_UA, ("bot", "Googlebot", "")),
        ("curl/8.5.0", ("other", "curl", "")),
        ("", ("other", "", "")),
    ],
)
def test_user_agents(ua, expected):
    assert parse_user_agent(ua) == expected


def test_countries():
    assert country_of(GB_IP) == "GB"
    assert country_of("127.0.0.1") == ""  # private / reserved: unknown, not an error
    assert country_of("") == ""
    assert country_of("not-an-ip") is None


def test_enricher_caches_lookups():
    enricher = Enricher(ua_cache=10, ip_cache=10)
    for _ in range(3):
        enricher.user_agent(IPHONE_UA)
        enricher.country(GB_IP)
    assert enricher.user_agent.cache_info().misses == 1
    assert enricher.country.cache_info().hits == 2
