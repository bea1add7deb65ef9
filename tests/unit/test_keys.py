"""Output keys: deterministic per source version, distinct for anything that differs."""

from __future__ import annotations

from worker.keys import derive_output_key


def test_same_source_version_same_key_whatever_the_quotes() -> None:
    first = derive_output_key("results/", "in", "trip data/a.csv", '"abc"')
    assert first == derive_output_key("results/", "in", "trip data/a.csv", "abc")
    assert first.startswith("results/in/trip data/a.csv.") and first.endswith(".json")


def test_new_version_or_own_query_gets_its_own_key() -> None:
    base = derive_output_key("r/", "in", "a.csv", "v1")
    assert derive_output_key("r/", "in", "a.csv", "v2") != base
    assert derive_output_key("r/", "in", "a.csv", "v1", "SELECT s._1 FROM S3Object s") != base
    assert derive_output_key("r/", "other", "a.csv", "v1") != base
