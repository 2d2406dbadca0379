"""Notification delivery: background tasks (never awaited by evaluation), one per event, which
send to each of the event's targets (channels, or the alert's own webhook_url) with a timeout
per attempt and retries with doubling backoff after network errors, timeouts, HTTP 429/5xx and
SMTP 4xx. Every attempt is recorded (`alert_deliveries`: attempt number, status, response
code, error, time), and the event's summary (`alert_events.delivery`, `delivery_attempts`,
`delivery_error`) once all its targets have settled.

Targets are guarded against server-side request forgery (`netguard`): a URL that fails the
save-time rules (e.g. stored before they existed) is refused without a request (attempt 0),
and the clients connect only to resolved addresses they vetted, so a host that resolves to a
loopback/private/link-local address is refused at connect time — without retries. Redirects
are never followed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from . import netguard
from .channels import LEGACY_NAME, Target, email_message, http_body, signed_headers
from .smtp import send_email

log = logging.getLogger("clickpulse.alerts.delivery")


@dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt; `retry`: worth another one."""

    status: str  # delivered | failed | refused
    code: int | None
    error: str | None
    retry: bool


class Recorder(Protocol):
    async def record_attempt(
        self, event_id: int, org_id: int, target: Target, attempt: int, outcome: Attempt
    ) -> None: ...

    async def record_delivery(
        self, event_id: int, delivery: str, attempts: int, error: str | None
    ) -> None: ...


class Dispatcher:
    """Sends alert events to their targets in the background (see the module docstring)."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        concurrency: int = 16,
        allow_private: bool = False,
    ):
        self.recorder = recorder
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.allow_private = allow_private
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        # Counters for tests and /healthz-style introspection (per event).
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

    def submit(
        self, event_id: int, org_id: int, payload: dict[str, Any], targets: list[Target]
    ) -> None:
        """Deliver `payload` to every target in the background; returns at once."""
        task = asyncio.create_task(
            self._deliver_event(event_id, org_id, payload, targets), name="alert-delivery"
        )
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

    async def _deliver_event(
        self, event_id: int, org_id: int, payload: dict[str, Any], targets: list[Target]
    ) -> None:
        results = await asyncio.gather(
            *(self._deliver(event_id, org_id, payload, t) for t in targets)
        )
        attempts = sum(n for n, _ in results)
        errors = [(t.name, err) for t, (_, err) in zip(targets, results, strict=True) if err]
        if not errors:
            status, error = "delivered", None
            self.delivered += 1
        else:
            status = "failed"
            # One target (the usual case): its error as is; several: each named.
            error = errors[0][1] if len(targets) == 1 else "; ".join(f"{n}: {e}" for n, e in errors)
            self.failed += 1
            log.warning("alert event %s: delivery failed: %s", event_id, error)
        with contextlib.suppress(Exception):
            await self.recorder.record_delivery(
                event_id, status, attempts, error[:600] if error else None
            )

    async def _deliver(
        self, event_id: int, org_id: int, payload: dict[str, Any], target: Target
    ) -> tuple[int, str | None]:
        """Attempts to one target until delivered, refused, final or out of retries:
        (attempts made, error or None)."""
        refused = self._refused_before_sending(target)
        if refused is not None:
            await self._record(event_id, org_id, target, 0, refused)
            return 0, refused.error
        attempts, outcome = 0, None
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 2))
            attempts = attempt
            async with self._sem:
                try:
                    outcome = await self._attempt(event_id, payload, target)
                except Exception as exc:  # a bug must still settle the event, not leave it pending
                    log.exception("alert event %s: unexpected delivery error", event_id)
                    outcome = Attempt(
                        "failed", None, f"internal error: {type(exc).__name__}", False
                    )
            await self._record(event_id, org_id, target, attempt, outcome)
            if not outcome.retry:
                break
        assert outcome is not None
        return attempts, None if outcome.status == "delivered" else outcome.error

    async def _record(
        self, event_id: int, org_id: int, target: Target, attempt: int, outcome: Attempt
    ) -> None:
        try:
            await self.recorder.record_attempt(event_id, org_id, target, attempt, outcome)
        except Exception as exc:  # the delivery itself happened (or not) all the same
            log.warning("alert event %s: recording an attempt failed: %s", event_id, exc)

    def _refused_before_sending(self, target: Target) -> Attempt | None:
        """A stored setting the save-time rules refuse (saved before they existed)."""
        if target.kind == "email":
            return None  # the SMTP client vets the server itself before connecting
        problem = netguard.check_url(target.config.get("url", ""), allow_private=self.allow_private)
        if problem is None:
            return None
        label = LEGACY_NAME if target.channel_id is None else "url"
        return Attempt("refused", None, f"refused: {label} {problem}"[:300], False)

    async def _attempt(self, event_id: int, payload: dict[str, Any], target: Target) -> Attempt:
        if target.kind == "email":
            result = await send_email(
                target.config,
                email_message(target, payload),
                timeout_s=self.timeout_s,
                allow_private=self.allow_private,
            )
            status = "delivered" if result.ok else ("refused" if result.refused else "failed")
            return Attempt(status, result.code, result.error, result.retry)
        return await self._post(event_id, payload, target)

    async def _post(self, event_id: int, payload: dict[str, Any], target: Target) -> Attempt:
        body = http_body(target, payload)
        headers = signed_headers(target.secret, event_id, body)
        try:
            response = await self._http().post(target.config["url"], content=body, headers=headers)
        except httpx.InvalidURL as exc:
            return Attempt("refused", None, f"refused: invalid url: {exc}"[:300], False)
        except httpx.TimeoutException:
            return Attempt("failed", None, f"timed out after {self.timeout_s:g}s", True)
        except httpx.HTTPError as exc:
            blocked = netguard.blocked_reason(exc)
            if blocked is not None:  # a policy refusal, not a transient error
                return Attempt("refused", None, blocked[:300], False)
            return Attempt("failed", None, f"{type(exc).__name__}: {exc}"[:300], True)
        code = response.status_code
        if 200 <= code < 300:
            return Attempt("delivered", code, None, False)
        # 429 and 5xx may pass; any other answer is the receiver refusing it.
        return Attempt("failed", code, f"HTTP {code}", code == 429 or code >= 500)
