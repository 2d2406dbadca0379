"""Anti-flapping in the live evaluator: recovery threshold and keep-firing, across a restart."""

from __future__ import annotations

from tests.alerts.conftest import SETTLE_S, base_second, create_alert, events_of, series_events


def kinds(events, base):
    return [(e["kind"], int(e["at"].timestamp()) - base) for e in events]


async def test_recovery_threshold_and_keep_firing_live_and_across_a_restart(make_env, org, pg_url):
    base = base_second()
    rules = {"threshold": 10, "recovery_threshold": 5, "for_seconds": 2}
    rules |= {"resolve_after_seconds": 2, "keep_firing_seconds": 3}
    # s0 s1 fire; 8s are between the thresholds; s6 s7 recovered (resolve condition met at
    # s7), kept s8 s9 s10 → resolved at s10; then the same with a breach (s16) while kept
    counts = [12, 12, 8, 8, 8, 8, 4, 4, 4, 4, 4, 0, 12, 12, 4, 4, 12, 4, 4, 4, 4, 4, 4, 0]
    async with make_env() as env:
        a = await create_alert(env, org, **rules)
        assert a["keep_firing_seconds"] == 3 and a["recovery_threshold"] == 5
        await env.post(org.api_key, series_events(base, counts))
        await env.tick(base + SETTLE_S - 1)
        await env.tick_through(base + SETTLE_S, base + 14 + SETTLE_S)  # through s14
        assert kinds(await events_of(pg_url, a["id"]), base) == [
            ("firing", 1),
            ("resolved", 10),
            ("firing", 13),
        ]
    # a restart while firing (s14 evaluated: the clear run has begun): the new process
    # replays from the stored firing second and resolves exactly once, where one process would
    async with make_env() as env:
        await env.tick(base + 23 + SETTLE_S)
        assert kinds(await events_of(pg_url, a["id"]), base) == [
            ("firing", 1),
            ("resolved", 10),
            ("firing", 13),
            # s16 breaches within keep-firing (s15 met the resolve condition): restart;
            # recovered s17 s18, kept s19 s20 s21
            ("resolved", 21),
        ]
