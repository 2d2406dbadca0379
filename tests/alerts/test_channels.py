"""Notification channels against real local receivers: an HTTP server on 127.0.0.1 (webhook,
Slack) and aiosmtpd (email). Exact payloads, the webhook signature checked by an independent
verifier, retries recorded attempt by attempt, the SSRF guard on URLs and SMTP hosts, and
another org's channels unreachable (docs/alerts.md, "Channels")."""

from __future__ import annotations

import asyncio
import email
import hashlib
import hmac
import socket
import time
from email import policy

import psycopg
import pytest
from aiosmtpd.controller import Controller

from app.alerts import netguard
from tests.alerts.conftest import (
    SETTLE_S,
    Receiver,
    base_second,
    create_alert,
    events_of,
    h,
    pg_rows,
    series_events,
)

LINK = "INSERT INTO alert_channel_links (alert_id, channel_id, org_id) VALUES (%s, %s, %s)"


def verify_signature(secret: str, headers: dict[str, str], raw: bytes) -> bool:
    """What a receiver does (written from docs/alerts.md, not from the sender's code)."""
    timestamp = headers.get("x-clickpulse-timestamp", "")
    scheme, _, given = headers.get("x-clickpulse-signature", "").partition("=")
    if scheme != "v1" or not timestamp.isdigit():
        return False
    expected = hmac.new(
        secret.encode("utf-8"), timestamp.encode("ascii") + b"." + raw, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, given) and abs(time.time() - int(timestamp)) < 300


