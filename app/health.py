"""The state of one component as its own operations see it, for `/readyz` and the log.

A probe (`SELECT 1`) says whether a dependency answers; it does not say whether the work the
process does with it succeeds (ClickHouse with a full disk answers `SELECT 1` and refuses every
INSERT; a full WAL disk has nothing to probe). The code doing that work records each outcome
here instead. A component is failing from a failure until the next success; the change of
state is logged once each way, never once per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("clickpulse.health")


class ComponentHealth:
    """Failing or not, since when, and why; `failed`/`succeeded` are cheap enough for every call."""

    def __init__(self, name: str, *, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.clock = clock
        self.error: str | None = None
        self.failing_since: float | None = None
        self.failures = 0  # in the current failing period

    @property
    def ok(self) -> bool:
        return self.error is None

    def failed(self, error: str) -> None:
        """Record a failure; logged only when the component was not failing already."""
        error = error[:300]
        if self.error is None:
            self.failing_since = self.clock()
            self.failures = 0
            log.error("%s is failing: %s", self.name, error)
        self.error = error
        self.failures += 1

    def succeeded(self) -> None:
        """Record a success; logged only when it ends a failing period."""
        if self.error is None:
            return
        log.warning(
            "%s recovered after %.1f s (%d failures; last: %s)",
            self.name,
            self.clock() - (self.failing_since or self.clock()),
            self.failures,
            self.error,
        )
        self.error = None
        self.failing_since = None
        self.failures = 0

    def status(self) -> dict[str, Any]:
        """{ok, detail, since_s, failures} for /readyz."""
        if self.error is None:
            return {"ok": True, "detail": ""}
        return {
            "ok": False,
            "detail": self.error,
            "since_s": round(self.clock() - (self.failing_since or self.clock()), 3),
            "failures": self.failures,
        }
