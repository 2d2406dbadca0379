"""Webhook targets are guarded against server-side request forgery (docs/alerts.md, "Webhook
targets"): non-public IP literals, local names, userinfo, other schemes and odd ports are a 422
at save time; at send time the host is resolved, any non-public address refuses the delivery
(recorded as failed, the receiver never called) and the connection goes to the vetted address.
No test needs internet access: resolution goes through `netguard.resolve_host`, replaced here
where a name must resolve to something specific."""

from __future__ import annotations

import ipaddress

import httpcore
import httpx
import pytest

from app.alerts import netguard
from tests.alerts.conftest import (
    SETTLE_S,
    Receiver,
    alert_body,
    base_second,
    create_alert,
    events_of,
    h,
    pg_rows,
    series_events,
)

REFUSED_AT_SAVE = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8080/hook",
    "http://10.0.0.5/hook",
    "http://192.168.1.10/hook",
    "http://172.16.0.1/hook",
    "http://100.64.0.1/hook",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one number
    "http://127.1/hook",
    "http://0x7f.0.0.1/hook",
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://app.localhost/hook",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://printer.local/hook",
    "http://intranet/hook",  # single label: resolved through the search domains
    "http://user:pass@example.com/hook",
    "http://user@example.com/hook",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "gopher://example.com:70/_x",
    "https://example.com:22/hook",  # privileged port other than 80/443
    "https://example.com:25/hook",
    "http://example.com:0/hook",
    # One host, many spellings (issue 12): each must be refused at save as at send.
    "http://127.0.0.1.:8080/hook",  # the absolute form (trailing dot)
    "http://127.0.0.1 :8080/hook",  # white space in the host
    "http://127.0.0.1..:8080/hook",  # an empty label
    "http://127.0.0.1%20:8080/hook",
    "http://LOCALHOST:8080/hook",
    "http://[::1]:8080/hook",
    "http://[::1%25lo]:8080/hook",  # a zone id
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f000001/hook",
    "http://127.000.000.001/hook",
    "http://\uff11\uff12\uff17.0.0.1/hook",  # full-width digits
    "http://127\u30020\u30020\u30021/hook",  # ideographic full stops
    "http://example.com@127.0.0.1/hook",
    "http://127.0.0.1\\@example.com/hook",
    "http://1.2.3.4.5/hook",  # ends in a number, not an address
]

ACCEPTED_AT_SAVE = [
    "http://93.184.216.34/hook",
    "https://93.184.216.34:8443/hook",
    "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
    "https://hooks.example.com/x",
    "https://hooks.slack.com/services/T000/B000/XXXX",
    "http://receiver.example.org:8080/alerts?token=abc",
    "https://HOOKS.Example.com/x",
    "https://hooks.example.com./x",
]


def _assert_422_webhook(r):
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_webhook_url", error
    assert error["where"] == {"field": "webhook_url"}, error
    assert "webhook_url" in error["message"], error


@pytest.fixture
async def guarded(make_env):
    async with make_env(alert_webhook_allow_private=False) as env:
        yield env


async def test_save_time_refuses_non_public_targets(guarded, org):
    env = guarded
    for url in REFUSED_AT_SAVE:
        r = await env.http.post("/alerts", json=alert_body(webhook_url=url), headers=h(org))
        assert r.status_code == 422, (url, r.text)
        _assert_422_webhook(r)
    assert (await env.http.get("/alerts", headers=h(org))).json() == []


async def test_save_time_refuses_on_update_and_backtest(guarded, org):
    env = guarded
    a = await create_alert(env, org, webhook_url="https://hooks.example.com/x")
    for url in ("http://169.254.169.254/", "http://[::1]/x", "http://localhost:9/x"):
        r = await env.http.put(
            f"/alerts/{a['id']}", json=alert_body(webhook_url=url, version=1), headers=h(org)
        )
        _assert_422_webhook(r)
        body = alert_body(webhook_url=url) | {"from": "now-5m", "to": "now"}
        r = await env.http.post("/alerts/backtest", json=body, headers=h(org))
        _assert_422_webhook(r)
    r = await env.http.get(f"/alerts/{a['id']}", headers=h(org))
    assert r.json()["webhook_url"] == "https://hooks.example.com/x"


async def test_save_time_accepts_public_targets(guarded, org):
    env = guarded
    for url in ACCEPTED_AT_SAVE:
        r = await env.http.post("/alerts", json=alert_body(webhook_url=url), headers=h(org))
        assert r.status_code == 201, (url, r.text)
        assert r.json()["webhook_url"] == url


