"""Deterministic custom code for chaos runs and benchmarks, and the sources it is checked on.

Its result is a pure function of the rows' values (not of their spelling: S3 Select and the
local engine may space JSON differently), so a checker can recompute the exact result every
stored output must equal from the source alone. Workers import it by ``HANDLER``, from the
checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HANDLER = "batchspot_support.sample_code:summarise"
POISON_VALUE = "poison"  # a source holding this value makes summarise() raise
WORK_ENV = "SAMPLE_CODE_WORK_MS"  # time each call spends "working", as real custom code does


def summarise(rows: str) -> dict[str, Any]:
    """Count, total and fingerprint the rows (JSON lines of ``{"id", "value"}`` records)."""
    time.sleep(float(os.environ.get(WORK_ENV, "0")) / 1000)
    records = [json.loads(line) for line in rows.splitlines() if line.strip()]
    values = [str(record["value"]) for record in records]
    if POISON_VALUE in values:
        raise ValueError("the sample code refuses a source marked poison")
    canonical = json.dumps([[str(r["id"]), str(r["value"])] for r in records]).encode()
    return {
        "rows": len(records),
        "total": sum(int(v) for v in values),
        "sha256": hashlib.sha256(canonical).hexdigest(),
    }


def source_rows(index: int, seed: int) -> list[tuple[str, str]]:
    """Return the (id, value) rows of source ``index``: a few, unlike any other source's."""
    generator = random.Random(seed * 1_000_003 + index)
    return [(f"{index}-{row}", str(generator.randrange(10**6))) for row in range(1, 4)]


def source_csv(rows: list[tuple[str, str]]) -> bytes:
    """Return the CSV file (with a header) holding ``rows``."""
    return ("id,value\n" + "".join(f"{i},{v}\n" for i, v in rows)).encode()


def expected_result(rows: list[tuple[str, str]]) -> dict[str, Any]:
    """Return what :func:`summarise` gives for a source of ``rows``, whatever the engine."""
    return summarise("\n".join(json.dumps({"id": i, "value": v}) for i, v in rows))


def upload_sources(
    s3: Any, bucket: str, count: int, seed_value: int, prefix: str
) -> dict[str, list[tuple[str, str]]]:
    """Upload ``count`` small CSV sources; return each key's rows (the truth to check by)."""
    # No spaces or '+' in these keys: LocalStack 4.13 breaks listing pagination on them.
    sources = {
        f"{prefix}part-{index:06d}.csv": source_rows(index, seed_value) for index in range(count)
    }

    def put(key: str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=source_csv(sources[key]))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, sources))
    return sources
