"""The config store's circuit breaker (issue 13 item 4): closed → open → half-open probe."""

from __future__ import annotations

import pytest

from app.store.base import Breaker, StoreUnavailable
from tests.api.conftest import FakeClock


def test_opens_after_two_failures_probes_once_and_closes_on_success():
    clock = FakeClock(0.0)
    heard: list[tuple[bool, str]] = []
    breaker = Breaker(2.0, clock=clock)
    breaker.listener = lambda ok, error: heard.append((ok, error))
    breaker.check()
    breaker.failure("refused")  # one blip: still closed
    breaker.check()
    breaker.failure("refused")
    assert breaker.is_open
    with pytest.raises(StoreUnavailable):
        breaker.check()  # at once, no PostgreSQL call
    assert breaker.refused == 1
    clock.advance(2.0)
    breaker.check()  # the probe goes through...
    with pytest.raises(StoreUnavailable):
        breaker.check()  # ...alone
    breaker.failure("still down")  # a failed probe opens it again for open_s
    with pytest.raises(StoreUnavailable):
        breaker.check()
    clock.advance(2.0)
    breaker.check()
    breaker.release()  # the probe was cancelled: no verdict, the next call may probe
    breaker.check()
    breaker.success()
    assert not breaker.is_open
    breaker.check()
    breaker.failure("blip")
    assert not breaker.is_open  # the count restarted at the success
    assert heard == [
        (False, "refused"),
        (False, "refused"),
        (False, "still down"),
        (True, ""),
        (False, "blip"),
    ]
