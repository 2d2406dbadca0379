"""app/gcpause.py: the collector is off inside the block, back on after it (also when the block
raises), and a nested or concurrent pause leaves resuming to whoever paused first."""

from __future__ import annotations

import gc

import pytest

from app.gcpause import paused_collection


def test_the_collector_is_paused_inside_and_resumed_after_even_on_error():
    assert gc.isenabled()
    with paused_collection():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_collection():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_only_the_outer_pause_resumes():
    with paused_collection():
        with paused_collection():
            pass
        assert not gc.isenabled()  # the inner block did not resume it under the outer one
    assert gc.isenabled()


def test_a_collector_disabled_elsewhere_stays_disabled():
    gc.disable()
    try:
        with paused_collection():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