async def test_allow_private_permits_private_but_never_metadata(env, org):
    # `env` runs with alert_webhook_allow_private=True (the conftest default)
    for url in ("http://127.0.0.1:8080/x", "http://10.0.0.5/x", "http://localhost:8080/x"):
        r = await env.http.post("/alerts", json=alert_body(webhook_url=url), headers=h(org))
        assert r.status_code == 201, (url, r.text)
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x",
        "http://0.0.0.0:8080/x",
        "http://user:pass@10.0.0.5/x",
        "http://10.0.0.5:22/x",
    ):
        r = await env.http.post("/alerts", json=alert_body(webhook_url=url), headers=h(org))
        _assert_422_webhook(r)


# -- send time ------------------------------------------------------------------------------


async def _fire(env, org, url):
    base = base_second()
    a = await create_alert(env, org, threshold=5, for_seconds=2, webhook_url=url)
    await env.post(org.api_key, series_events(base, [10, 10, 0, 0, 0]))
    await env.tick(base + SETTLE_S - 1)
    await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
    await env.evaluator.sender.drain()
    return a


async def test_send_time_refuses_a_name_resolving_to_loopback(guarded, org, pg_url, monkeypatch):
    """The name passes save time (it looks public); at send time it resolves to 127.0.0.1,
    where a receiver listens: no request reaches it, the event records the refusal."""
    lookups = []

    async def resolve(host, port):
        lookups.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(netguard, "resolve_host", resolve)
    async with Receiver() as rx:
        a = await _fire(guarded, org, f"http://hooks.example.com:{rx.port}/hook")
        assert rx.calls == []
    [event] = await events_of(pg_url, a["id"])
    assert lookups and set(lookups) == {"hooks.example.com"}
    assert event["kind"] == "firing"
    assert event["delivery"] == "failed"
    assert event["delivery_attempts"] == 1  # a refusal is not retried
    assert event["delivery_error"].startswith("refused: hooks.example.com resolves to 127.0.0.1")
    assert "loopback" in event["delivery_error"]


async def test_send_time_refuses_when_any_address_is_non_public(guarded, org, pg_url, monkeypatch):
    async def resolve(host, port):
        return ["93.184.216.34", "169.254.169.254"]

    monkeypatch.setattr(netguard, "resolve_host", resolve)
    async with Receiver() as rx:
        a = await _fire(guarded, org, f"http://hooks.example.com:{rx.port}/hook")
        assert rx.calls == []
    [event] = await events_of(pg_url, a["id"])
    assert event["delivery"] == "failed"
    assert "169.254.169.254" in event["delivery_error"] and "link-local" in event["delivery_error"]


async def test_send_time_refuses_a_stored_url_that_predates_the_guard(guarded, org, pg_url):
    """A URL saved before the rules existed (here: written straight to the table) is refused
    before any connection, using the real resolver path for `localhost`."""
    async with Receiver() as rx:
        base = base_second()
        a = await create_alert(guarded, org, threshold=5, for_seconds=2)
        await pg_rows(
            pg_url,
            "UPDATE alerts SET webhook_url = %s, version = version + 1 WHERE id = %s",
            (f"http://localhost:{rx.port}/hook", a["id"]),
        )
        await guarded.evaluator.sync(org_id=org.id, alert_id=a["id"])
        await guarded.post(org.api_key, series_events(base, [10, 10, 0]))
        await guarded.tick(base + SETTLE_S - 1)
        await guarded.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
        await guarded.evaluator.sender.drain()
        assert rx.calls == []
    [event] = await events_of(pg_url, a["id"])
    assert event["delivery"] == "failed" and event["delivery_attempts"] == 0
    assert event["delivery_error"].startswith("refused: webhook_url must point at a public")


async def test_allowed_private_delivery_connects_to_the_resolved_address(
    env, org, pg_url, monkeypatch
):
    """With allow_private (conftest), a name resolved by the guard is connected to by
    address, while the Host header keeps the name (and for https: SNI and the certificate)."""
    lookups = []

    async def resolve(host, port):
        lookups.append((host, port))
        return ["127.0.0.1"]

    monkeypatch.setattr(netguard, "resolve_host", resolve)
    async with Receiver() as rx:
        a = await _fire(env, org, f"http://hooks.example.com:{rx.port}/hook")
        assert [c["json"]["state"] for c in rx.calls] == ["firing"]
        assert rx.calls[0]["headers"]["host"] == f"hooks.example.com:{rx.port}"
    assert lookups == [("hooks.example.com", rx.port)]
    [event] = await events_of(pg_url, a["id"])
    assert event["delivery"] == "delivered"


