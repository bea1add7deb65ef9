"""The tasks' options as ``invoke <task> --help`` lists them: one name per concept, typed."""

from __future__ import annotations

import pytest
from invoke import Collection

import tasks

JOB_TASKS = ("status", "logs", "results", "cost", "doctor")


@pytest.fixture(scope="module")
def flag_specs() -> dict[str, dict[str, str]]:
    """{task: {long option: its flag spec as --help prints it}}, from invoke's own help code."""
    specs: dict[str, dict[str, str]] = {}
    for context in Collection.from_module(tasks).to_contexts():
        specs[context.name] = {
            spec.split(", ")[-1].split("=")[0]: spec for spec, _ in context.help_tuples()
        }
    return specs


def test_every_task_that_names_a_job_calls_the_option_job_id(flag_specs):
    for name in JOB_TASKS:
        assert "--job-id" in flag_specs[name], name
        assert "--job" not in flag_specs[name], name


@pytest.mark.parametrize(
    ("task", "option"),
    [
        ("cost", "--seconds"),
        ("cost", "--spot-price"),
        ("cost", "--ondemand-price"),
        ("submit", "--tolerate-failures"),
        ("status", "--interval"),
        ("chaos", "--interval"),
    ],
)
def test_number_options_show_that_they_take_a_value(flag_specs, task, option):
    assert flag_specs[task][option].endswith(f"{option}=FLOAT"), flag_specs[task][option]


def test_yes_no_options_still_read_as_flags(flag_specs):
    assert flag_specs["cost"]["--refresh-prices"] == "-r, --refresh-prices"
