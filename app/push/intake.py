"""Per-socket inbound limits, the same for every transport: frame size and message rate."""

from __future__ import annotations

import time
from typing import Any

from app.push import protocol


class Intake:
    """Per-socket inbound limits: frame size (1009) and a token bucket of messages (4429)."""

    __slots__ = ("burst", "last", "max_bytes", "rate", "tokens")

    def __init__(self, s: Any):
        self.rate = s.push_max_msgs_per_s
        self.burst = max(s.push_max_msgs_per_s * 2, 1.0)
        self.max_bytes = s.push_max_message_bytes
        self.tokens, self.last = self.burst, time.monotonic()

    def admit(self, conn: Any, data: str | bytes) -> bool:
        """False (and `conn` closing) when `data` breaks a limit."""
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self.max_bytes:
            conn.close(protocol.CLOSE_TOO_BIG, "message too big")
            return False
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            conn.close(protocol.CLOSE_FLOOD, "too many messages")
            return False
        self.tokens -= 1
        return True
