"""How many items a queue's messages name, as the seeds made from this state directory recorded.

``invoke submit --size auto`` sizes the array from the queue's depth, which SQS counts in
messages; a batch message names up to 1,000 items. SQS has no way to look at messages without
receiving them, and a receive spends one of each message's ``maxReceiveCount`` receives and
hides it from the workers for its visibility timeout, so sampling the queue is not honest. The
seeder knows what it sent: it records, per queue, the messages and the items they named, in
the state directory beside the stack's outputs (``seeded.json``). A seed that finds the queue
empty starts the queue's record afresh; one that finds messages there adds to it, so the ratio
describes what the queue holds as long as its messages came from seeds made here. Messages
from elsewhere (an S3 event notification, another machine's seed) are not in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchspot.terraform import resolve_state_dir
from worker.queue_depth import queue_counts

SEEDED_FILE = "seeded.json"


def _path(state_dir: Path | None) -> Path:
    return resolve_state_dir(state_dir) / SEEDED_FILE


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def is_empty(sqs: Any, queue_url: str) -> bool:
    """Whether the queue holds no message at all (waiting, in flight or delayed)."""
    return queue_counts(sqs, queue_url).total == 0


def record(
    queue_url: str, messages: int, items: int, *, fresh: bool, state_dir: Path | None = None
) -> None:
    """Add a seed's messages and items to the queue's record; ``fresh``: replace it."""
    path = _path(state_dir)
    seeded = _read(path)
    earlier = {"messages": 0, "items": 0} if fresh else seeded.get(queue_url, {})
    seeded[queue_url] = {
        "messages": earlier.get("messages", 0) + messages,
        "items": earlier.get("items", 0) + items,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(seeded, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def items_per_message(queue_url: str, state_dir: Path | None = None) -> float:
    """Return the items a message of the queue names on average, 1 when nothing was recorded."""
    seeded = _read(_path(state_dir)).get(queue_url, {})
    messages = seeded.get("messages", 0)
    return seeded.get("items", 0) / messages if messages else 1.0
