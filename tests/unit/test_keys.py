"""Output keys: deterministic per source version, distinct for anything that differs."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from worker.config import Config
from worker.keys import (
    DEFAULT_RECIPE,
    check_output_key,
    derive_batch_key,
    derive_output_key,
    fingerprint,
    output_key_prefix,
)
from worker.messages import WorkItem, parse_input_format


def test_same_source_version_same_key_whatever_the_quotes() -> None:
    first = derive_output_key("results/", "in", "trip data/a.csv", '"abc"')
    assert first == derive_output_key("results/", "in", "trip data/a.csv", "abc")
    assert first.startswith("results/in/trip data/a.csv.") and first.endswith(".json")


def test_new_version_or_own_query_gets_its_own_key() -> None:
    base = derive_output_key("r/", "in", "a.csv", "v1")
    assert derive_output_key("r/", "in", "a.csv", "v2") != base
    own_query = DEFAULT_RECIPE.for_message("SELECT s._1 FROM S3Object s", None)
    assert derive_output_key("r/", "in", "a.csv", "v1", own_query) != base
    assert derive_output_key("r/", "other", "a.csv", "v1") != base


@pytest.mark.parametrize(
    "changed",
    [
        {"query_limit": 5},
        {"rows_format": "csv"},
        {"code_version": "repo@sha256:1234"},
        {"handler_command": "python3 count.py"},
    ],
)
def test_any_setting_that_changes_the_result_changes_the_key(changed) -> None:
    before = Config(queue_url="q", output_bucket="out")
    after = replace(before, **changed)
    assert derive_output_key("r/", "in", "a.csv", "v1", before.recipe) != derive_output_key(
        "r/", "in", "a.csv", "v1", after.recipe
    )


def test_a_message_input_serialization_changes_the_key() -> None:
    semicolons = parse_input_format({"delimiter": ";"}, "a.csv")
    recipe = DEFAULT_RECIPE.for_message(None, semicolons)
    assert derive_output_key("r/", "in", "a.csv", "v1", recipe) != derive_output_key(
        "r/", "in", "a.csv", "v1"
    )


def test_the_same_result_gets_the_same_key_however_it_was_asked_for() -> None:
    """A LIMIT in the setting or in the message, a defaulted or explicit input: one result."""
    limited = Config(queue_url="q", output_bucket="out", query_limit=5).recipe
    spelled_out = DEFAULT_RECIPE.for_message(
        "SELECT * FROM S3Object s LIMIT 5", parse_input_format(None, "a.csv")
    )
    assert derive_output_key("r/", "in", "a.csv", "v1", limited) == derive_output_key(
        "r/", "in", "a.csv", "v1", spelled_out
    )
    assert Config(queue_url="q", output_bucket="out").recipe == DEFAULT_RECIPE


# S3 keys are at most 1,024 bytes of UTF-8, prefix included ("Naming Amazon S3 objects",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html).
HEAD = "results/in/"
SUFFIX_BYTES = len(".0123456789abcdef.json")
ROOM = 1024 - len(HEAD) - SUFFIX_BYTES  # bytes left for the source key: 991


def readable_start(output_key: str) -> str:
    """The part of a shortened output key taken from its source key."""
    return output_key[len(HEAD) : -SUFFIX_BYTES].rsplit("-", 1)[0]


@pytest.mark.parametrize("key", ["k" * ROOM, "é" * 495 + "k", "🙂" * 247 + "abc"])
def test_a_key_of_exactly_1024_bytes_is_kept_whole(key):
    assert len(key.encode()) == ROOM
    output = derive_output_key("results/", "in", key, "v1")
    assert len(output.encode()) == 1024
    assert output == f"{HEAD}{key}.{fingerprint('v1', key)}.json"


@pytest.mark.parametrize(
    "key",
    [
        "k" * (ROOM + 1),  # 1,025 bytes in all
        "k" + "é" * 496,  # the cut falls inside an "é"
        "abc" + "🙂" * 250,  # the cut falls inside an emoji
        "🙂" * 256,  # S3's longest source key: 1,024 bytes
    ],
)
def test_a_longer_key_is_shortened_to_1024_bytes_between_characters(key):
    output = derive_output_key("results/", "in", key, "v1")
    assert len(output.encode()) <= 1024
    assert output.startswith(HEAD) and output.endswith(f".{fingerprint('v1', key)}.json")
    start = readable_start(output)
    assert key.startswith(start) and len(start.encode()) >= ROOM - 20
    assert output == derive_output_key("results/", "in", key, '"v1"'), "deterministic"


def test_long_keys_that_differ_only_at_the_end_get_different_outputs():
    first = derive_output_key("results/", "in", "é" * 511 + "1", "v1")
    second = derive_output_key("results/", "in", "é" * 511 + "2", "v1")
    assert first != second


def test_an_output_prefix_that_leaves_no_room_is_refused():
    prefix = "p" * 990  # leaves 9 bytes for the source key: "a" fits, "a" * 100 cannot
    assert derive_output_key(prefix, "in", "a", "v1").startswith(prefix)
    with pytest.raises(ValueError, match="use a shorter output prefix"):
        derive_output_key(prefix, "in", "a" * 100, "v1")


@pytest.mark.parametrize("source_prefix", ["", "data/", "d/" + "é" * 600])
def test_output_key_prefix_starts_every_output_key_under_the_source_prefix(source_prefix):
    listing = output_key_prefix("results/", "in", source_prefix)
    for rest in ("a.csv", "🙂" * 100, "x" * 2000):
        key = (source_prefix + rest).encode()[:1024].decode(errors="ignore")
        assert derive_output_key("results/", "in", key, "v1").startswith(listing)
    assert listing.startswith(HEAD)


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("elsewhere/out.json", "under OUTPUT_PREFIX"),
        ("/results/out.json", "under OUTPUT_PREFIX"),
        ("results/../secrets/out.json", "'..' segment"),
        ("results/a/..", "'..' segment"),
        ("results/line\nbreak.json", "control characters"),
        ("results/bell\x07.json", "control characters"),
        ("results/" + "k" * 1017, "at most 1024"),
        ("results/in/a.csv.0123456789abcdef.json", "derived result key"),
        ("results/.runs/job-1/0123456789abcdef.json", "the runs' records"),
    ],
)
def test_a_messages_output_key_is_refused_unless_safe(key: str, rule: str) -> None:
    with pytest.raises(ValueError, match=re.escape(rule)):
        check_output_key(key, "results/")


def test_safe_output_keys_pass_including_a_leading_slash_rule_without_prefix() -> None:
    check_output_key("results/team a/report..v2.json", "results/")
    check_output_key("results/" + "k" * 1016, "results/")
    with pytest.raises(ValueError, match="must not start with '/'"):
        check_output_key("/abs.json", "")


def test_batch_key_follows_every_source_version_not_the_order() -> None:
    def item(key: str, etag: str) -> WorkItem:
        return WorkItem("in", key, parse_input_format(None, key), etag=etag)

    batch = [item("a.csv", "v1"), item("b.csv", "v1")]
    key = derive_batch_key("results/", batch)
    assert key.startswith("results/.batches/") and key.endswith(".jsonl")
    assert derive_batch_key("results/", batch[::-1]) == key, "the order sources came in"
    assert derive_batch_key("results/", [batch[0], item("b.csv", '"v1"')]) == key
    assert derive_batch_key("results/", [batch[0], item("b.csv", "v2")]) != key
    assert derive_batch_key("results/", batch[:1]) != key
    own_query = DEFAULT_RECIPE.for_message("SELECT s._1 FROM S3Object s", None)
    assert derive_batch_key("results/", batch, own_query) != key


def test_message_cannot_write_among_batch_results() -> None:
    with pytest.raises(ValueError, match="batch results"):
        check_output_key("results/.batches/mine.jsonl", "results/")
