"""Enrichment, offline: device class / browser / OS from a user agent, country from an IP.

Both lookups are pure functions of one string, so each is memoised in an LRU cache: real
traffic repeats a few thousand user agents and a skewed set of IPs, and a cache hit costs
~0.1 µs where a ua_parser parse costs 10-100 µs.
"""

from __future__ import annotations

import functools
import ipaddress

import ua_parser

UNKNOWN = ""

DESKTOP_OS = frozenset(
    {
        "Windows",
        "Mac OS X",
        "macOS",
        "Linux",
        "Ubuntu",
        "Fedora",
        "Debian",
        "Chrome OS",
        "ChromeOS",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
    }
)
MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "HarmonyOS"})
TABLET_FAMILIES = ("iPad", "Kindle", "Tablet", "Tab", "Nexus 7", "Nexus 9", "Nexus 10")


def device_class(user_agent: str, device_family: str, brand: str, os_family: str) -> str:
    """One of desktop / mobile / tablet / bot / other."""
    if device_family == "Spider" or brand == "Spider":
        return "bot"
    if (
        brand == "Generic_Android_Tablet"
        or device_family.startswith(TABLET_FAMILIES)
        or "Tablet" in user_agent
    ):
        return "tablet"
    if os_family in MOBILE_OS:
        # Android UAs without "Mobile" are tablets by Google's own convention.
        if os_family == "Android" and "Mobile" not in user_agent:
            return "tablet"
        return "mobile"
    if "Mobile" in device_family or brand in ("Generic_Android", "Generic Feature Phone"):
        return "mobile"
    if os_family in DESKTOP_OS:
        return "desktop"
    return "other"


def parse_user_agent(user_agent: str) -> tuple[str, str, str]:
    """(device class, browser family, OS family) of a user agent; "" where unknown."""
    if not user_agent:
        return ("other", UNKNOWN, UNKNOWN)
    result = ua_parser.parse(user_agent)
    browser = result.user_agent.family if result.user_agent else UNKNOWN
    os_family = result.os.family if result.os else UNKNOWN
    device_family = result.device.family if result.device else ""
    brand = (result.device.brand or "") if result.device else ""
    if browser == "Other":
        browser = UNKNOWN
    if os_family == "Other":
        os_family = UNKNOWN
    return (device_class(user_agent, device_family, brand, os_family), browser, os_family)


_geo = None


def _geo_db():
    # Loading the database takes ~70 ms: do it on first use, once per process.
    global _geo
    if _geo is None:
        from geoip2fast import GeoIP2Fast

        _geo = GeoIP2Fast()
    return _geo


def country_of(ip: str) -> str | None:
    """ISO country code of an IP ("" for private/unknown addresses); None if `ip` is not an IP."""
    if not ip:
        return UNKNOWN
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None
    code = _geo_db().lookup(ip).country_code
    # geoip2fast answers "--" for private/reserved/unknown ranges.
    return code if code and len(code) == 2 and code != "--" else UNKNOWN


class Enricher:
    """Cached enrichment for one process; the caches are bounded LRUs."""

    def __init__(self, *, ua_cache: int = 20_000, ip_cache: int = 100_000) -> None:
        self.user_agent = functools.lru_cache(maxsize=ua_cache)(parse_user_agent)
        self.country = functools.lru_cache(maxsize=ip_cache)(country_of)
