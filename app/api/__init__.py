"""The HTTP API: health, dashboards, metrics, history, query, alerts."""

from app.api.health import healthz, readyz

route_handlers = [healthz, readyz]
