"""What every librdkafka client of ours (producer, bridge consumer, lag probe) is given."""

from __future__ import annotations

import logging
from typing import Any

# librdkafka's own log lines (connection refused, request timeouts, …) go through Python
# logging instead of straight to stderr.
_librdkafka_log = logging.getLogger("clickpulse.ingest.kafka.librdkafka")


def client_config(brokers: str) -> dict[str, Any]:
    return {"bootstrap.servers": brokers, "client.id": "clickpulse", "logger": _librdkafka_log}
