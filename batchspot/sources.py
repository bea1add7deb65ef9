"""Where a seed's sources come from: S3 listings, one paginator or many at once.

ListObjectsV2 returns 1,000 keys a call and its pages are sequential within a prefix, so one
paginator over ten million keys is ten thousand calls one after another. Listing each common
prefix (``Delimiter``) with its own paginator runs them side by side.
:func:`interleave` is how such concurrent producers (paginators here, inventory files in
``batchspot.inventory``) are read as one stream while memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")

CHUNK = 1000  # items a producer hands over at once: one queue operation per page, not per key
QUEUED_CHUNKS_PER_PRODUCER = 4  # how far producers may run ahead of the sender, in chunks
DELIMITER = "/"
FAN_OUT_DEPTH = 3  # levels of common prefixes explored to find enough to list side by side


@dataclass(frozen=True)
class Source:
    """One source object version, as listed."""

    bucket: str
    key: str
    etag: str


# Turns one ordered stream of sources (a paginator's, an inventory file's, a saved listing)
# into groups, each a sized collection (``len``: the sources it holds). Applied per stream, so
# the groups depend on each stream's own order, never on how concurrent streams interleave:
# the same listing makes the same groups (``batchspot.batching``).
Group = Callable[[Iterator[Source]], Iterator[Any]]


def wanted(key: str, size: int, prefix: str, suffix: str) -> bool:
    """Whether a listed object is a source: under ``prefix``, ending in ``suffix``, not a folder.

    Zero-byte keys ending in ``/`` are the console's folder markers, not data.
    """
    return key.startswith(prefix) and key.endswith(suffix) and not (key.endswith("/") and size == 0)


class _Finished:
    """Marks a producer's end in the shared queue, with the error that ended it if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def interleave(
    producers: Iterable[Callable[[], Iterable[T]]], workers: int, grouped: bool = False
) -> Iterator[T]:
    """Yield every item of every producer, running up to ``workers`` producers at once.

    Producers hand over chunks through a bounded queue, so at most about
    ``workers * QUEUED_CHUNKS_PER_PRODUCER * CHUNK`` sources wait in memory whatever their
    total; ``grouped`` items are sized groups of sources (:data:`Group`), weighed by ``len``.
    The first producer error is raised here; closing this generator early (``max_count``
    reached) stops the producers at their next chunk.
    """
    producers = list(producers)
    if not producers:
        return
    chunks: queue.Queue[list[T] | _Finished] = queue.Queue(
        maxsize=max(1, workers) * QUEUED_CHUNKS_PER_PRODUCER
    )
    stop = threading.Event()

    def hand_over(item: list[T] | _Finished) -> None:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def run(produce: Callable[[], Iterable[T]]) -> None:
        if stop.is_set():
            return
        try:
            chunk: list[T] = []
            held = 0
            for item in produce():
                chunk.append(item)
                held += len(item) if grouped else 1  # type: ignore[arg-type]
                if held >= CHUNK:
                    hand_over(chunk)
                    chunk, held = [], 0
                    if stop.is_set():
                        return
            if chunk:
                hand_over(chunk)
            hand_over(_Finished())
        except Exception as error:  # handed to the consumer, which raises it
            hand_over(_Finished(error))

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="source")
    try:
        for produce in producers:
            pool.submit(run, produce)
        running = len(producers)
        while running:
            got = chunks.get()
            if isinstance(got, _Finished):
                running -= 1
                if got.error is not None:
                    raise got.error
                continue
            yield from got
    finally:
        stop.set()  # producers blocked on a full queue give up at once
        pool.shutdown(wait=True, cancel_futures=True)


def list_sources(s3: Any, bucket: str, prefix: str = "", suffix: str = "") -> Iterator[Source]:
    """Yield the objects under ``prefix`` whose key ends in ``suffix``, page by page."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if wanted(item["Key"], item["Size"], prefix, suffix):
                yield Source(bucket, item["Key"], item["ETag"])


def _one_level(
    s3: Any, bucket: str, prefix: str, suffix: str, common: list[str]
) -> Iterator[Source]:
    """Yield the sources directly under ``prefix`` and append its common prefixes to ``common``."""
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, Delimiter=DELIMITER
    )
    for page in pages:
        for item in page.get("Contents", []):
            if wanted(item["Key"], item["Size"], prefix, suffix):
                yield Source(bucket, item["Key"], item["ETag"])
        common.extend(entry["Prefix"] for entry in page.get("CommonPrefixes", []))


def list_sources_parallel(
    s3: Any,
    bucket: str,
    prefix: str = "",
    suffix: str = "",
    paginators: int = 8,
    group: Group | None = None,
) -> Iterator[Any]:
    """Yield the same sources as :func:`list_sources`, listing ``paginators`` prefixes at once.

    The common prefixes under ``prefix`` are found level by level (``Delimiter="/"``, up to
    ``FAN_OUT_DEPTH`` levels, stopping once there are ``paginators`` of them); each is then
    listed whole by its own paginator. A bucket without ``/`` in its keys has no common
    prefix and is listed by one paginator, as before. Each key is listed exactly once: the
    objects met while descending are yielded there, and the subtrees are disjoint.

    ``group`` (see :data:`Group`), if given, is applied to each paginator's own stream, and
    its groups are yielded instead of the sources.
    """
    lane: Group = group or iter
    frontier = [prefix]
    for _ in range(FAN_OUT_DEPTH):
        if len(frontier) >= paginators:
            break
        deeper: list[str] = []
        for level in frontier:
            yield from lane(_one_level(s3, bucket, level, suffix, deeper))
        frontier = deeper
        if not frontier:
            return
    yield from interleave_streams(
        (partial(list_sources, s3, bucket, subtree, suffix) for subtree in frontier),
        paginators,
        group,
    )


def interleave_streams(
    streams: Iterable[Callable[[], Iterator[Source]]], workers: int, group: Group | None
) -> Iterator[Any]:
    """Yield the sources of every ordered stream, up to ``workers`` streams read at once.

    A stream is a paginator's or an inventory file's. With ``group``, each stream is grouped on
    its own and its groups are yielded instead, so a group never mixes two streams
    (``batchspot.batching``).
    """
    lane: Group = group or iter
    return interleave(
        (lambda stream=stream: lane(stream()) for stream in streams),
        workers,
        grouped=group is not None,
    )
