"""Webhook delivery: background tasks (never awaited by evaluation), a timeout per attempt,
retries with exponential backoff on network errors, timeouts, 429 and 5xx; the outcome is
recorded on the `alert_events` row (`delivery`, `delivery_attempts`, `delivery_error`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

log = logging.getLogger("clickpulse.alerts.webhook")

Record = Callable[[int, str, int, "str | None"], Awaitable[None]]


class WebhookSender:
    def __init__(
        self,
        record: Record,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        concurrency: int = 16,
    ):
        self.record = record
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        # Counters for tests and /healthz-style introspection.
        self.delivered = 0
        self.failed = 0

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                follow_redirects=False,
                headers={"User-Agent": "ClickPulse-Alerts/1"},
            )
        return self._client

    def submit(self, event_id: int, url: str, payload: dict[str, Any]) -> None:
        """Deliver in the background; returns at once."""
        task = asyncio.create_task(self._deliver(event_id, url, payload), name="alert-webhook")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for every delivery in flight (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop: deliveries still in flight stay `pending` in the store and are retried by
        the next process (`Evaluator.start`)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver(self, event_id: int, url: str, payload: dict[str, Any]) -> None:
        attempts, error = 0, None
        async with self._sem:
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                attempts += 1
                try:
                    response = await self._http().post(url, json=payload)
                except httpx.TimeoutException:
                    error = f"timed out after {self.timeout_s:g}s"
                    continue
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                if 200 <= response.status_code < 300:
                    error = None
                    break
                error = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    break  # the receiver refuses it: retrying will not help
        status = "delivered" if error is None else "failed"
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            log.warning("webhook for alert event %s failed: %s", event_id, error)
        with contextlib.suppress(Exception):
            await self.record(event_id, status, attempts, error)
