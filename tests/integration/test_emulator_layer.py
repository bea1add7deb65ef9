"""One emulator layer: an emulator already running is used as it is; else one is started.

``invoke local --endpoint``, ``invoke chaos --endpoint``, ``invoke test-local`` and these
fixtures all decide through :func:`batchspot.emulators.emulator_at`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchspot.emulators import Emulator, EmulatorError, emulator_at, free_port, running_emulator


def test_a_running_emulator_is_used_and_named_by_what_it_is(
    emulator: Emulator, tmp_path: Path
) -> None:
    other = "moto" if emulator.name == "localstack" else "localstack"
    with emulator_at(emulator.endpoint + "/", tmp_path, other) as used:
        assert used == emulator
    assert not any(tmp_path.iterdir()), "nothing should have been started"


def test_an_endpoint_where_nothing_answers_is_refused_in_one_sentence(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    refused = pytest.raises(EmulatorError, match=f"^no AWS emulator answers at {endpoint}$")
    with refused, emulator_at(endpoint, tmp_path):
        pass
    assert not any(tmp_path.iterdir()), "nothing should have been started"


def test_a_guessed_endpoint_where_nothing_answers_gets_one_started_for_the_block(
    tmp_path: Path,
) -> None:
    guessed = f"http://127.0.0.1:{free_port()}"
    with emulator_at(guessed, tmp_path, "moto", start_if_absent=True) as started:
        assert started.name == "moto" and started.endpoint != guessed
        assert running_emulator(started.endpoint) == started
        assert "QueueUrls" not in started.client("sqs").list_queues()
    assert running_emulator(started.endpoint) is None