# -- the network backend, without the app ---------------------------------------------------


class _RecordingBackend:
    def __init__(self):
        self.connected = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connected.append((host, port))
        return object()

    async def sleep(self, seconds):
        pass


async def test_backend_connects_to_the_vetted_address_only(monkeypatch):
    """Resolution happens once, in the guard; the inner backend is handed the IP literal,
    so a rebinding DNS answer after the check cannot change where we connect."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def resolve(host, port):
        return next(answers)

    monkeypatch.setattr(netguard, "resolve_host", resolve)
    inner = _RecordingBackend()
    backend = netguard.GuardedBackend(inner=inner)
    await backend.connect_tcp("rebind.example.com", 443, timeout=1)
    assert inner.connected == [("93.184.216.34", 443)]
    with pytest.raises(netguard.BlockedAddress, match="127.0.0.1"):
        await backend.connect_tcp("rebind.example.com", 443, timeout=1)
    assert inner.connected == [("93.184.216.34", 443)]


async def test_backend_refuses_localhost_with_the_real_resolver():
    inner = _RecordingBackend()
    backend = netguard.GuardedBackend(inner=inner)
    with pytest.raises(netguard.BlockedAddress, match="localhost resolves to"):
        await backend.connect_tcp("localhost", 8080, timeout=5)
    with pytest.raises(netguard.BlockedAddress):
        await backend.connect_tcp("127.0.0.1", 8080, timeout=5)
    with pytest.raises(netguard.BlockedAddress, match="port 22"):
        await backend.connect_tcp("93.184.216.34", 22, timeout=5)
    assert inner.connected == []
    assert isinstance(netguard.BlockedAddress("x"), httpcore.ConnectError)


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "2002:a00:1::",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
    ],
)
def test_non_public_addresses(addr):
    assert netguard.address_problem(ipaddress.ip_address(addr)) is not None


@pytest.mark.parametrize("addr", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111"])
def test_public_addresses(addr):
    assert netguard.address_problem(ipaddress.ip_address(addr)) is None


@pytest.mark.parametrize(
    ("host", "normalised"),
    [
        ("127.0.0.1.", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("0x7F000001", "127.0.0.1"),
        ("\uff11\uff12\uff17.0.0.1", "127.0.0.1"),
        ("127\u30020\u30020\u30021", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[0:0:0:0:0:ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("::FFFF:7F00:1", "::ffff:7f00:1"),
        ("Hooks.Example.COM.", "hooks.example.com"),
        ("b\u00fccher.example", "xn--bcher-kva.example"),
        ("LOCALHOST.", "localhost"),
    ],
)
def test_normalise_host_gives_one_spelling(host, normalised):
    assert netguard.normalise_host(host) == normalised


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1 ",
        " 127.0.0.1",
        "127.0.0.1..",
        "127..0.0.1",
        ".",
        "",
        "127.0.0.1%20",
        "fe80::1%eth0",
        "[127.0.0.1]",
        "exa mple.com",
        "localhost\x00.example.com",
        "1.2.3.4.5",
        "08.0.0.1",
        "example.123",
        "a" * 64 + ".example.com",
    ],
)
def test_normalise_host_refuses_what_is_no_host(host):
    with pytest.raises(ValueError):
        netguard.normalise_host(host)


SAME_HOST_LOOPBACK = [
    "http://127.0.0.1.:8080/x",
    "http://127.0.0.1 :8080/x",
    "http://127.0.0.1..:8080/x",
    "http://LOCALHOST.:8080/x",
    "http://[::1]:8080/x",
    "http://[::ffff:127.0.0.1]:8080/x",
    "http://2130706433:8080/x",
    "http://0x7f.1:8080/x",
    "http://0x7f000001:8080/x",
    "http://017700000001:8080/x",
    "http://\uff11\uff12\uff17.0.0.1:8080/x",
]


@pytest.mark.parametrize("url", SAME_HOST_LOOPBACK)
async def test_save_and_send_refuse_the_same_hosts(url, monkeypatch):
    """Every spelling of loopback: check_url (save time, and again at send time) refuses it,
    and so does the guarded transport when asked to connect to it directly — never the inner
    backend."""
    assert netguard.check_url(url) is not None
    inner = _RecordingBackend()
    backend = netguard.GuardedBackend(inner=inner)
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL:
        host = None  # httpx itself refuses to send there
    if host is not None:
        with pytest.raises(netguard.BlockedAddress):
            await backend.connect_tcp(host, 8080, timeout=5)
    assert inner.connected == []
