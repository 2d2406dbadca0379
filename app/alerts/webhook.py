"""Webhook delivery: background tasks (never awaited by evaluation), a timeout per attempt,
retries with exponential backoff on network errors, timeouts, 429 and 5xx; the outcome is
recorded on the `alert_events` row (`delivery`, `delivery_attempts`, `delivery_error`).

Targets are guarded against server-side request forgery (`netguard`): a URL that fails the
save-time rules (e.g. stored before they existed) is refused without a request (0 attempts),
and the client connects only to resolved addresses it vetted, so a host that resolves to a
loopback/private/link-local address is refused at connect time — without retries — and
recorded as `failed` with a `refused: …` reason. Redirects are never followed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from . import netguard

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
        allow_private: bool = False,
    ):
        self.record = record
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.allow_private = allow_private
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
                trust_env=False,  # no env proxies (they would bypass the guard), no .netrc
                transport=netguard.GuardedTransport(allow_private=self.allow_private),
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
        problem = netguard.check_url(url, allow_private=self.allow_private)
        if problem is not None:
            error = f"refused: webhook_url {problem}"[:300]
        async with self._sem:
            for attempt in range(self.retries + 1):
                if problem is not None:
                    break
                if attempt:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                attempts += 1
                try:
                    response = await self._http().post(url, json=payload)
                except httpx.InvalidURL as exc:
                    error = f"refused: invalid webhook_url: {exc}"[:300]
                    break
                except httpx.TimeoutException:
                    error = f"timed out after {self.timeout_s:g}s"
                    continue
                except httpx.HTTPError as exc:
                    refused = netguard.blocked_reason(exc)
                    if refused is not None:
                        error = refused[:300]
                        break  # a policy refusal, not a transient error
                    error = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                except Exception as exc:  # a bug must still settle the event, not leave it pending
                    log.exception("webhook for alert event %s: unexpected error", event_id)
                    error = f"internal error: {type(exc).__name__}: {exc}"[:300]
                    break
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
