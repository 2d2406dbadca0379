"""The process's log format: text (the default) or one JSON object per line
(`CLICKPULSE_LOG_FORMAT=json`) for log shippers. Both go through app/logredact.py: records are
redacted when they are created, before any formatter sees them, so a JSON line carries no more
than a text line would (docs/deployment.md, "Operators: metrics and logs")."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from app import logredact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The fields of uvicorn's access-log records (its `args`), named in the JSON line.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: `ts` (UTC, ISO 8601 with ms), `level`,
    `logger`, `message`, and when present `exc` (traceback), `stack`, and for uvicorn's access
    log `http` {client, method, path, http_version, status}."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((record.created - seconds) * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == len(_ACCESS_FIELDS)
        ):
            line["http"] = dict(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info and not record.exc_text:
            # Not created through the redacting factory (it sets exc_text): redact it here.
            record.exc_text = logredact.redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        # default=str: an argument that is no JSON type is written as its (redacted) text.
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` ("text" or "json")."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Redaction first, then one stderr handler on the root logger in `log_format`."""
    logredact.install()
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def uvicorn_log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's `log_config` for `log_format`: its own text configuration for text; for JSON,
    uvicorn's loggers handed to the root handler (`configure`'s JSON lines)."""
    if log_format != "json":
        from uvicorn.config import LOGGING_CONFIG

        return LOGGING_CONFIG
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            name: {"handlers": [], "level": "INFO", "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def litestar_logging_config(log_format: str) -> Any:
    """Litestar's `logging_config` for `log_format`, None for Litestar's default (text). For
    JSON, Litestar leaves the root logger alone (by default it installs its own text handler
    there) and its `litestar` logger reaches the root's JSON handler."""
    if log_format != "json":
        return None
    from litestar.logging.config import LoggingConfig

    return LoggingConfig(
        configure_root_logger=False,
        loggers={"litestar": {"level": "INFO", "handlers": [], "propagate": True}},
    )
