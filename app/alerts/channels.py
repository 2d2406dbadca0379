"""Notification channels: what each kind sends for an alert event, how a webhook body is
signed, and which channel settings are acceptable (docs/alerts.md, "Channels").

Kinds: `webhook` (the generic JSON body, signed with HMAC-SHA256 over timestamp + body),
`slack` (a Slack-compatible incoming-webhook body, also signed), `email` (a plain-text message
over SMTP, app/alerts/smtp.py). The alert's own `webhook_url` is delivered like an unsigned
`webhook` channel named `webhook_url`."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import msgspec

from . import netguard

SIGNATURE_HEADER = "X-ClickPulse-Signature"
TIMESTAMP_HEADER = "X-ClickPulse-Timestamp"
EVENT_HEADER = "X-ClickPulse-Event-Id"
LEGACY_NAME = "webhook_url"  # the target name of an alert's own webhook_url

# SMTP submission (587), implicit TLS (465), relay (25), the common alternative (2525) and any
# unprivileged port; other privileged ports are what a cross-protocol request would aim at.
SMTP_PORTS_NOTE = "25, 465, 587, 2525 or 1024-65535"
# One address: no white space, control characters, angle brackets, quotes, commas or
# semicolons (header injection, several recipients hidden in one), exactly one @.
_ADDRESS = re.compile(r"^[^\s@<>()\[\]\",;:\\\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}$")


@dataclass(frozen=True)
class Target:
    """Where one event's notification goes: an org's channel, or the alert's own URL."""

    channel_id: int | None
    kind: str  # webhook | slack | email
    name: str
    config: dict[str, Any]
    secret: str | None  # None: unsigned (the alert's own webhook_url)

    @classmethod
    def legacy(cls, url: str) -> Target:
        return cls(None, "webhook", LEGACY_NAME, {"url": url}, None)

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Target:
        return cls(row["id"], row["kind"], row["name"], row["config"], row["secret"])


def new_secret() -> str:
    """A channel's signing key (shown once)."""
    return "cps_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: `v1=` + hex HMAC-SHA256 of `"<timestamp>." + body`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str | None, event_id: int, body: bytes) -> dict[str, str]:
    """Headers of one HTTP attempt (each attempt is signed afresh with its own timestamp)."""
    headers = {"Content-Type": "application/json", EVENT_HEADER: str(event_id)}
    if secret is not None:
        now = int(time.time())
        headers[TIMESTAMP_HEADER] = str(now)
        headers[SIGNATURE_HEADER] = signature(secret, now, body)
    return headers


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "no data" if value is None else str(value)


def summary(payload: dict[str, Any]) -> str:
    """One line for people: `[FIRING] errors high: 10 > 5 for 3 s (critical)`."""
    return (
        f"[{str(payload['state']).upper()}] {payload['alert_name']}: {_num(payload['value'])} "
        f"{payload['comparator']} {_num(payload['threshold'])} for {payload['for_seconds']} s "
        f"({payload['severity']})"
    )


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions (<!channel>, <@U1>): a name must not ping anyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK_COLOURS = {"firing": "#d92d20", "resolved": "#2e7d32"}


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body (Slack, Mattermost, Rocket.Chat …)."""
    return {
        "text": _slack_escape(summary(payload)),
        "attachments": [
            {
                "color": _SLACK_COLOURS.get(payload["state"], "#8a8a8a"),
                "fields": [
                    {"title": "State", "value": payload["state"], "short": True},
                    {"title": "Severity", "value": payload["severity"], "short": True},
                    {"title": "Value", "value": _num(payload["value"]), "short": True},
                    {"title": "At", "value": payload["at"], "short": True},
                ],
                "footer": f"ClickPulse alert {payload['alert_id']}, event {payload['event_id']}",
                "ts": payload["t"],
            }
        ],
    }


def http_body(target: Target, payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (the signature covers these bytes)."""
    data = slack_body(payload) if target.kind == "slack" else payload
    return msgspec.json.encode(data)


def _header_text(text: str) -> str:
    # No control characters in a header: a name with CR/LF cannot add headers (Bcc: …).
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text)[:200]


def email_message(target: Target, payload: dict[str, Any]) -> EmailMessage:
    """The plain-text message of an email channel."""
    cfg = target.config
    msg = EmailMessage()
    msg["Subject"] = _header_text(
        f"[ClickPulse] {str(payload['state']).upper()}: {payload['alert_name']} "
        f"({payload['severity']})"
    )
    msg["From"] = cfg["from"]
    msg["To"] = ", ".join(cfg["to"])
    msg[EVENT_HEADER] = str(payload["event_id"])
    msg.set_content(
        f"{summary(payload)}\n\n"
        f"alert:    {payload['alert_name']} (id {payload['alert_id']})\n"
        f"state:    {payload['state']}\n"
        f"value:    {_num(payload['value'])}\n"
        f"rule:     {payload['comparator']} {_num(payload['threshold'])} "
        f"for {payload['for_seconds']} s\n"
        f"severity: {payload['severity']}\n"
        f"at:       {payload['at']}\n"
        f"event:    {payload['event_id']}\n"
    )
    return msg


# -- settings checks (save time) -------------------------------------------------------------


def smtp_port_allowed(port: int) -> bool:
    return port in (25, 465, 587, 2525) or 1024 <= port <= 65535


def check_address(address: str) -> str | None:
    """Why `address` is not one plain email address (`None`: it is)."""
    if not _ADDRESS.match(address):
        return f"{address!r} is not a plain email address (name@domain)"
    return None


def check_smtp_host(host: str, port: int, *, allow_private: bool = False) -> str | None:
    """Why an SMTP server is refused at save time (`None`: acceptable); the same host rules as
    a webhook's (netguard), without resolving the name."""
    if not smtp_port_allowed(port):
        return f"port {port} is not allowed (use {SMTP_PORTS_NOTE})"
    problem = netguard.host_problem(host, allow_private=allow_private)
    if problem:
        return f"must be a public host: {problem}"
    return None
