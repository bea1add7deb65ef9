"""What a worker process keeps for its life, kept out of the cyclic garbage collector's way.

Python's full collection walks every container object alive. After start-up that is mostly
what lives as long as the process: modules, botocore's service models, the boto3 clients, and
(once a query needs them) pyarrow and the engine's modules. A full pass over all that took
17-24 ms, and Parquet items set one off every few items: in three fresh processes, the second
``WHERE`` + ``SUM`` over the bench's 471 MiB file paid one (160-186 ms of CPU, against 141-150
for the third).

``gc.freeze()`` moves every object alive now into a generation that collections never walk.
It is a constant-time list splice. An object frozen is still freed by reference counting; only
a reference cycle among frozen objects is never collected. So freezing happens only where what
is alive is what the process keeps: after start-up, and after a lazy import of a heavy module.
What other threads' items hold at that moment is frozen too; that happens once per import, so
what it may keep is bounded.
"""

from __future__ import annotations

import gc
import sys

_modules_when_frozen = 0


def freeze_new_imports() -> None:
    """Freeze the heap if modules were imported since it was last frozen; cheap otherwise.

    Called where a process has just made what it keeps (:mod:`worker.__main__` after
    start-up) and after each lazy import of the query engine's pyarrow paths
    (:mod:`worker.query.local`), which run it on every item: the module count makes it a
    no-op once nothing new is imported. Two threads freezing at once is harmless.
    """
    global _modules_when_frozen
    if len(sys.modules) != _modules_when_frozen:
        _modules_when_frozen = len(sys.modules)
        gc.freeze()
