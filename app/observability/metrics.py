"""The Prometheus metrics of one process: every metric object, in one registry per `Telemetry`.

One `Telemetry` per `Services` (never prometheus_client's global registry: tests build many
apps in one process, and each must count only its own). Parts get it injected and count
events as they happen (ingest outcomes, INSERTs, poll rounds, 429s); what parts already hold
as state (WAL bytes, open sockets, query slots, the alert evaluator's counters) is read at
scrape time by `PartsCollector`, so the hot paths pay nothing for it. Names, labels and the
per-org cap are in docs/deployment.md, section "Operators: metrics and logs"."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

log = logging.getLogger("clickpulse.metrics")

ROW_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1e6)
INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Event time → inserted: client clocks and backfills (up to the 7-day skew) land in the tail.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86_400)
ACCEPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
ROUND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
QUERY_COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000)

# Per-org series: at most this many orgs each (CLICKPULSE_METRICS_TOP_ORGS), the ones most
# active in the last RECENT_WINDOW_S; the unlabelled totals always cover every org.
DEFAULT_TOP_ORGS = 20
RECENT_WINDOW_S = 300.0


class RowHistogram:
    """A histogram observed a whole column at a time: one numpy pass per INSERT instead of one
    `observe` per row (100k rows: about a millisecond, in the writer thread)."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.array(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self._bounds) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        """Count every value of `values` (seconds) in its bucket."""
        if not len(values):
            return
        # A value equal to a bound belongs to that bound's bucket (`le`): side="left".
        counts = np.bincount(
            np.searchsorted(self._bounds, values, side="left"), minlength=len(self._counts)
        )
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [
            (floatToGoString(bound), count)
            for bound, count in zip(self._bounds.tolist(), cumulative, strict=False)
        ]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class OrgTopN:
    """A per-org counter exposed for the `top` orgs with the most of it in the last
    `RECENT_WINDOW_S` (cumulative values: a series is continuous while the org stays on the
    list, and `increase()` over it is right). Every org is counted; only the exposure is capped."""

    def __init__(self, top: int, *, clock: Any = time.monotonic) -> None:
        self.top = top
        self.clock = clock
        self.totals: dict[int, int] = {}
        self._recent: Tally[int] = Tally()
        self._previous: Tally[int] = Tally()
        self._window_start = clock()

    def _rotate(self) -> None:
        now = self.clock()
        if now - self._window_start >= RECENT_WINDOW_S:
            elapsed_windows = (now - self._window_start) // RECENT_WINDOW_S
            self._previous = self._recent if elapsed_windows == 1 else Tally()
            self._recent = Tally()
            self._window_start = now

    def inc(self, org_id: int, amount: int = 1) -> None:
        self._rotate()
        self.totals[org_id] = self.totals.get(org_id, 0) + amount
        self._recent[org_id] += amount

    def exposed(self) -> list[tuple[int, int]]:
        """[(org_id, cumulative total)] of the orgs on the list, most active first."""
        self._rotate()
        recent = self._recent + self._previous
        return [(org, self.totals[org]) for org, _ in recent.most_common(self.top)]


def top_gauge(values: dict[int, int], top: int) -> list[tuple[int, int]]:
    """The `top` largest non-zero (org, value) pairs."""
    ranked = sorted(((v, org) for org, v in values.items() if v > 0), reverse=True)
    return [(org, v) for v, org in ranked[:top]]


class Telemetry:
    """The metric objects of one process (see the module docstring); `exposition()` renders
    them in the Prometheus text format."""

    def __init__(self, *, top_orgs: int = DEFAULT_TOP_ORGS) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.top_orgs = max(int(top_orgs), 0)
        # -- ingest -------------------------------------------------------------------------
        self.events_accepted = Counter(
            "clickpulse_ingest_events_accepted",
            "Events stored (acknowledged to the client), duplicates of stored ones excluded.",
            registry=r,
        )
        self.events_rejected = Counter(
            "clickpulse_ingest_events_rejected",
            "Events not stored, by reason: a per-event validation code, or the refusal of the "
            "whole request that carried them (rate_limited, ingest_overloaded, ...).",
            ["reason"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "clickpulse_ingest_events_duplicate",
            "Events dropped because their id (event_id/uuid/messageId) was stored already.",
            registry=r,
        )
        self.requests_refused = Counter(
            "clickpulse_ingest_requests_refused",
            "Ingest requests answered with an error, by error code.",
            ["code"],
            registry=r,
        )
        # -- writer -------------------------------------------------------------------------
        self.batch_rows = Histogram(
            "clickpulse_writer_batch_rows",
            "Rows per INSERT into events_queue.",
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.insert_seconds = Histogram(
            "clickpulse_writer_insert_duration_seconds",
            "Duration of one successful INSERT into events_queue (every view included).",
            buckets=INSERT_BUCKETS,
            registry=r,
        )
        self.insert_failures = Counter(
            "clickpulse_writer_insert_failures",
            "INSERTs into events_queue that failed (retried from the WAL).",
            registry=r,
        )
        self.pipeline_lag = RowHistogram(
            "clickpulse_pipeline_lag_seconds",
            "Per event: its timestamp (ts) to its INSERT completing (queryable).",
            LAG_BUCKETS,
        )
        self.accept_to_insert = RowHistogram(
            "clickpulse_ingest_accept_to_insert_seconds",
            "Per event: accepted by ingest (received_at) to its INSERT completing.",
            ACCEPT_BUCKETS,
        )
        r.register(self.pipeline_lag)
        r.register(self.accept_to_insert)
        # -- push ---------------------------------------------------------------------------
        self.poll_round_seconds = Histogram(
            "clickpulse_push_poll_round_duration_seconds",
            "Duration of one poller round (all phases, fan-out and listeners included).",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.poll_round_queries = Histogram(
            "clickpulse_push_poll_round_queries",
            "ClickHouse statements run in one poller round (a batch of keys is one).",
            buckets=QUERY_COUNT_BUCKETS,
            registry=r,
        )
        # -- quotas -------------------------------------------------------------------------
        self.throttled = Counter(
            "clickpulse_throttled",
            "Requests answered 429 for an org's quota, by limit (rate_per_s, concurrent_queries, "
            "rows_per_minute, query_pool, ingest_rate).",
            ["limit"],
            registry=r,
        )
        self.throttled_by_org = OrgTopN(self.top_orgs)

    def include_process(self) -> None:
        """Add the process' own series (`process_*`: CPU, resident memory, open files, start
        time; `python_gc_*`: collections) — for the process's real registry, once."""
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    # -- counting (called by the parts) -------------------------------------------------------
    def ingest_stored(self, accepted: int, errors: Sequence[Any], duplicates: int) -> None:
        """One ingest request's per-event outcome: stored, rejected (`errors`: the per-event
        errors, each with its `code`), dropped as duplicates."""
        if accepted:
            self.events_accepted.inc(accepted)
        if errors:
            for reason, count in Tally(e.code for e in errors).items():
                self.events_rejected.labels(reason).inc(count)
        if duplicates:
            self.events_duplicate.inc(duplicates)

    def ingest_refused(self, code: str, events: int = 0) -> None:
        """An ingest request answered with error `code`; `events` of it known to be lost."""
        self.requests_refused.labels(code).inc()
        if events:
            self.events_rejected.labels(code).inc(events)

    def org_throttled(self, org_id: int, limit: str) -> None:
        """A 429 for `org_id`'s quota `limit`."""
        self.throttled.labels(limit).inc()
        self.throttled_by_org.inc(org_id)

    def inserted(self, table: pa.Table, seconds: float) -> None:
        """One successful INSERT of `table` (events_queue's columns) that took `seconds`.
        Never raises: the INSERT succeeded, and counting it must not make it look failed."""
        try:
            rows = table.num_rows
            self.batch_rows.observe(rows)
            self.insert_seconds.observe(seconds)
            now_ms = time.time_ns() // 1_000_000
            for column, histogram in (
                ("ts", self.pipeline_lag),
                ("received_at", self.accept_to_insert),
            ):
                if rows and column in table.column_names:
                    millis = table.column(column).cast(pa.int64()).to_numpy()
                    histogram.observe_many(np.maximum(now_ms - millis, 0) / 1000.0)
        except Exception:
            log.exception("counting an INSERT for the metrics failed")

    def poll_round(self, seconds: float, queries: int) -> None:
        """One poller round: its duration and the statements it ran."""
        self.poll_round_seconds.observe(seconds)
        self.poll_round_queries.observe(queries)

    def exposition(self) -> bytes:
        """Every metric of this registry in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry)


class PartsCollector:
    """Gauges and counters read from the parts of one `Services` at scrape time (duck-typed:
    this module imports no other part of the app). Registered by `app.runtime.build_services`."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        services = self.services
        roles = services.settings.roles
        if "ingest" in roles:
            yield from self._writer(services.writer)
        if "push" in roles:
            yield from self._push(services.push)
            yield from self._alerts(services.alerts)
        yield from self._limits(services.limiter, services.telemetry)

    @staticmethod
    def _writer(writer: Any) -> Iterator[Metric]:
        pending = getattr(writer, "pending_rows", None)
        if pending is None:  # the Kafka sink: the broker holds what is not inserted
            return
        yield GaugeMetricFamily(
            "clickpulse_writer_pending_rows",
            "Rows accepted and not yet inserted (buffered or in flight).",
            value=pending,
        )
        wal = getattr(writer, "wal", None)
        if wal is None:
            return
        yield GaugeMetricFamily(
            "clickpulse_wal_pending_bytes",
            "Bytes in WAL segments not yet inserted (the open one included).",
            value=wal.pending_bytes,
        )
        yield GaugeMetricFamily(
            "clickpulse_wal_oldest_segment_age_seconds",
            "Age of the oldest WAL segment not yet inserted and retired (0 when none).",
            value=wal.oldest_age_s(),
        )

    @staticmethod
    def _push(hub: Any) -> Iterator[Metric]:
        conns = list(hub.conns)
        sockets = GaugeMetricFamily(
            "clickpulse_push_connections",
            "Open WebSocket connections, by transport.",
            labels=["transport"],
        )
        direct = sum(1 for c in conns if c.direct)
        sockets.add_metric(["asgi"], len(conns) - direct)
        sockets.add_metric(["dedicated"], direct)
        yield sockets
        yield CounterMetricFamily(
            "clickpulse_push_frames_sent",
            "WebSocket messages written to subscribers (snapshots, deltas, control messages).",
            value=hub.frames_of_closed + sum(c.sent for c in conns),
        )
        yield GaugeMetricFamily(
            "clickpulse_push_live_keys",
            "Distinct live keys (compiled queries) active on this node.",
            value=len(hub.poller.keys),
        )
        yield GaugeMetricFamily(
            "clickpulse_push_lag_seconds",
            "Pipeline lag the poller last used (accepted rows not yet inserted).",
            value=hub.lag_ms / 1000,
        )

    @staticmethod
    def _alerts(evaluator: Any) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "clickpulse_alert_evaluations",
            "Alert-seconds evaluated (one alert's state machine stepped over one second).",
            value=evaluator.evaluated_seconds,
        )
        yield CounterMetricFamily(
            "clickpulse_alert_transitions",
            "Alert state changes (pending, firing, resolved, ...).",
            value=evaluator.transitions,
        )
        yield GaugeMetricFamily(
            "clickpulse_alerts_active",
            "Enabled alerts evaluated here.",
            value=len(evaluator.alerts),
        )

    @staticmethod
    def _limits(limiter: Any, telemetry: Telemetry) -> Iterator[Metric]:
        in_use = limiter.slots_in_use()
        yield GaugeMetricFamily(
            "clickpulse_query_slots_in_use",
            "ClickHouse queries holding an org's concurrency slot, all orgs.",
            value=sum(in_use.values()),
        )
        if not telemetry.top_orgs:
            return
        per_org = GaugeMetricFamily(
            "clickpulse_org_query_slots_in_use",
            "Query slots in use, for the orgs holding the most (at most "
            "CLICKPULSE_METRICS_TOP_ORGS orgs).",
            labels=["org_id"],
        )
        for org_id, value in top_gauge(in_use, telemetry.top_orgs):
            per_org.add_metric([str(org_id)], value)
        yield per_org
        throttled = CounterMetricFamily(
            "clickpulse_org_throttled",
            "429s for an org's quotas (every limit), for the orgs with the most in the last "
            "5 minutes (at most CLICKPULSE_METRICS_TOP_ORGS); cumulative per process.",
            labels=["org_id"],
        )
        for org_id, value in telemetry.throttled_by_org.exposed():
            throttled.add_metric([str(org_id)], value)
        yield throttled
