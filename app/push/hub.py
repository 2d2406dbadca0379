"""The Hub: the push tier of one process, whatever the transport — the subscription
registry, keys, the poller's wiring, fanout to connections (credentials: app/push/access.py).
Long because registry, keys and fan-out share the per-socket maps kept here.

* Transports (app/push/asgi.py, app/push/dedicated.py) accept a socket, authorise it (`hub.access`),
  `register` a connection, pass each client message to `on_message` and `drop` it at the end.
* `deliver(key, kind, text)` hands one already-encoded message to every local socket
  subscribed to `key` (the same str object to all of them).
* `send_to_org(org_id, message)` reaches every socket of that org on every node (alerts).
* Without Redis the poller emits straight into `deliver`; with Redis it publishes, and this
  process's one subscriber calls `deliver` for the channels its sockets need.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from app.push import protocol
from app.push.access import SharePrincipal, SocketAccess
from app.push.gcpolicy import LongLivedHeap
from app.push.keys import KeySpec, make_key
from app.push.poller import Poller, run_guarded

if TYPE_CHECKING:
    from app.push.connection import Connection
    from app.services import Services

log = logging.getLogger("clickpulse.push")


@dataclass
class _Snapshot:
    at: float
    task: asyncio.Future[tuple[int, int, str]]


#: Compiled keys kept for subscribes of the same metric (`Hub.key_for`).
COMPILED_KEYS = 4096


def _compile_ident(
    org_id: int, metric: Any, filters: Any, group_by: Any, window_s: int
) -> tuple[int, bytes] | None:
    """What a compiled key is kept under: the org and its inputs as JSON (None: not text or
    form JSON, compiled every time)."""
    if not isinstance(metric, str | dict):
        return None
    try:
        return org_id, msgspec.json.encode([metric, filters, group_by, window_s])
    except (TypeError, msgspec.EncodeError):
        return None


class Hub:
    def __init__(self, services: Services):
        self.services = services
        s = services.settings
        self.settings = s
        self.node_id = uuid.uuid4().hex[:12]
        self.conns: set[Connection] = set()
        # Sockets and keys are long-lived: keep them out of full collections
        # (app/push/gcpolicy.py; the poller counts its keys in the same heap).
        self.heap = LongLivedHeap() if s.push_gc_freeze else None
        self.frames_of_closed = 0  # messages written to sockets since dropped (for metrics)
        self.by_key: dict[str, set[Connection]] = {}
        self.by_org: dict[int, set[Connection]] = {}
        self.specs: dict[str, KeySpec] = {}
        # (org, the inputs' JSON) -> the key compiled from them, least recently used first.
        self._compiled_keys: OrderedDict[tuple[int, bytes], KeySpec] = OrderedDict()
        self._key_refs: dict[str, int] = {}  # local socket subscriptions per key
        self._snapshots: dict[tuple[str, int], _Snapshot] = {}
        self.stale = False
        self.lag_ms = 0
        self._stale_sent_at = 0.0
        self.bus: Any = None
        if services.redis is not None:
            from app.push.bus import RedisBus

            self.bus = RedisBus(
                services.redis,
                node_id=self.node_id,
                namespace=services.ch.database,
                lease_ms=s.push_lease_ms,
                on_key_message=self.deliver,
                on_org_message=self._deliver_org,
                on_late_rows=self._note_late_rows,
            )
        # Skipping orgs without reported inserts needs every insert to be reported here: by
        # this process's writer (embedded ClickHouse: nobody else writes) or by every node's
        # through Redis; never with Kafka ingest (ClickHouse/the bridge inserts).
        reported = not s.kafka_brokers and (self.bus is not None or s.clickhouse_url is None)
        self.poller = Poller(
            services.ch,
            tick_ms=s.push_tick_ms,
            reread_s=s.push_reread_s,
            retention_s=s.push_max_range_s,
            stale_ms=s.push_stale_ms,
            lag_source=self._writer_lag,
            emit=self._emit,
            bus=self.bus,
            on_lag=self.set_lag,
            # Phases are balanced by fan-out: a key's cost is its local subscribers.
            weight=self._viewers,
            telemetry=services.telemetry,
            # The whole-range re-read is how unreported rows reach viewers (Kafka ingest, a
            # server ClickHouse without Redis); where reports cross nodes over Redis, only the
            # net under a lost pub/sub message, so rarer (its cost: retention / period times
            # the regular reads, docs/push.md). Reported in this process (embedded ClickHouse:
            # its writer is the only inserter, and a failed read keeps its seconds), none.
            full_reread_s=(
                s.push_full_reread_s
                if not reported
                else s.push_full_reread_reported_s
                if self.bus is not None
                else 0
            ),
            poll_all_s=s.push_poll_all_s if reported else 0,
            heap=self.heap,
        )
        self._publishing: set[asyncio.Future[None]] = set()
        self._started = False
        self.access = SocketAccess(services, lambda: self.conns)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        if self.bus is not None:
            await self.bus.start()
        self.poller.start()
        self.access.start()
        self._started = True

    async def close_sockets(self) -> None:
        """Close every socket (1001) and stop re-checking credentials: the first half of
        `stop`, which the runtime calls first when a transport server must stop in between
        (its handlers still drop their sockets while the poller and bus run)."""
        await self.access.stop()
        for conn in list(self.conns):
            conn.close(protocol.CLOSE_GOING_AWAY, "server shutting down")

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self.close_sockets()
        await self.poller.stop()
        if self.bus is not None:
            await self.bus.stop()

    def rows_inserted(self, ranges: dict[int, tuple[int, int]]) -> None:
        """The writer's insert listener: this node's poller re-reads those seconds for the
        orgs' keys at its next round, and with Redis every other node's does too."""
        self._note_late_rows(ranges)
        if self.bus is not None:
            task = asyncio.ensure_future(self.bus.publish_late_rows(ranges))
            self._publishing.add(task)
            task.add_done_callback(self._published)

    def _note_late_rows(self, ranges: dict[int, tuple[int, int]]) -> None:
        self.poller.late.note(ranges)

    def _published(self, task: asyncio.Future[None]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The other nodes' full re-read (push_full_reread_s) still brings those rows.
            log.warning("publishing inserted seconds failed: %s", task.exception())

    def _writer_lag(self) -> float:
        writer = self.services.writer
        age = getattr(writer, "oldest_pending_age_s", None)
        return age() if age is not None else 0.0

    # -- keys -----------------------------------------------------------------------------
    def key_for(
        self,
        org_id: int,
        metric: Any,
        *,
        filters: list[dict[str, Any]] | None = None,
        group_by: list[str] | None = None,
        window_s: int = 0,
    ) -> KeySpec:
        """Compile a live key (MetricError if the metric or a parameter is refused) — or hand
        back the one compiled for the same org and the same inputs: a reconnect storm
        subscribes a few metrics thousands of times, at ~1.8 ms of sqlglot each (19,500
        subscribes took 35 s of the event loop, docs/benchmarks.md "Push (b)"). Compiling is a
        function of exactly these inputs and the database (times are bound at each read), so a
        kept key is the key compiling again would give; the org is part of what it is kept
        under, and of the key itself."""
        ident = _compile_ident(org_id, metric, filters, group_by, window_s)
        cache = self._compiled_keys
        if ident is not None:
            spec = cache.get(ident)
            if spec is not None:
                cache.move_to_end(ident)
                return spec
        spec = make_key(
            metric,
            org_id=org_id,
            database=self.services.ch.database,
            filters=filters,
            group_by=group_by,
            window_s=window_s,
        )
        if ident is not None:
            cache[ident] = spec
            while len(cache) > COMPILED_KEYS:
                cache.popitem(last=False)
        return spec

    def _viewers(self, key: str) -> int:
        return len(self.by_key.get(key, ()))

    def id_columns(self, key: str) -> tuple[str, ...]:
        """What identifies a row of `key`'s deltas (t + its dims): how queued deltas merge."""
        spec = self.specs.get(key)
        return ("t", *spec.dims) if spec else ("t",)

    async def _activate(self, spec: KeySpec) -> None:
        refs = self._key_refs.get(spec.key, 0)
        self._key_refs[spec.key] = refs + 1
        if refs == 0:
            self.specs[spec.key] = spec
            self.poller.acquire(spec)
            if self.bus is not None:
                await self.bus.subscribe_key(spec.key)

    async def _deactivate(self, key: str) -> None:
        refs = self._key_refs.get(key, 0) - 1
        if refs > 0:
            self._key_refs[key] = refs
            return
        self._key_refs.pop(key, None)
        self.specs.pop(key, None)
        self.poller.release(key)
        if self.bus is not None:
            await self.bus.unsubscribe_key(key)

    # -- fanout ---------------------------------------------------------------------------
    async def _emit(self, key: str, kind: str, text: str) -> None:
        if self.bus is not None:
            await self.bus.publish_key(key, kind, text)
        else:
            self.deliver(key, kind, text)

    def deliver(self, key: str, kind: str, text: str) -> None:
        """Hand one encoded message to every local socket subscribed to `key`.

        Sockets of a transport that writes to many at once (`conn.direct`: the dedicated one)
        and are caught up (`conn.writable(key)`) get the delta in one `send_all` call; the
        others go through their coalescing queue (`send_delta`)."""
        direct: list[Any] | None = None
        for conn in self.by_key.get(key, ()):
            if conn.direct and kind == "d" and conn.writable(key):
                if direct is None:
                    direct = []
                direct.append(conn)
            else:
                conn.send_delta(key, kind, text)
        if direct:
            direct[0].send_all(direct, text)  # one direct transport: all of the same class

    async def send_to_org(self, org_id: int, message: dict[str, Any] | str) -> None:
        """Send `message` (e.g. `{"type": "alert", ...}`) to every socket of `org_id`, on
        every node; encoded once."""
        text = message if isinstance(message, str) else protocol.encode(message)
        if self.bus is not None:
            await self.bus.publish_org(org_id, text)
        else:
            self._deliver_org(org_id, text)

    def _deliver_org(self, org_id: int, text: str) -> None:
        for conn in self.by_org.get(org_id, ()):
            conn.send_text(text)

    def set_lag(self, lag_ms: int) -> None:
        """The poller's pipeline lag: `stale {lag_ms}` past the threshold (repeated each
        second while stale), `live` once caught up."""
        self.lag_ms = lag_ms
        now = time.monotonic()
        if lag_ms > self.settings.push_stale_ms:
            if not self.stale or now - self._stale_sent_at >= 1.0:
                self.stale = True
                self._stale_sent_at = now
                text = protocol.encode({"type": "stale", "lag_ms": lag_ms})
                for conn in self.conns:
                    if conn.subs:
                        conn.stale = True
                        conn.send_text(text)
        elif self.stale:
            self.stale = False
            text = protocol.encode({"type": "live"})
            for conn in self.conns:
                if conn.stale:
                    conn.stale = False
                    conn.send_text(text)

    def stats(self, org_id: int) -> dict[str, Any]:
        """This node's view of `org_id`'s live keys (for `GET /push/stats`)."""
        poller = self.poller
        keys = {}
        for key, state in poller.keys.items():
            if state.spec.org_id != org_id:
                continue
            keys[key] = {
                "viewers": len(self.by_key.get(key, ())),
                "polled_here": key in poller.owned,
                "queries": state.queries,
                "watermark": state.watermark,
            }
        return {
            "node_id": self.node_id,
            "redis": self.bus is not None,
            "connections": len(self.by_org.get(org_id, ())),
            "ticks": poller.ticks,
            "lag_ms": self.lag_ms,
            "keys": keys,
        }

    # -- snapshots ------------------------------------------------------------------------
    async def _rows_json(self, spec: KeySpec, t_from: int, t_to: int) -> str:
        """The key's rows over [t_from, t_to) as a snapshot or resume sends them: as the
        poller's deltas do, a grouped key with no data has no rows (not one "" group a second,
        its statement's WITH FILL)."""
        result = await run_guarded(self.services.ch, spec.bind(t_from, t_to))
        return protocol.encode(spec.wire_rows(spec.read_records(result, t_from, t_to)))

    async def snapshot(self, spec: KeySpec, range_s: int) -> tuple[int, int, str]:
        """(t_from, t_to, rows JSON) of the last `range_s` seconds; concurrent subscribers of
        the same key within one tick share one query."""
        loop = asyncio.get_running_loop()
        cache_key = (spec.key, range_s)
        hit = self._snapshots.get(cache_key)
        fresh_s = max(self.settings.push_tick_ms, 100) / 1000
        if hit is not None and loop.time() - hit.at < fresh_s and not hit.task.cancelled():
            return await asyncio.shield(hit.task)
        now_s = int(time.time())
        t_from, t_to = now_s - range_s + 1, now_s + 1

        async def run() -> tuple[int, int, str]:
            return t_from, t_to, await self._rows_json(spec, t_from, t_to)

        task = asyncio.ensure_future(run())
        self._snapshots[cache_key] = _Snapshot(loop.time(), task)
        if len(self._snapshots) > 1000:
            horizon = loop.time() - fresh_s
            for k in [k for k, v in self._snapshots.items() if v.at < horizon]:
                del self._snapshots[k]
        return await asyncio.shield(task)

    def close_token(self, token_hash: str) -> int:
        """Close this process's sockets opened with the token `token_hash` (it was just
        revoked here); see `SocketAccess.close_token`."""
        return self.access.close_token(token_hash)

    def register(self, conn: Any) -> None:
        """Track an authorised socket (any transport: `Connection` or `DirectConnection`)."""
        self.conns.add(conn)
        self.by_org.setdefault(conn.org_id, set()).add(conn)
        if self.heap is not None:
            self.heap.opened()

    def open(self, connection_class: Any, transport: Any, principal: Any, token_hash: str) -> Any:
        """A socket of `connection_class` over `transport` for an authorised `principal`, with
        this hub's queue limits, registered — the same for every transport."""
        conn = connection_class(
            transport,
            org_id=principal.org_id,
            user_id=principal.user_id,
            token_hash=token_hash,
            max_queue=self.settings.push_max_queue,
            slow_s=self.settings.push_slow_consumer_s,
            id_columns=self.id_columns,
        )
        if isinstance(principal, SharePrincipal):
            conn.share = principal  # scoped to the link's dashboard (`_shared_chart`)
        self.register(conn)
        return conn

    async def drop(self, conn: Any) -> None:
        """Forget a socket and release its keys (the socket is gone or closing)."""
        await self._drop(conn)

    async def on_message(self, conn: Any, data: str | bytes) -> None:
        """One client message (subscribe / unsubscribe / ping), whatever the transport."""
        await self._on_message(conn, data)

    async def _drop(self, conn: Connection) -> None:
        self.frames_of_closed += conn.sent if conn in self.conns else 0
        if self.heap is not None and conn in self.conns:
            self.heap.closed()
        self.conns.discard(conn)
        org = self.by_org.get(conn.org_id)
        if org is not None:
            org.discard(conn)
            if not org:
                del self.by_org[conn.org_id]
        for key in list(conn.key_ids):
            await self._detach_key(conn, key)
        conn.subs.clear()
        conn.key_ids.clear()

    async def _detach_key(self, conn: Connection, key: str) -> None:
        viewers = self.by_key.get(key)
        if viewers is not None:
            viewers.discard(conn)
            if not viewers:
                del self.by_key[key]
        conn.pending.pop(key, None)
        await self._deactivate(key)

    async def _on_message(self, conn: Connection, data: str | bytes) -> None:
        try:
            msg = protocol.decode(data, self.settings.max_json_depth)
        except protocol.TooDeep:
            # Hostile, never a mistake a client makes: close rather than answer.
            conn.close(protocol.CLOSE_TOO_DEEP, "message nested too deeply")
            return
        except protocol.ProtocolError as exc:
            conn.send_text(protocol.error(exc.id, exc.code, exc.message))
            return
        if isinstance(msg, protocol.Ping):
            conn.send_text(protocol.PONG)
        elif isinstance(msg, protocol.Unsubscribe):
            key = conn.subs.pop(msg.id, None)
            if key is None:
                conn.send_text(protocol.error(msg.id, "unknown_id", "no subscription with this id"))
                return
            ids = conn.key_ids.get(key)
            if ids is not None:
                ids.discard(msg.id)
                if not ids:
                    del conn.key_ids[key]
                    await self._detach_key(conn, key)
        else:
            await self._subscribe(conn, msg)

    async def _resolve(self, conn: Connection, msg: protocol.Subscribe) -> tuple[Any, int]:
        """(metric, window_s) from metric | metric_id | builtin; ProtocolError if not."""
        if msg.chart_id is not None:
            raise protocol.ProtocolError(
                "invalid_subscription", "chart_id is for shared dashboard links", msg.id
            )
        given = [x for x in (msg.metric, msg.metric_id, msg.builtin) if x is not None]
        if len(given) != 1:
            raise protocol.ProtocolError(
                "invalid_subscription", "give exactly one of metric, metric_id, builtin", msg.id
            )
        window = msg.window_s or 0
        if msg.builtin is not None:
            from app.querybuilder import BUILTIN_METRICS

            builtin = BUILTIN_METRICS.get(msg.builtin)
            if builtin is None:
                raise protocol.ProtocolError(
                    "not_found", f"no built-in metric {msg.builtin!r}", msg.id
                )
            return (
                builtin.text,
                msg.window_s if msg.window_s is not None else builtin.window_seconds,
            )
        if msg.metric_id is not None:
            return await self._saved_metric(conn.org_id, msg.metric_id, msg.id), window
        return msg.metric, window

    async def _saved_metric(self, org_id: int, metric_id: int, msg_id: Any) -> Any:
        """The definition of the org's saved metric (its text when it has one)."""
        from app.store import NotFound, StoreUnavailable

        try:
            row = await self.services.store.metrics.get(org_id, metric_id)
        except NotFound:
            raise protocol.ProtocolError("not_found", "metric not found", msg_id) from None
        except StoreUnavailable:
            raise protocol.ProtocolError(
                "store_unavailable", "the configuration store is unavailable", msg_id
            ) from None
        definition = row["definition"]
        if isinstance(definition, dict) and "text" in definition:
            return definition["text"]
        return definition

    async def _shared_chart(
        self, share: SharePrincipal, msg: protocol.Subscribe
    ) -> tuple[Any, list[str] | None]:
        """(metric, group_by) of a link socket's subscription: a chart of the link's dashboard
        as saved now, keyed as the dashboard page keys it (`live_group_by`, no filters, no
        window). The client names the chart and nothing else: a metric, metric_id, builtin,
        filters, group_by or window_s is refused (`forbidden`), any chart not on that
        dashboard is `not_found`."""
        from app.api.dashboards import read_dashboard
        from app.api.shares import has_live_metric, live_group_by
        from app.auth import Principal
        from app.store import NotFound, StoreUnavailable

        named = [
            name
            for name in ("metric", "metric_id", "builtin", "group_by", "window_s")
            if getattr(msg, name) is not None
        ] + (["filters"] if msg.filters else [])
        if named or msg.chart_id is None:
            what = f" (not {', '.join(named)})" if named else ""
            raise protocol.ProtocolError(
                "forbidden",
                f"a shared link subscribes to its dashboard's charts by chart_id only{what}",
                msg.id,
            )
        viewer = Principal(org_id=share.org_id, user_id=0, role="viewer")
        try:
            dashboard = await read_dashboard(self.services, viewer, share.dashboard_id)
        except NotFound:
            raise protocol.ProtocolError("not_found", "chart not found", msg.id) from None
        except StoreUnavailable:
            raise protocol.ProtocolError(
                "store_unavailable", "the configuration store is unavailable", msg.id
            ) from None
        chart = next((c for c in dashboard.charts if c.id == msg.chart_id), None)
        if chart is None:
            raise protocol.ProtocolError("not_found", "chart not found", msg.id)
        if not has_live_metric(chart):
            raise protocol.ProtocolError(
                "invalid_subscription", "this chart has no live metric", msg.id
            )
        if chart.metric_id is not None:
            metric = await self._saved_metric(share.org_id, chart.metric_id, msg.id)
        else:
            inline = chart.metric_inline
            metric = inline["text"] if isinstance(inline, dict) and "text" in inline else inline
        return metric, live_group_by(chart)

    async def _subscribe(self, conn: Connection, msg: protocol.Subscribe) -> None:
        from app.querybuilder import MetricError

        s = self.settings
        if not await self.access.credential_live(conn):
            conn.close(protocol.CLOSE_UNAUTHORIZED, "token revoked")
            return
        if msg.id in conn.subs:
            conn.send_text(protocol.error(msg.id, "duplicate_id", "this id is already subscribed"))
            return
        if len(conn.subs) >= s.push_max_subscriptions:
            conn.close(protocol.CLOSE_TOO_MANY_SUBSCRIPTIONS, "too many subscriptions")
            return
        if not 1 <= msg.range_s <= s.push_max_range_s:
            conn.send_text(
                protocol.error(
                    msg.id,
                    "invalid_range",
                    f"range_s is 1..{s.push_max_range_s} (rollup_1s keeps 10 minutes)",
                    {"field": "range_s"},
                )
            )
            return
        try:
            if conn.share is not None:
                metric, group_by = await self._shared_chart(conn.share, msg)
                spec = self.key_for(conn.org_id, metric, group_by=group_by)
            else:
                metric, window = await self._resolve(conn, msg)
                spec = self.key_for(
                    conn.org_id, metric, filters=msg.filters, group_by=msg.group_by, window_s=window
                )
        except protocol.ProtocolError as exc:
            conn.send_text(protocol.error(msg.id, exc.code, exc.message))
            return
        except MetricError as exc:
            body = exc.to_dict()
            conn.send_text(protocol.error(msg.id, body["code"], body["message"], body["where"]))
            return
        # Register first (deltas from now on are held), then read the window: the client
        # gets the snapshot, then every delta computed after it was registered.
        conn.subs[msg.id] = spec.key
        first = spec.key not in conn.key_ids
        conn.key_ids.setdefault(spec.key, set()).add(msg.id)
        if first:
            conn.hold(spec.key)
            self.by_key.setdefault(spec.key, set()).add(conn)
            await self._activate(spec)
        range_s = min(msg.range_s, max(s.push_max_range_s - spec.window_s, 1))
        try:
            now_s = int(time.time())
            since_s = msg.since // 1000 if msg.since is not None else None
            if since_s is not None and now_s - range_s < since_s <= now_s:
                t_from, t_to = since_s, now_s + 1
                rows = await self._rows_json(spec, t_from, t_to)
                kind = "resume"
            else:
                t_from, t_to, rows = await self.snapshot(spec, range_s)
                kind = "snapshot"
        except Exception as exc:
            log.warning("push snapshot failed for key %s: %s", spec.key, exc)
            conn.send_text(protocol.error(msg.id, "query_failed", "reading the metric failed"))
            await self._on_message(conn, protocol.encode({"type": "unsubscribe", "id": msg.id}))
            return
        if conn.close_code is not None or conn.subs.get(msg.id) != spec.key:
            return
        head = protocol.encode(
            {
                "type": kind,
                "id": msg.id,
                "key": spec.key,
                "t_from": t_from,
                "t_to": t_to,
                "columns": list(spec.columns),
                "dims": list(spec.dims),
            }
        )
        conn.send_text(f'{head[:-1]},"rows":{rows}}}')
        if first:
            conn.release_held(spec.key)
        if self.stale:
            conn.stale = True
            conn.send_text(protocol.encode({"type": "stale", "lag_ms": self.lag_ms}))
