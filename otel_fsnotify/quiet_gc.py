"""The cyclic garbage collector, set for a process that handles events.

Per event the pipeline allocates a few small containers (an event's lists
and dicts, a record's parts) that never form cycles. With the default
thresholds the collector ran every ~700 allocations and rescanned the
long-lived heap each time: a fifth of the agent's CPU in a storm, and
replay's throughput down by a fifth to a quarter (`benchmarks/bench_delivery.py`).
"""

from __future__ import annotations

import gc

GEN0 = 50_000  # allocations between young-generation collections


def quiet_gc() -> None:
    """Freeze what start-up built (never scanned again) and collect far less often."""
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GEN0), max(gen1, 20), max(gen2, 20))
