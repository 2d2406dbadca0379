"""app/ingest/formats: each vendor body maps to exactly the event docs/ingest.md's table says,
and what it drops (credentials, `$` properties, person profiles, nested values) never arrives."""

from __future__ import annotations

import gzip

import pytest

from app.errors import ApiError
from app.ingest.formats import epoch_ms, form_data, gunzip, plausible, posthog, segment


def test_a_posthog_js_event_maps_to_our_event():
    raw = {
        "uuid": "0190c1a2-0000-7000-8000-000000000001",
        "event": "$pageview",
        "timestamp": "2026-12-03T10:00:00.000Z",
        "properties": {
            "token": "cpk_secret",
            "distinct_id": "d1",
            "$session_id": "s1",
            "$current_url": "https://shop.test/cart?x=1#top",
            "$referrer": "$direct",
            "$raw_user_agent": "UA",
            "$browser": "Chrome",
            "$set": {"email": "a@b.test"},
            "plan": "pro",
            "count": 3,
            "beta": True,
            "nested": {"a": 1},
            "list": [1, 2],
            "nothing": None,
            "revenue": "9.5",
        },
        "$set_once": {"x": 1},
    }
    batch = posthog.to_batch({"api_key": "cpk_secret", "batch": [raw, "junk"]})
    assert batch.keys == {"cpk_secret"}
    assert batch.events == [
        {
            "event": "pageview",
            "user_id": "d1",
            "session_id": "s1",
            "ts": 1796292000000,
            "path": "/cart",
            "value": 9.5,
            "user_agent": "UA",
            "uuid": "0190c1a2-0000-7000-8000-000000000001",
            "props": {"plan": "pro", "count": 3, "beta": True},
        },
        "junk",
    ]


def test_posthog_keys_are_collected_from_every_place():
    body = [
        {"event": "a", "api_key": "k1"},
        {"event": "b", "token": "k2"},
        {"event": "c", "properties": {"token": "k3", "api_key": "k4"}},
    ]
    assert posthog.to_batch(body).keys == {"k1", "k2", "k3", "k4"}
    assert posthog.to_batch({"event": "x"}).keys == set()


def test_segment_messages_map_by_type():
    batch = segment.to_batch(
        {
            "writeKey": "w",
            "batch": [
                {
                    "type": "track",
                    "event": "Order Completed",
                    "anonymousId": "anon",
                    "messageId": "m1",
                    "originalTimestamp": "2026-12-03T10:00:00+01:00",
                    "properties": {"revenue": 20, "url": "https://s.test/x", "sku": "a"},
                    "context": {"ip": "81.2.69.142", "userAgent": "UA", "sessionId": 5},
                    "integrations": {"All": True},
                },
                {
                    "type": "identify",
                    "userId": "u",
                    "traits": {"plan": "team", "address": {"city": "x"}},
                    "context": {"traits": {"plan": "old", "seats": 3}},
                },
                {"type": "page", "name": "Home", "context": {"page": {"url": "https://s.test/h"}}},
            ],
        },
        None,
    )
    assert batch.keys == {"w"}
    assert batch.events == [
        {
            "event": "Order Completed",
            "user_id": "anon",
            "session_id": 5,
            "ts": 1796288400000,
            "path": "/x",
            "value": 20.0,
            "user_agent": "UA",
            "ip": "81.2.69.142",
            "messageId": "m1",
            "props": {"sku": "a"},
        },
        {"event": "identify", "user_id": "u", "props": {"plan": "team", "seats": 3}},
        {"event": "pageview", "path": "/h", "props": {"name": "Home"}},
    ]
    # On /v1/track the path gives the type; a `type` in the body does not override it.
    assert segment.to_batch({"type": "page", "event": "E"}, "track").events == [{"event": "E"}]


def test_plausible_long_and_short_keys_and_domains():
    long = {
        "name": "Signup",
        "url": "https://a.test/join?ref=x",
        "domain": "A.test, b.test.",
        "referrer": "https://r.test/",
        "props": {"plan": "pro", "n": 2},
        "revenue": {"amount": 12, "currency": "USD"},
    }
    assert plausible.domains(long) == ["a.test", "b.test"]
    assert plausible.to_event(long) == {
        "event": "Signup",
        "path": "/join",
        "referrer": "https://r.test/",
        "value": 12.0,
        "props": {"plan": "pro", "n": 2, "currency": "USD"},
    }
    short = {"n": "pageview", "u": "https://a.test/", "d": "a.test", "m": '{"k":"v"}', "h": 1}
    assert plausible.to_event(short) == {"event": "pageview", "path": "/", "props": {"k": "v"}}
    for bad in ({"name": "x"}, {"domain": 3}, {"domain": " , "}, {"domain": "x" * 254}):
        with pytest.raises(ApiError):
            plausible.domains(bad)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2026-12-03T10:00:00Z", 1796292000000),
        ("2026-12-03T10:00:00", 1796292000000),
        ("2026-12-03T11:00:00.250+01:00", 1796292000250),
        (1796292000, 1796292000000),
        (1796292000.5, 1796292000500),
        (1796292000123, 1796292000123),
        ("yesterday", "yesterday"),  # passed on: validation refuses that event
        (True, True),
    ],
)
def test_timestamps(value, ms):
    assert epoch_ms(value) == ms


def test_bodies_are_bounded_and_checked():
    assert gunzip(gzip.compress(b"x" * 100), 100) == b"x" * 100
    for body, limit, code in [
        (gzip.compress(b"x" * 101), 100, "body_too_large"),
        (gzip.compress(b"\0" * 10_000_000), 1000, "body_too_large"),
        (b"\x1f\x8b\x08garbage", 100, "malformed_gzip"),
        (gzip.compress(b"x" * 50)[:-4], 100, "malformed_gzip"),
    ]:
        with pytest.raises(ApiError) as refused:
            gunzip(body, limit)
        assert refused.value.code == code
    assert form_data(b"data=eyJhIjoxfQ") == b'{"a":1}'  # base64 without padding
    assert form_data(b"compression=base64&data=W10%3D") == b"[]"
    assert form_data(b'{"data=":1}') is None
    with pytest.raises(ApiError) as refused:
        form_data(b"data=!!!!")
    assert refused.value.code == "malformed_base64"
