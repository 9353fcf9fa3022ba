"""The cyclic garbage collector, set for a server that holds many connections.

Every open connection is a hundred-odd long-lived objects (frames, sockets, protocol
state), and CPython's full collections walk all of them. By default a full collection
comes after every 10 collections of the middle generation (once the heap has grown by a
quarter), so a server taking on thousands of connections keeps walking a heap that keeps
growing. Measured with ``benchmarks/gc_experiment.py`` (10,000 connections opened 64 at a
time, side by side): with the third threshold at 100 the accept rate held at 1.8k/s
instead of falling from 1.7k/s to 0.8k/s, and one echo to every connection took 2.5 s
instead of 4.3 s. The price is garbage that waits longer for its full collection:
``benchmarks/gc_churn.py`` (rounds of 6,000 connections) found a server's memory settled
about 7 MiB higher than with CPython's setting, and stayed there. At 1000 it was faster
still (2.0k/s, 1.4 s), but that garbage kept growing (33 MiB after 36,000 connections);
at 50 and 20 it gained little. ``gc.freeze()`` after startup did not help (the
connections come later), and freezing again and again leaked every cycle it froze.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

__all__ = ["DEFAULT_FULL_THRESHOLD", "full_collections_after"]

DEFAULT_FULL_THRESHOLD: Final = 100


@contextlib.contextmanager
def full_collections_after(threshold: int | None) -> Iterator[None]:
    """Within the block, a full collection only after ``threshold`` collections of the
    middle generation (``None``: leave the collector as it is)."""
    if threshold is None:
        yield
        return
    young, middle, before = gc.get_threshold()
    gc.set_threshold(young, middle, threshold)
    try:
        yield
    finally:
        now = gc.get_threshold()
        if now[2] == threshold:  # unless someone has set it since
            gc.set_threshold(now[0], now[1], before)
