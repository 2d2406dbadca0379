"""Secrets never reach a log line.

Credentials travel where loggers look: the access log writes query strings
(`/ws/subscribe?token=cpt_…`), an exception can quote a URL or a header, a debug line can dump
headers. One hook cleans them all: `install()` wraps the process's log record factory, so every
record of every logger is redacted when it is created, before any filter, handler or formatter
sees it, whatever logging configuration is in place. What is replaced, and how much of our own
credentials is kept for display, is in docs/api.md, section "Secrets in logs"."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from app.credentials import API_KEY_PREFIX, SHARE_LINK_PREFIX, USER_TOKEN_PREFIX

REDACTED = "[redacted]"
_PREFIX_CHARS = 6  # what credentials.display_prefix shows after the prefix

_CREDENTIAL = re.compile(
    "(?P<prefix>(?:"
    + "|".join(re.escape(p) for p in (API_KEY_PREFIX, USER_TOKEN_PREFIX, SHARE_LINK_PREFIX))
    + rf")[A-Za-z0-9_-]{{{_PREFIX_CHARS}}})[A-Za-z0-9_-]{{2,}}"
)
_SECRET_PARAM = re.compile(
    r"(?i)(?<![\w-])(?P<name>token|ticket|key|api[_-]?key|access[_-]?token|secret|password)"
    r"(?P<sep>=|%3D)(?P<value>[^&\s\"'#;,)\]]+)"
)
_HEADER_SEP = r"(?P<sep>[\"']?\s*[:=,]\s*(?:b?[\"'])?)"  # `: `, `=`, `', b'` (a header tuple)
_SECRET_HEADER = re.compile(
    r"(?i)(?<![\w-])(?P<name>authorization|proxy-authorization|x-api-key)"
    + _HEADER_SEP
    + r"(?P<scheme>(?:bearer|basic|token)\s+)?(?P<value>[^\s\"',;)]+)"
)
# Every cookie of the header goes: up to the end of the quoted value or of the line.
_COOKIE_HEADER = re.compile(
    r"(?i)(?<![\w-])(?P<name>set-cookie|cookie)" + _HEADER_SEP + r"(?P<value>[^\"'\r\n]+)"
)


def redact(text: str) -> str:
    """`text` with every secret it holds replaced (see the module docstring)."""
    # Named places first (their whole value goes), then our credentials wherever else they are.
    if "=" in text or "%3" in text:
        text = _SECRET_PARAM.sub(rf"\g<name>\g<sep>{REDACTED}", text)
    text = _SECRET_HEADER.sub(rf"\g<name>\g<sep>\g<scheme>{REDACTED}", text)
    text = _COOKIE_HEADER.sub(rf"\g<name>\g<sep>{REDACTED}", text)
    if "_" in text:
        text = _CREDENTIAL.sub(rf"\g<prefix>{REDACTED}", text)
    return text


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value  # keeps %d / %.1f formatting working
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    cleaned = redact(text)
    return cleaned if cleaned != text else value


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact `record` in place (message, arguments, exception and stack text)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    else:
        text = str(record.msg)
        cleaned = redact(text)
        if cleaned != text:
            record.msg = cleaned
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_redact_arg(a) for a in args)
    elif isinstance(args, dict):
        record.args = {k: _redact_arg(v) for k, v in args.items()}
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text when it is set: render the traceback once, redacted.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


_installed = False
_lock = threading.Lock()


def install() -> None:
    """Make every log record of this process redacted at creation (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True
