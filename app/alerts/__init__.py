"""Alerts — threshold, anomaly (`anomaly.py`) and grouped (`grouped.py`): the evaluator on
the push poller's ticks, the state machine (with hysteresis and keep-firing) shared with
`/test` and the backtest, webhook delivery. See docs/alerts.md.

* `Evaluator` (one per process, `services.alerts`): `start`/`stop`, `sync(org_id=, alert_id=)`
  after definitions change, counters for tests and benchmarks;
* `Machine` / `Rule`: the per-alert state machine, one second (or minute) at a time;
* `backtest(...)`, `test_alert(...)`: the same machine over a series read from ClickHouse."""

from app.alerts.evaluator import Evaluator
from app.alerts.machine import Machine, Rule, Transition

__all__ = ["Evaluator", "Machine", "Rule", "Transition"]
