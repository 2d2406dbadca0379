"""Shared helpers of the ingest tests."""

from __future__ import annotations

import time
from typing import Any

from app.clickhouse import ClickHouse
from app.ingest.columns import Columns

IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
CHROME_WINDOWS_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
GOOGLEBOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GB_IP = "81.2.69.142"  # in GeoLite's test data and geoip2fast's table: United Kingdom


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rows(ch: ClickHouse, sql: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
    """Rows of `sql`, where `{db}` stands for the test's database."""
    return ch.query_sync(sql.replace("{db}", ch.database), params).rows


def scalar(ch: ClickHouse, sql: str, params: dict[str, Any] | None = None) -> Any:
    return ch.query_sync(sql.replace("{db}", ch.database), params).scalar()


def make_columns(n: int, *, org_id: int = 1, event: str = "pageview", start: int = 0) -> Columns:
    """`n` enriched events ready for EventWriter.submit (user ids u<start>…)."""
    cols = Columns()
    ts = now_ms()
    for i in range(start, start + n):
        cols.ts.append(ts)
        cols.event.append(event)
        cols.user_id.append(f"u{i}")
        cols.session_id.append("")
        cols.value.append(float(i))
        cols.path.append("/")
        cols.referrer.append("")
        cols.country.append("DE")
        cols.device.append("desktop")
        cols.browser.append("Chrome")
        cols.os.append("Windows")
        cols.prop_keys.append("i")
        cols.prop_values.append(str(i))
        cols.prop_counts.append(1)
    cols.org_id = [org_id] * n
    cols.received_at = [ts] * n
    return cols