def iso(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


async def create_channel(env, org, **body) -> dict:
    r = await env.http.post("/alerts/channels", json=body, headers=h(org))
    assert r.status_code == 201, r.text
    return r.json()


async def fire(env, org, **alert) -> tuple[dict, int]:
    """An alert that fires at second base + 1 (value 10 > 5 for 2 s); deliveries drained."""
    base = base_second()
    a = await create_alert(env, org, threshold=5, for_seconds=2, **alert)
    await env.post(org.api_key, series_events(base, [10, 10, 0, 0, 0]))
    await env.tick(base + SETTLE_S - 1)
    await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
    await env.evaluator.sender.drain()
    return a, base


async def deliveries_via_api(env, org, alert_id: int) -> list[dict]:
    r = await env.http.get(f"/alerts/{alert_id}/events", headers=h(org))
    assert r.status_code == 200, r.text
    return r.json()["events"][0]["deliveries"]


def expected_payload(event_id: int, org, alert: dict, base: int, **over) -> dict:
    return {
        "event_id": event_id,
        "org_id": org.id,
        "alert_id": alert["id"],
        "alert_name": alert["name"],
        "state": "firing",
        "value": 10,
        "threshold": 5,
        "comparator": ">",
        "for_seconds": 2,
        "severity": "warning",
        "at": iso(base + 1),
        "t": base + 1,
        **over,
    }


# -- webhook ---------------------------------------------------------------------------------


async def test_webhook_channel_sends_the_exact_body_signed(env, org, pg_url):
    async with Receiver() as rx:
        ch = await create_channel(env, org, kind="webhook", name="ops hook", url=rx.url)
        secret = ch["secret"]
        assert secret.startswith("cps_") and len(secret) > 40
        a, base = await fire(env, org, channel_ids=[ch["id"]])
        [call] = rx.calls
    [event] = await events_of(pg_url, a["id"])
    assert call["json"] == expected_payload(event["id"], org, a, base)
    headers = call["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["x-clickpulse-event-id"] == str(event["id"])
    assert verify_signature(secret, headers, call["body"])
    # the verifier is not a rubber stamp: a changed body, another key, no header all fail
    assert not verify_signature(secret, headers, call["body"].replace(b"10.0", b"99.0"))
    assert not verify_signature(secret + "x", headers, call["body"])
    assert not verify_signature(secret, {"x-clickpulse-timestamp": "1"}, call["body"])
    assert (event["delivery"], event["delivery_attempts"]) == ("delivered", 1)
    [attempt] = await deliveries_via_api(env, org, a["id"])
    assert {k: v for k, v in attempt.items() if k != "at"} == {
        "channel_id": ch["id"],
        "channel_kind": "webhook",
        "channel_name": "ops hook",
        "attempt": 1,
        "status": "delivered",
        "response_code": 200,
        "error": None,
    }


async def test_rotated_secret_signs_from_then_on(env, org):
    async with Receiver() as rx:
        ch = await create_channel(env, org, kind="webhook", name="hook", url=rx.url)
        r = await env.http.post(f"/alerts/channels/{ch['id']}/secret", headers=h(org))
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert new != ch["secret"]
        await fire(env, org, channel_ids=[ch["id"]])
        [call] = rx.calls
    assert verify_signature(new, call["headers"], call["body"])
    assert not verify_signature(ch["secret"], call["headers"], call["body"])


async def test_receiver_failing_twice_then_succeeding_records_three_attempts(env, org, pg_url):
    async with Receiver(statuses=[500, 503]) as rx:
        ch = await create_channel(env, org, kind="webhook", name="flaky", url=rx.url)
        a, _ = await fire(env, org, channel_ids=[ch["id"]])
        assert len(rx.calls) == 3
    # every attempt is the same event, each signed afresh
    assert len({c["json"]["event_id"] for c in rx.calls}) == 1
    assert all(verify_signature(ch["secret"], c["headers"], c["body"]) for c in rx.calls)
    attempts = await deliveries_via_api(env, org, a["id"])
    assert [(d["attempt"], d["status"], d["response_code"], d["error"]) for d in attempts] == [
        (1, "failed", 500, "HTTP 500"),
        (2, "failed", 503, "HTTP 503"),
        (3, "delivered", 200, None),
    ]
    [event] = await events_of(pg_url, a["id"])
    assert (event["delivery"], event["delivery_attempts"], event["delivery_error"]) == (
        "delivered",
        3,
        None,
    )


async def test_a_4xx_answer_is_final_and_other_targets_still_get_it(env, org, pg_url):
    async with Receiver(status=410) as gone, Receiver() as ok:
        bad = await create_channel(env, org, kind="webhook", name="gone", url=gone.url)
        good = await create_channel(env, org, kind="webhook", name="good", url=ok.url)
        a, _ = await fire(env, org, channel_ids=[bad["id"], good["id"]], webhook_url=ok.url)
        assert len(gone.calls) == 1
        # the channel (signed) and the alert's own webhook_url (unsigned, as before channels)
        assert len(ok.calls) == 2
        signed = [c for c in ok.calls if "x-clickpulse-signature" in c["headers"]]
        assert len(signed) == 1 and verify_signature(
            good["secret"], signed[0]["headers"], signed[0]["body"]
        )
        legacy = [c for c in ok.calls if "x-clickpulse-signature" not in c["headers"]]
        assert legacy[0]["json"] == signed[0]["json"]
    [event] = await events_of(pg_url, a["id"])
    assert event["delivery"] == "failed" and event["delivery_attempts"] == 3
    assert event["delivery_error"] == "gone: HTTP 410"
    attempts = await deliveries_via_api(env, org, a["id"])
    assert sorted((d["channel_name"], d["status"], d["response_code"]) for d in attempts) == [
        ("gone", "failed", 410),
        ("good", "delivered", 200),
        ("webhook_url", "delivered", 200),
    ]


# -- Slack -----------------------------------------------------------------------------------


async def test_slack_payload_is_exact_and_cannot_mention_anyone(env, org, pg_url):
    async with Receiver() as rx:
        ch = await create_channel(env, org, kind="slack", name="#ops", url=rx.url)
        a, base = await fire(
            env, org, channel_ids=[ch["id"]], name="<!channel> 5xx & <@U123>", severity="critical"
        )
        [call] = rx.calls
    [event] = await events_of(pg_url, a["id"])
    assert call["json"] == {
        "text": "[FIRING] &lt;!channel&gt; 5xx &amp; &lt;@U123&gt;: 10 &gt; 5 for 2 s (critical)",
        "attachments": [
            {
                "color": "#d92d20",
                "fields": [
                    {"title": "State", "value": "firing", "short": True},
                    {"title": "Severity", "value": "critical", "short": True},
                    {"title": "Value", "value": "10", "short": True},
                    {"title": "At", "value": iso(base + 1), "short": True},
                ],
                "footer": f"ClickPulse alert {a['id']}, event {event['id']}",
                "ts": base + 1,
            }
        ],
    }
    assert verify_signature(ch["secret"], call["headers"], call["body"])


# -- email -----------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler: the first DATA commands answer `replies` in turn, then 250."""

    def __init__(self, replies: list[str] | None = None):
        self.replies = list(replies or [])
        self.data_commands = 0
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        self.data_commands += 1
        if self.replies:
            return self.replies.pop(0)
        self.messages.append(
            {"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "raw": envelope.content}
        )
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    servers = []

    def start(replies: list[str] | None = None) -> tuple[Mailbox, int]:
        box, port = Mailbox(replies), free_port()
        controller = Controller(box, hostname="127.0.0.1", port=port)
        controller.start()
        servers.append(controller)
        return box, port

    yield start
    for controller in servers:
        controller.stop()


def email_channel(port: int, **over) -> dict:
    return {
        "kind": "email",
        "name": "on-call mail",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "alerts@clickpulse.example",
        "to": ["oncall@example.com", "ops@example.com"],
        **over,
    }


async def test_email_is_sent_over_smtp_exactly(env, org, pg_url, smtp_server):
    box, port = smtp_server()
    ch = await create_channel(env, org, **email_channel(port))
    assert ch["settings"] == {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "alerts@clickpulse.example",
        "to": ["oncall@example.com", "ops@example.com"],
        "username": None,
        "has_password": False,
    }
    # a hostile name: CR/LF must not add a header (Bcc) nor a recipient
    a, base = await fire(env, org, channel_ids=[ch["id"]], name="db down\r\nBcc: evil@example.com")
    [mail] = box.messages
    [event] = await events_of(pg_url, a["id"])
    assert mail["from"] == "alerts@clickpulse.example"
    assert mail["to"] == ["oncall@example.com", "ops@example.com"]
    msg = email.message_from_bytes(mail["raw"], policy=policy.default)
    assert msg["Subject"] == "[ClickPulse] FIRING: db down Bcc: evil@example.com (warning)"
    assert msg["Bcc"] is None
    assert msg["To"] == "oncall@example.com, ops@example.com"
    assert msg["X-ClickPulse-Event-Id"] == str(event["id"])
    name = "db down\nBcc: evil@example.com"  # in the body it is text (SMTP lines end in CRLF)
    assert msg.get_content().replace("\r\n", "\n") == (
        f"[FIRING] {name}: 10 > 5 for 2 s (warning)\n\n"
        f"alert:    {name} (id {a['id']})\n"
        "state:    firing\n"
        "value:    10\n"
        "rule:     > 5 for 2 s\n"
        "severity: warning\n"
        f"at:       {iso(base + 1)}\n"
        f"event:    {event['id']}\n"
    )
    assert (event["delivery"], event["delivery_attempts"]) == ("delivered", 1)
    [attempt] = await deliveries_via_api(env, org, a["id"])
    assert (attempt["channel_kind"], attempt["status"], attempt["response_code"]) == (
        "email",
        "delivered",
        250,
    )


async def test_smtp_4xx_is_retried_and_5xx_is_final(env, org, smtp_server):
    box, port = smtp_server(["451 4.3.0 try again later", "451 4.3.0 try again later"])
    ch = await create_channel(env, org, **email_channel(port))
    a, _ = await fire(env, org, channel_ids=[ch["id"]])
    assert box.data_commands == 3 and len(box.messages) == 1
    attempts = await deliveries_via_api(env, org, a["id"])
    assert [(d["attempt"], d["status"], d["response_code"]) for d in attempts] == [
        (1, "failed", 451),
        (2, "failed", 451),
        (3, "delivered", 250),
    ]
    assert attempts[0]["error"] == "SMTP 451: 4.3.0 try again later"

    box2, port2 = smtp_server(["550 5.1.1 no such mailbox"])
    ch2 = await create_channel(env, org, **email_channel(port2, name="bounce"))
    b, _ = await fire(env, org, channel_ids=[ch2["id"]], name="second")
    assert box2.data_commands == 1 and box2.messages == []
    [only] = await deliveries_via_api(env, org, b["id"])
    assert (only["attempt"], only["status"], only["response_code"]) == (1, "failed", 550)


# -- the SSRF guard --------------------------------------------------------------------------


@pytest.fixture
async def guarded(make_env):
    async with make_env(alert_webhook_allow_private=False) as env:
        yield env


async def test_save_time_guard_on_channel_urls_and_smtp_hosts(guarded, org):
    env = guarded
    refused_urls = [
        "http://127.0.0.1:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:9000/x",
        "ftp://example.com/x",
        "http://user:pw@example.com/x",
        "https://example.com:22/x",
    ]
    for kind in ("webhook", "slack"):
        for url in refused_urls:
            r = await guarded.http.post(
                "/alerts/channels", json={"kind": kind, "name": "x", "url": url}, headers=h(org)
            )
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"]["code"] == "invalid_url"
            assert r.json()["error"]["where"] == {"field": "url"}
    for host, port in [
        ("127.0.0.1", 2525),
        ("localhost", 2525),
        ("10.0.0.5", 587),
        ("169.254.169.254", 25),
        ("mail.internal", 587),
        ("smtp.example.com", 22),
        ("smtp.example.com", 110),
    ]:
        body = email_channel(port, host=host)
        r = await guarded.http.post("/alerts/channels", json=body, headers=h(org))
        assert r.status_code == 422, (host, port, r.text)
        assert r.json()["error"]["code"] == "invalid_smtp_host"
        assert r.json()["error"]["where"] == {"field": "host"}
    for field, over in [
        ("to[1]", {"to": ["a@example.com", "b@example.com\r\nBcc: c@example.com"]}),
        ("to[0]", {"to": ["a@example.com, evil@example.com"]}),
        ("from", {"from": "<evil@example.com>"}),
    ]:
        body = email_channel(2525, host="smtp.example.com", **over)
        r = await env.http.post("/alerts/channels", json=body, headers=h(org))
        assert r.status_code == 422, r.text
        assert r.json()["error"] == {
            "code": "invalid_email",
            "message": r.json()["error"]["message"],
            "where": {"field": field},
        }
    r = await env.http.post(
        "/alerts/channels",
        json=email_channel(
            2525, host="smtp.example.com", username="u", password="p", security="none"
        ),
        headers=h(org),
    )
    assert r.status_code == 422 and r.json()["error"]["where"] == {"field": "security"}
    assert (await guarded.http.get("/alerts/channels", headers=h(org))).json() == []


async def test_send_time_guard_refuses_an_smtp_name_resolving_to_loopback(
    guarded, org, smtp_server, monkeypatch
):
    box, port = smtp_server()

    async def resolve(host, port):
        return ["127.0.0.1"]

    monkeypatch.setattr(netguard, "resolve_host", resolve)
    ch = await create_channel(guarded, org, **email_channel(port, host="mail.example.com"))
    a, _ = await fire(guarded, org, channel_ids=[ch["id"]])
    assert box.data_commands == 0 and box.messages == []
    [attempt] = await deliveries_via_api(guarded, org, a["id"])
    assert (attempt["attempt"], attempt["status"]) == (1, "refused")
    assert attempt["error"] == (
        "refused: mail.example.com resolves to 127.0.0.1, non-public (loopback address)"
    )


# -- the API and tenancy ---------------------------------------------------------------------


async def test_channel_reads_hide_secrets_and_updates_keep_them(env, org):
    async with Receiver() as rx:
        url = f"{rx.url}?token=SECRET-TOKEN"
        ch = await create_channel(env, org, kind="slack", name="s", url=url)
        r = await env.http.get(f"/alerts/channels/{ch['id']}", headers=h(org))
        body = r.json()
        assert body["secret"] is None and "SECRET-TOKEN" not in r.text and "/hook" not in r.text
        assert body["settings"] == {"url_hint": f"http://127.0.0.1:{rx.port}/…"}
        assert r.headers["etag"] == '"1"'
        r = await env.http.put(
            f"/alerts/channels/{ch['id']}",
            json={"kind": "slack", "name": "renamed", "version": 1},
            headers=h(org),
        )
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "renamed" and r.json()["version"] == 2
        r = await env.http.put(
            f"/alerts/channels/{ch['id']}",
            json={"kind": "webhook", "name": "x", "version": 2},
            headers=h(org),
        )
        assert r.status_code == 422 and r.json()["error"]["where"] == {"field": "kind"}
        a, _ = await fire(env, org, channel_ids=[ch["id"]])
        assert rx.calls[0]["request"].startswith("POST /hook?token=SECRET-TOKEN ")
    r = await env.http.get(f"/alerts/{a['id']}", headers=h(org))
    assert r.json()["channel_ids"] == [ch["id"]]
    r = await env.http.delete(f"/alerts/channels/{ch['id']}", headers=h(org) | {"If-Match": '"2"'})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "channel_in_use"
    assert r.json()["error"]["where"] == {"alert_ids": [a["id"]]}
    r = await env.http.put(
        f"/alerts/{a['id']}",
        json={k: a[k] for k in ("name", "comparator", "threshold", "for_seconds", "metric_inline")}
        | {"channel_ids": [], "version": a["version"]},
        headers=h(org),
    )
    assert r.status_code == 200 and r.json()["channel_ids"] == []
    r = await env.http.delete(f"/alerts/channels/{ch['id']}", headers=h(org) | {"If-Match": '"2"'})
    assert r.status_code == 204


async def test_another_orgs_channel_is_unreachable(env, org, make_org, pg_url):
    async with Receiver() as rx:
        mine = await create_channel(env, org, kind="webhook", name="mine", url=rx.url)
        other = await make_org("globex")
        cid = mine["id"]
        for method, path, body in [
            ("GET", f"/alerts/channels/{cid}", None),
            ("PUT", f"/alerts/channels/{cid}", {"kind": "webhook", "name": "x", "version": 1}),
            ("POST", f"/alerts/channels/{cid}/secret", None),
            ("DELETE", f"/alerts/channels/{cid}", None),
        ]:
            headers = h(other) | {"If-Match": '"1"'}
            r = await env.http.request(method, path, json=body, headers=headers)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"] == {
                "code": "not_found",
                "message": "no such channel",
                "where": None,
            }
        assert (await env.http.get("/alerts/channels", headers=h(other))).json() == []
        # another org's alert cannot notify it: the same answer as an id that does not exist
        for cid_used in (cid, 999_999):
            r = await env.http.post(
                "/alerts",
                json={
                    "name": "x",
                    "metric_inline": {"text": "SELECT count() AS n"},
                    "comparator": ">",
                    "threshold": 1,
                    "for_seconds": 1,
                    "channel_ids": [cid_used],
                },
                headers=h(other),
            )
            assert r.status_code == 422, r.text
            assert r.json()["error"] == {
                "code": "unknown_channel",
                "message": f"no channel with id {cid_used}",
                "where": {"field": "channel_ids[0]"},
            }
        # and by construction: the store refuses such a link whatever the application does
        theirs = await create_alert(env, other)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            await pg_rows(
                pg_url,
                LINK,
                (theirs["id"], cid, other.id),
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            await pg_rows(
                pg_url,
                LINK,
                (theirs["id"], cid, org.id),
            )
        r = await env.http.get(f"/alerts/channels/{cid}", headers=h(org))
        assert r.status_code == 200 and r.json()["alert_ids"] == []


async def test_allow_private_still_refuses_metadata_smtp(env, org):
    r = await env.http.post(
        "/alerts/channels", json=email_channel(25, host="169.254.169.254"), headers=h(org)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_smtp_host"


async def test_viewers_read_channels_but_cannot_write(env, org, pg_url):
    from psycopg.rows import dict_row

    from app.credentials import create_user_token

    async with await psycopg.AsyncConnection.connect(
        pg_url, autocommit=True, row_factory=dict_row
    ) as conn:
        viewer = await create_user_token(conn, org.id, "v@acme.test", "viewer")
    vh = {"Authorization": f"Bearer {viewer}"}
    body = {"kind": "webhook", "name": "x", "url": "https://hooks.example.com/x"}
    assert (await env.http.post("/alerts/channels", json=body, headers=vh)).status_code == 403
    ch = await create_channel(env, org, **body)
    r = await env.http.get("/alerts/channels", headers=vh)
    assert r.status_code == 200 and [c["id"] for c in r.json()] == [ch["id"]]
    assert r.json()[0]["secret"] is None
    r = await env.http.post(f"/alerts/channels/{ch['id']}/secret", headers=vh)
    assert r.status_code == 403


async def test_pending_channel_deliveries_are_resent_after_a_restart(make_env, org, pg_url):
    """Stopped mid-delivery: the next process sends to the targets not yet delivered to —
    the channel whose receiver hung, not the webhook_url that already answered."""
    async with Receiver() as fast, Receiver(delay_s=30) as slow:
        async with make_env(alert_webhook_timeout_s=30) as env:
            ch = await create_channel(env, org, kind="webhook", name="slow", url=slow.url)
            base = base_second()
            a = await create_alert(
                env, org, threshold=5, for_seconds=2, channel_ids=[ch["id"]], webhook_url=fast.url
            )
            await env.post(org.api_key, series_events(base, [10, 10, 0]))
            await env.tick(base + SETTLE_S - 1)
            await env.tick_through(base + SETTLE_S, base + 1 + SETTLE_S)
            while not fast.calls or len(slow.calls) < 1:
                await asyncio.sleep(0.05)
            recorded = "SELECT 1 FROM alert_deliveries WHERE channel_name = 'webhook_url'"
            while not await pg_rows(pg_url, recorded):  # the fast target's attempt is stored
                await asyncio.sleep(0.05)
            assert env.evaluator.sender.pending == 1
        [event] = await events_of(pg_url, a["id"])
        assert event["delivery"] == "pending"
        slow.delay_s = 0
        async with make_env() as env:
            await env.evaluator.sender.drain()
        assert len(fast.calls) == 1  # not sent twice
        assert [c["json"]["event_id"] for c in slow.calls] == [event["id"]] * 2
        assert verify_signature(ch["secret"], slow.calls[1]["headers"], slow.calls[1]["body"])
    [event] = await events_of(pg_url, a["id"])
    assert event["delivery"] == "delivered"


async def test_starttls_required_but_not_offered_is_final(env, org, smtp_server):
    """The default `security: starttls` never falls back to clear text: a server without
    STARTTLS gets no message, and the attempt is not retried."""
    box, port = smtp_server()
    body = email_channel(port)
    del body["security"]
    ch = await create_channel(env, org, **body)
    assert ch["settings"]["security"] == "starttls"
    a, _ = await fire(env, org, channel_ids=[ch["id"]])
    assert box.data_commands == 0 and box.messages == []
    [attempt] = await deliveries_via_api(env, org, a["id"])
    assert (attempt["attempt"], attempt["status"]) == (1, "failed")
    assert attempt["error"] == (
        "SMTPNotSupportedError: STARTTLS extension not supported by server."
    )
