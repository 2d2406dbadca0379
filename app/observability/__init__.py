"""What operators watch: Prometheus metrics and the log format.

* `metrics.Telemetry` — the metric objects of one process, in a registry of its own (one per
  `Services`), injected into the parts that count; `metrics.PartsCollector` reads the rest of
  the parts' state at scrape time;
* `exposition.MetricsServer` — `GET /metrics` on `CLICKPULSE_METRICS_PORT`, behind the scrape
  token;
* `logformat` — text or JSON log lines (`CLICKPULSE_LOG_FORMAT`), redacted either way.

docs/deployment.md, section "Operators: metrics and logs", lists every metric.
"""

from app.observability.metrics import PartsCollector, Telemetry

__all__ = ["PartsCollector", "Telemetry"]
