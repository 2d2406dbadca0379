"""Email over SMTP (the standard library's smtplib in a worker thread), through the same SSRF
guard as webhooks: the server's name is resolved once here, every address is vetted, and the
socket connects to a vetted address — never resolving again — while STARTTLS/TLS verify the
certificate against the name. The rules are in docs/alerts.md, "Channels"."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from . import netguard
from .channels import smtp_port_allowed


@dataclass(frozen=True)
class SmtpOutcome:
    """One SMTP attempt: `code` is the server's reply code when there is one."""

    ok: bool
    code: int | None
    error: str | None
    retry: bool
    refused: bool = False


class _PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to a vetted address; `_host` stays the server's name, so
    STARTTLS's SNI and certificate check are the name's."""

    def __init__(self, address: str, name: str, implicit_tls: bool, timeout: float):
        self._address = address
        self._implicit_tls = implicit_tls
        self._context = ssl.create_default_context()
        # ehlo name: this machine's name, without the DNS lookup getfqdn() would make.
        super().__init__(local_hostname=socket.gethostname() or "clickpulse", timeout=timeout)
        self._host = name

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._address, port), timeout)
        if self._implicit_tls:
            return self._context.wrap_socket(sock, server_hostname=self._host)
        return sock

    def starttls_verified(self) -> None:
        self.starttls(context=self._context)


def _send_blocking(
    address: str, name: str, cfg: dict[str, Any], message: EmailMessage, timeout: float
) -> None:
    security = cfg.get("security", "starttls")
    with _PinnedSMTP(address, name, security == "tls", timeout) as smtp:
        smtp.connect(name, cfg["port"])
        smtp.ehlo()
        if security == "starttls":
            smtp.starttls_verified()
            smtp.ehlo()
        if cfg.get("username"):
            smtp.login(cfg["username"], cfg.get("password") or "")
        smtp.send_message(message, from_addr=cfg["from"], to_addrs=list(cfg["to"]))


async def send_email(
    cfg: dict[str, Any], message: EmailMessage, *, timeout_s: float, allow_private: bool
) -> SmtpOutcome:
    """One delivery attempt. Refusals (non-public server) are not retried; 5xx answers are
    final; 4xx answers, timeouts and connection errors are retried by the caller."""
    port = int(cfg["port"])
    if not smtp_port_allowed(port):
        return SmtpOutcome(False, None, f"refused: SMTP port {port} is not allowed", False, True)
    try:
        name = netguard.normalise_host(str(cfg["host"]))
    except ValueError as exc:
        return SmtpOutcome(
            False, None, f"refused: {cfg['host']!r} is not a host ({exc})", False, True
        )
    literal = netguard.parse_ip_literal(name)
    try:
        addresses = (
            [str(literal)]
            if literal is not None
            else await asyncio.wait_for(netguard.resolve_host(name, port), timeout_s)
        )
    except (OSError, TimeoutError) as exc:
        return SmtpOutcome(False, None, f"cannot resolve {name}: {exc}", True)
    vetted = []
    for addr in addresses:
        ip = netguard.parse_ip_literal(addr)
        problem = (
            "unparseable address"
            if ip is None
            else netguard.address_problem(ip, allow_private=allow_private)
        )
        if problem:
            where = f"{name} resolves to {addr}" if literal is None else str(addr)
            return SmtpOutcome(
                False, None, f"refused: {where}, non-public ({problem})", False, True
            )
        vetted.append(str(ip))
    if not vetted:
        return SmtpOutcome(False, None, f"cannot resolve {name}: no addresses", True)
    last: SmtpOutcome | None = None
    for addr in vetted:
        try:
            await asyncio.to_thread(_send_blocking, addr, name, cfg, message, timeout_s)
            return SmtpOutcome(True, 250, None, False)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            code = max(codes) if codes else None
            return SmtpOutcome(False, code, f"SMTP recipients refused ({code})", _transient(code))
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            return SmtpOutcome(
                False,
                exc.smtp_code,
                f"SMTP {exc.smtp_code}: {text}"[:300],
                _transient(exc.smtp_code),
            )
        except (smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError) as exc:
            # The server cannot do what the channel requires (STARTTLS, a valid certificate):
            # a setting to fix, not a passing failure.
            return SmtpOutcome(False, None, f"{type(exc).__name__}: {exc}"[:300], False)
        except TimeoutError:
            last = SmtpOutcome(False, None, f"timed out after {timeout_s:g}s", True)
        except (OSError, smtplib.SMTPException) as exc:
            last = SmtpOutcome(False, None, f"{type(exc).__name__}: {exc}"[:300], True)
    assert last is not None
    return last


def _transient(code: int | None) -> bool:
    return code is not None and 400 <= code < 500
