"""Live push: `/ws/subscribe`, the poller, fanout, Redis cross-node. See docs/push.md.

Public API:

* `Hub` (one per process, `services.push`; transport-free): `deliver`, `send_to_org(org_id,
  message)` (alerts), `key_for(org_id, metric, filters=, group_by=, window_s=)` → `KeySpec`,
  `poller`;
* `Poller`: `tick()`, `watch(spec, listener)` → `Watch` (the alerts hook: a key without
  sockets, its rows every tick), `add_tick_listener(fn)`;
* `route_handlers` (app.push.routes): `/ws/subscribe`, `GET /push/stats`, `POST /ws/ticket`;
* transports over the hub: `app.push.asgi` (the route's sockets) and `app.push.dedicated`
  (the optional `websockets` server on `CLICKPULSE_PUSH_PORT`)."""

from app.push.hub import Hub
from app.push.keys import KeySpec, make_key
from app.push.poller import KeyTick, Poller, Watch
from app.push.routes import route_handlers

__all__ = ["Hub", "KeySpec", "KeyTick", "Poller", "Watch", "make_key", "route_handlers"]
