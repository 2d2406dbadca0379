"""Shutdown is bounded step by step (app/services.py `_bounded`): a step that never finishes is
logged with where it waits and left behind, and the steps after it still run; a step's error
still reaches the caller."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app import services


async def _never_done(ready: asyncio.Event) -> None:
    ready.set()
    await asyncio.Event().wait()  # a peer that never answers


async def test_a_step_that_never_finishes_is_logged_where_it_waits_and_left(caplog):
    ready = asyncio.Event()
    ran_after = []
    with caplog.at_level(logging.ERROR, logger="app.services"):
        await services._bounded("stuck part", _never_done(ready), 0.05)
        await services._bounded("next part", _record(ran_after), 0.05)
    assert ready.is_set() and ran_after == ["ran"]
    (record,) = [r for r in caplog.records if "stuck part" in r.getMessage()]
    message = record.getMessage()
    assert "did not finish" in message
    assert "in _never_done" in message  # where it waits, through the chain of awaits


async def test_a_step_that_finishes_in_time_is_awaited_and_its_error_raised(caplog):
    done = []
    await services._bounded("quick part", _record(done), 5)
    assert done == ["ran"]
    with pytest.raises(RuntimeError, match="boom"):
        await services._bounded("failing part", _fail(), 5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def _record(into: list[str]) -> None:
    await asyncio.sleep(0)
    into.append("ran")


async def _fail() -> None:
    raise RuntimeError("boom")
