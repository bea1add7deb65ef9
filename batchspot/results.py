"""``invoke results``: a run's counts and manifest, and its results fetched or merged.

The manifest is built by the same code the final job runs (``worker.manifest``); this module
only adds what an operator does on their own machine: find when the job began, download the
results, merge them into one JSON-lines file, list the failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from batchspot import jobs
from worker.manifest import Entry, Manifest, Run, each_object_once, merge, read_entries


def run_of(batch: Any, *, job_id: str, bucket: str, output_prefix: str, queue_url: str) -> Run:
    """Return the run of Batch job ``job_id``, from when Batch created it.

    Results older than that are not this run's, so the manifest reads none of them. An id
    Batch does not know is refused (:func:`batchspot.jobs.one`) before anything is written.
    """
    created = jobs.one(batch, job_id).get("createdAt")
    since = datetime.fromtimestamp(created / 1000).astimezone() if created else None
    return Run(job_id, bucket, output_prefix, queue_url, since=since)


def download(s3: Any, manifest: Manifest, directory: Path) -> int:
    """Copy every result object the manifest lists under ``directory`` (by its key); count them.

    A batch's result is one object for all its items: it is downloaded once.
    """
    count = 0
    for entry in each_object_once(read_entries(s3, manifest.bucket, manifest.succeeded_key)):
        path = directory / entry.output
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(manifest.bucket, entry.output, str(path))
        count += 1
    return count


def merge_into(s3: Any, manifest: Manifest, path: Path) -> int:
    """Merge every result into one JSON-lines file, streamed (bounded memory); count them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as sink:
        return merge(
            s3,
            manifest.bucket,
            read_entries(s3, manifest.bucket, manifest.succeeded_key),
            sink,
            manifest.run.output_prefix,
        )


def failures(s3: Any, manifest: Manifest) -> Iterator[Entry]:
    """Yield the run's failures, with their reasons, from the manifest's FAILED file."""
    return read_entries(s3, manifest.bucket, manifest.failed_key)


def render_failure(entry: Entry) -> str:
    """Return one failure as a line: source, attempts and reason."""
    return f"{entry.source or '(no source)'} after {entry.attempts} attempt(s): {entry.reason}"
