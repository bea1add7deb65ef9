"""Lists longer than an AWS call takes go out in slices: every item once, in order."""

from __future__ import annotations

from worker.limits import MAX_BATCH_ENTRIES, chunked


def test_every_item_goes_once_in_order_in_slices_of_at_most_the_limit() -> None:
    items = [f"message {i}" for i in range(25)]
    slices = list(chunked(items, MAX_BATCH_ENTRIES))
    assert [len(part) for part in slices] == [10, 10, 5]
    assert [item for part in slices for item in part] == items


def test_a_list_that_fits_is_one_call_and_nothing_is_no_call() -> None:
    assert list(chunked(["a", "b"], MAX_BATCH_ENTRIES)) == [["a", "b"]]
    assert list(chunked([], MAX_BATCH_ENTRIES)) == []
