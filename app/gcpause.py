"""`paused_collection()`: no cyclic garbage collection inside a synchronous block that allocates
tens of thousands of short-lived containers — the live poller's split and diff of a round.

Such containers are freed by reference counting; the collector would instead start every 700
allocations and scan every survivor of the block again at each start (and promote them, so
full collections follow). Measured on the poller at 10,000 keys: the collector's time per
round halved (docs/benchmarks.md, "Push (d)"). The block must not await, so nothing else of the
event loop runs while it is paused (the pause is process-wide: worker threads' allocations in
those milliseconds wait for the next collection too). Not worth it where the block's products
outlive it — they are scanned once anyway when it ends: decoding a large result into row lists
paused this way measured no better.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_collection() -> Iterator[None]:
    """Disable the cyclic collector for the block (a no-op when another block already did:
    only whoever paused it resumes it)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
