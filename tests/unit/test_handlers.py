"""Custom code behind one interface: what it returns, and how each way of failing reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from worker.config import ConfigError
from worker.handlers import CommandHandler, HandlerError, PythonHandler, RowsToJson


def stored(output) -> object:
    return json.loads(b"".join(output.chunks()))


def test_rows_to_json_stores_json_lines_as_one_array() -> None:
    rows = '{"a":"1"}\n{"a":"2"}\n'
    assert stored(RowsToJson("json")(rows)) == [{"a": "1"}, {"a": "2"}]
    assert stored(RowsToJson("json")("")) == []


def test_rows_to_json_turns_csv_records_into_arrays() -> None:
    assert stored(RowsToJson("csv")('1,"x, y"\n2,"multi\nline"\n')) == [
        ["1", "x, y"],
        ["2", "multi\nline"],
    ]


def test_python_handler_result_is_encoded_lazily_in_chunks() -> None:
    handler = PythonHandler("json:loads", timeout=5)
    big = json.dumps({"values": list(range(400_000))})
    chunks = list(handler(big).chunks())
    assert len(chunks) > 1
    assert json.loads(b"".join(chunks)) == {"values": list(range(400_000))}


def test_python_handler_errors_name_the_exception() -> None:
    with pytest.raises(HandlerError, match="custom code raised JSONDecodeError"):
        PythonHandler("json:loads", timeout=5)("not json")


def test_non_json_return_value_fails_the_item() -> None:
    output = PythonHandler("builtins:set", timeout=5)("abc")
    with pytest.raises(HandlerError, match="not JSON"):
        b"".join(output.chunks())


def test_python_handler_past_its_timeout_is_abandoned() -> None:
    handler = PythonHandler("time:sleep", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(HandlerError, match=r"HANDLER_TIMEOUT=0\.2"):
        handler(2)  # type: ignore[arg-type]
    assert time.monotonic() - started < 1
    assert handler.abandoned == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [("no_such_module_x:run", "cannot import no_such_module_x"), ("json:nothing", "no callable")],
)
def test_bad_handler_setting_is_a_configuration_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PythonHandler(spec, timeout=1)


def test_command_gets_rows_on_stdin_and_its_stdout_is_stored() -> None:
    handler = CommandHandler(
        """sh -c 'wc -l | awk "{print \\"{\\\\\\"lines\\\\\\": \\" \\$1 \\"}\\"}"'""", 5
    )
    assert stored(handler("a\nb\nc\n")) == {"lines": 3}


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("echo broken >&2; exit 4", "exited with 4; stderr: broken"),
        ("echo '{\"a\": 1'", "not JSON"),
        ("echo '{\"a\": 1} trailing'", "not JSON"),
        ("true", "printed nothing"),
    ],
)
def test_command_failures_carry_the_reason(tmp_path: Path, script: str, message: str) -> None:
    path = tmp_path / "job.sh"
    path.write_text(f"cat >/dev/null\n{script}\n")
    with pytest.raises(HandlerError, match=message):
        CommandHandler(f"sh {path}", timeout=5)("rows")


def test_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    path = tmp_path / "job.sh"
    path.write_text(f"sleep 30 &\necho $! > {pid_file}\nwait\n")
    started = time.monotonic()
    with pytest.raises(HandlerError, match="killed its process group"):
        CommandHandler(f"sh {path}", timeout=0.5)("")
    assert time.monotonic() - started < 5
    child = int(pid_file.read_text())
    time.sleep(0.1)
    status = Path(f"/proc/{child}/status")
    assert not status.exists() or "State:\tZ" in status.read_text(), "the child outlived it"


def test_missing_executable_fails_the_item_not_the_worker() -> None:
    with pytest.raises(HandlerError, match="could not start"):
        CommandHandler("/no/such/program", timeout=1)("")


def test_unparseable_command_line_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="cannot be parsed"):
        CommandHandler("sh -c 'unterminated", timeout=1)
