"""``app/runner.settle_heap``: what start-up built is frozen out of the cyclic collector's walks, the
young generation is collected less often, and garbage in cycles is still collected."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import gc, weakref
from mcp_gateway.app.runner import GC_YOUNG_THRESHOLD, settle_heap

class Node:
    pass

settle_heap()
assert gc.get_freeze_count() > 0, "nothing was frozen"
assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
a, b = Node(), Node()
a.other, b.other = b, a
probe = weakref.ref(a)
del a, b
gc.collect()
assert probe() is None, "a cycle made after settle_heap was not collected"
print("ok")
"""


def test_settle_heap_freezes_start_up_raises_the_threshold_and_still_collects_cycles() -> None:
    # In a child process: the test runner's own collector settings are not this test's to change.
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
