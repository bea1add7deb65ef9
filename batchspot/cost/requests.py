"""What a run's AWS requests cost per million items, from the calls its workers counted.

At millions of small objects the requests, not the instances, are the bill: every worker's
summary line counts its calls by ``service.Operation`` (``worker.metrics.CallCounter``), and
this module prices them at the list prices below. Beside the run's own figure it prices the
same items through Step Functions' Distributed Map, the managed alternative, with and without
its ItemBatcher, so that the choice is made on numbers.

Prices are AWS's published list prices for US East (N. Virginia), read on
:data:`PRICES_AS_OF` from the pricing pages (https://aws.amazon.com/s3/pricing/,
https://aws.amazon.com/sqs/pricing/, https://aws.amazon.com/step-functions/pricing/):

* S3 Standard: PUT, COPY, POST and LIST requests $0.005 per 1,000; GET, SELECT and all other
  requests $0.0004 per 1,000; DELETE and CANCEL requests free. S3 Select's scanned and
  returned bytes, and data transfer, are not requests and are not counted here;
* SQS standard queues: $0.40 per million requests, each 64 KiB of payload one request (a
  batch of ten small messages is one request); the first million a month free, not deducted;
* Step Functions Standard workflows: $0.025 per 1,000 state transitions.

Other services the worker calls (STS, EC2's instance metadata) are not charged per request.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

PRICES_AS_OF = "2026-12-07"
PRICES_REGION = "us-east-1"
MILLION = 1_000_000

S3_WRITE_CLASS = 0.005 / 1000  # PUT, COPY, POST, LIST
S3_READ_CLASS = 0.0004 / 1000  # GET, SELECT, HEAD and every other request
SQS_REQUEST = 0.40 / MILLION
STATE_TRANSITION = 0.025 / 1000

# S3's own words: "PUT, COPY, POST, LIST" requests; a multipart upload's create and complete
# are POSTs, its parts PUTs.
_S3_WRITE_OPERATIONS = frozenset(
    {
        "PutObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "ListObjects",
        "ListObjectsV2",
        "ListObjectVersions",
        "ListMultipartUploads",
        "ListParts",
        "ListBuckets",
    }
)
_S3_FREE_OPERATIONS = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})

# A Distributed Map child workflow runs at least one Task state per child execution: one
# state transition per child is the floor of its bill (Standard child workflows).
TRANSITIONS_PER_CHILD = 1
# ItemBatcher's batch size compared with BatchSpot's batches in the table.
COMPARED_BATCH_SIZE = 100


def is_write_class(operation: str) -> bool:
    """Whether ``service.Operation`` is one of S3's PUT-priced requests (PUT, COPY, POST, LIST)."""
    service, _, name = operation.partition(".")
    return service == "s3" and name in _S3_WRITE_OPERATIONS


def request_price(operation: str) -> float:
    """Return the list price of one ``service.Operation`` call, 0 where none is charged."""
    service, _, name = operation.partition(".")
    if service == "s3":
        if name in _S3_FREE_OPERATIONS:
            return 0.0
        return S3_WRITE_CLASS if is_write_class(operation) else S3_READ_CLASS
    if service == "sqs":
        return SQS_REQUEST
    return 0.0


@dataclass(frozen=True)
class RequestLine:
    """One operation's calls in a run, and what they cost per million items."""

    operation: str
    calls: int
    per_item: float
    per_million_items: float


@dataclass(frozen=True)
class RequestCost:
    """A run's AWS calls by operation, over the items that reached their end."""

    calls: Mapping[str, int]
    items: int

    @property
    def lines(self) -> list[RequestLine]:
        """One line per operation, the most expensive first."""
        lines = [
            RequestLine(
                operation,
                count,
                count / self.items,
                count / self.items * MILLION * request_price(operation),
            )
            for operation, count in self.calls.items()
        ]
        return sorted(lines, key=lambda line: (-line.per_million_items, -line.calls))

    @property
    def per_million_items(self) -> float:
        """What the run's requests cost per million items."""
        return sum(line.per_million_items for line in self.lines)

    def render(self) -> str:
        """Return the table, the total and the Distributed Map comparison, for the operator."""
        rows = [f"{'request':<34} {'calls':>9} {'per item':>9} {'$ per million items':>20}"]
        rows += [
            f"{line.operation:<34} {line.calls:>9,} {line.per_item:>9.3f} "
            f"{line.per_million_items:>20.2f}"
            for line in self.lines
        ]
        total_calls = sum(self.calls.values())
        rows.append(
            f"{'total':<34} {total_calls:>9,} {total_calls / self.items:>9.3f} "
            f"{self.per_million_items:>20.2f}"
        )
        rows.append(
            f"over {self.items:,} items; list prices of {PRICES_REGION} as of {PRICES_AS_OF}"
        )
        single = distributed_map_per_million(1)
        batched = distributed_map_per_million(COMPARED_BATCH_SIZE)
        rows.append(
            f"Distributed Map, the same items (requests only, its compute not counted): "
            f"${single:.2f} per million without ItemBatcher, ${batched:.2f} with "
            f"{COMPARED_BATCH_SIZE} items a batch"
        )
        return "\n".join(rows)


def request_cost(calls: Mapping[str, int], items: int) -> RequestCost:
    """Price ``calls`` (by ``service.Operation``) over ``items``; refuse a run with no item."""
    if items < 1:
        raise ValueError("no item has reached its end yet: nothing to price per item")
    return RequestCost(Counter(calls), items)


def distributed_map_per_million(items_per_child: int) -> float:
    """Return Distributed Map's request cost per million items, at its floor.

    Each child execution takes :data:`TRANSITIONS_PER_CHILD` state transition, and its task
    reads each item's object once (one GET); the ItemReader's and ResultWriter's few requests
    per run are left out.
    """
    children = math.ceil(MILLION / items_per_child)
    return children * TRANSITIONS_PER_CHILD * STATE_TRANSITION + MILLION * S3_READ_CLASS
