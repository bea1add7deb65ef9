"""Custom code behind one interface: what it returns, and how each way of failing reads."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from worker import handlers
from worker.config import ConfigError
from worker.handlers import CommandHandler, HandlerError, PythonHandler, RowsToJson

GIB = 1024**3
# A Python handler that sleeps for as many seconds as its rows say.
SLEEP = f"{__name__}:sleep_for"


def sleep_for(rows: str) -> None:
    time.sleep(float(rows))


def stored(output) -> object:
    return json.loads(b"".join(output.chunks()))


def command(line: str, timeout: float = 5, max_output_bytes: int = GIB) -> CommandHandler:
    return CommandHandler(line, timeout, max_output_bytes=max_output_bytes)


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
    handler = PythonHandler(SLEEP, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(HandlerError, match=r"HANDLER_TIMEOUT=0\.2"):
        handler("2")
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
    handler = command("""sh -c 'wc -l | awk "{print \\"{\\\\\\"lines\\\\\\": \\" \\$1 \\"}\\"}"'""")
    assert stored(handler("a\nb\nc\n")) == {"lines": 3}


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("echo broken >&2; exit 4", "exited with 4; stderr: broken"),
        ("echo '{\"a\": 1'", "not JSON"),
        ("echo '{\"a\": 1} trailing'", "not one JSON document"),
        ("true", "printed nothing"),
    ],
)
def test_command_failures_carry_the_reason(tmp_path: Path, script: str, message: str) -> None:
    path = tmp_path / "job.sh"
    path.write_text(f"cat >/dev/null\n{script}\n")
    with pytest.raises(HandlerError, match=message):
        command(f"sh {path}")("rows")


def test_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    path = tmp_path / "job.sh"
    path.write_text(f"sleep 30 &\necho $! > {pid_file}\nwait\n")
    started = time.monotonic()
    with pytest.raises(HandlerError, match="killed its process group"):
        command(f"sh {path}", timeout=0.5)("")
    assert time.monotonic() - started < 5
    child = int(pid_file.read_text())
    time.sleep(0.1)
    status = Path(f"/proc/{child}/status")
    assert not status.exists() or "State:\tZ" in status.read_text(), "the child outlived it"


def test_missing_executable_fails_the_item_not_the_worker() -> None:
    with pytest.raises(HandlerError, match="could not start"):
        command("/no/such/program")("")


def test_unparseable_command_line_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="cannot be parsed"):
        command("sh -c 'unterminated")


# --- A deadline per call -------------------------------------------------------------------


def test_python_handler_stops_at_the_items_deadline_before_its_timeout() -> None:
    handler = PythonHandler(SLEEP, timeout=60)
    started = time.monotonic()
    with pytest.raises(HandlerError, match="passed the item's deadline"):
        handler("5", deadline=started + 0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert handler.abandoned == 1


def test_command_stops_at_the_items_deadline_before_its_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(HandlerError, match=r"passed the item's deadline.*killed its process group"):
        command(f"sh -c 'echo $$ > {pid_file}; sleep 30'", timeout=60)("", started + 0.5)
    assert 0.5 <= time.monotonic() - started < 2.5
    assert not alive(int(pid_file.read_text()))


def test_the_nearer_of_timeout_and_deadline_applies() -> None:
    with pytest.raises(HandlerError, match=r"HANDLER_TIMEOUT=0\.3"):
        command("sleep 30", timeout=0.3)("", time.monotonic() + 60)
    with pytest.raises(HandlerError, match=r"HANDLER_TIMEOUT=0\.3"):
        PythonHandler(SLEEP, timeout=0.3)("5", time.monotonic() + 60)


def test_nothing_starts_once_the_deadline_has_passed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    past = time.monotonic() - 1
    with pytest.raises(HandlerError, match="deadline before it started"):
        command(f"touch {marker}")("", past)
    with pytest.raises(HandlerError, match="deadline before it started"):
        PythonHandler("json:loads", timeout=5)("{}", past)
    assert not marker.exists()


# --- Nothing a command starts outlives its call --------------------------------------------


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie is dead, it only waits for its parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.parametrize("status", [0, 3])
def test_a_background_child_is_dead_when_the_call_returns(tmp_path: Path, status: int) -> None:
    pid_file = tmp_path / "child.pid"
    handler = command(f"sh -c 'sleep 30 & echo $! > {pid_file}; echo {{}}; exit {status}'")
    if status:
        with pytest.raises(HandlerError, match="exited with 3"):
            handler("")
    else:
        assert stored(handler("")) == {}
    assert not alive(int(pid_file.read_text())), "the child outlived the call"


def test_a_daemon_that_left_the_process_group_is_dead_when_the_call_returns(
    tmp_path: Path,
) -> None:
    """``setsid`` takes it out of the group; the run id in its environment still finds it."""
    pid_file = tmp_path / "daemon.pid"
    daemon = f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 30' </dev/null >/dev/null 2>&1 &"
    wait = f"while [ ! -s {pid_file} ]; do sleep 0.01; done"
    handler = command(f'sh -c "{daemon} {wait}; echo {{}}"')
    assert stored(handler("")) == {}
    assert not alive(int(pid_file.read_text())), "the setsid grandchild outlived the call"


def test_a_grandchild_that_escapes_cannot_add_to_the_stored_result(tmp_path: Path) -> None:
    """``setsid env -i`` drops both the group and the run id: it lives, but writes nowhere.

    The worker reads stdout itself and closes the pipe once the call is over, so the late
    writes meet EPIPE (the loop's shell dies of SIGPIPE), and the validated result stays as it
    was. Nothing else ends the loop.
    """
    pid_file = tmp_path / "escaped.pid"
    loop = "sleep 1.5; while echo garbage; do sleep 0.01; done"
    escaped = f"setsid env -i sh -c 'echo $$ > {pid_file}; {loop}' &"
    wait = f"while [ ! -s {pid_file} ]; do sleep 0.01; done"
    output = command(f'sh -c "{escaped} {wait}; echo {{}}"')("")
    pid = int(pid_file.read_text())
    try:
        assert alive(pid), "expected to escape the kill: it left the group and cleared the run id"
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "its write should have met a closed pipe"
        assert stored(output) == {}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_kill_all_ends_a_running_command_and_its_daemon(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    handler = command(f"sh -c 'setsid sleep 30 & echo $! > {pid_file}; wait'", timeout=30)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(errors, handler, ""))
    thread.start()
    while not pid_file.exists() or not pid_file.read_text().strip():
        time.sleep(0.01)
    handler.kill_all()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and "exited with -9" in str(errors[0])
    assert not alive(int(pid_file.read_text()))


def test_a_command_starting_as_kill_all_lands_is_ended_too() -> None:
    """kill_all may land between a command's start and its registration (a race seen in CI)."""
    handler = command("sleep 30", timeout=60)
    handler.kill_all()
    with pytest.raises(HandlerError, match="exited with -9"):
        handler("")


def _capture(errors: list[BaseException], handler: CommandHandler, rows: str) -> None:
    try:
        handler(rows)
    except HandlerError as error:
        errors.append(error)


# --- Only one validated JSON document is stored --------------------------------------------


@pytest.mark.parametrize(
    "printed", ['{"a":1} trailing', '{"a":1}{"b":2}', "1 2", "[1]]", '"x"y', '{"a":1}\n{"b":2}']
)
def test_output_going_on_after_the_document_is_refused(printed: str) -> None:
    with pytest.raises(HandlerError, match="output is not one JSON document"):
        command(f"printf '{printed}'")("")


def test_whitespace_after_the_document_is_fine() -> None:
    assert stored(command(r"""printf '{"a":1}\n\n \t\r\n'""")("")) == {"a": 1}


def test_a_parse_error_does_not_quote_the_output() -> None:
    with pytest.raises(HandlerError, match="not JSON") as caught:
        command("echo 'not json: secret-value'")("")
    assert "secret-value" not in str(caught.value)


def test_deeply_nested_output_is_validated_in_little_memory() -> None:
    """``ijson.parse`` builds each event's path: 20 KB nested 10,000 deep took 250 MB."""
    depth = 10_000
    script = f"import sys; sys.stdout.write('[' * {depth} + ']' * {depth})"
    measured = _peak_rss_reset()
    before = _peak_rss_bytes()
    output = command(f'{sys.executable} -c "{script}"')("")
    assert next(iter(output.chunks())).startswith(b"[[[")
    if measured:
        assert _peak_rss_bytes() - before < 32 * 1024**2


# --- Bounded spools ------------------------------------------------------------------------


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[IO[bytes]]:
    """Every temporary file the handlers create, to measure what reached the disk."""
    created: list[IO[bytes]] = []
    real = tempfile.TemporaryFile

    def recorded(*args: Any, **kwargs: Any) -> IO[bytes]:
        file = real(*args, **kwargs)
        created.append(file)
        return file

    monkeypatch.setattr(handlers.tempfile, "TemporaryFile", recorded)
    return created


def _size(file: IO[bytes]) -> int:
    return os.fstat(file.fileno()).st_size


def _peak_rss_reset() -> bool:
    """Reset VmHWM, the peak RSS, so that it measures what follows (Linux 4.0 and later)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [0, 3])
def test_100_mb_of_stderr_costs_neither_disk_nor_memory(
    spools: list[IO[bytes]], status: int
) -> None:
    noisy = command(
        f"sh -c 'head -c 100000000 /dev/zero | tr \"\\0\" e >&2; echo {{}}; exit {status}'",
        timeout=60,
    )
    measured = _peak_rss_reset()
    before = _peak_rss_bytes()
    if status:
        with pytest.raises(HandlerError, match="exited with 3; stderr: eee") as caught:
            noisy("")
        assert len(str(caught.value)) <= handlers.STDERR_TAIL_BYTES + 100
    else:
        output = noisy("")
        assert [_size(file) for file in spools] == [3], "only stdout is spooled"
        assert stored(output) == {}
    if measured:
        assert _peak_rss_bytes() - before < 20 * 1024**2


def test_output_past_max_output_bytes_is_refused_without_spooling_more(
    spools: list[IO[bytes]],
) -> None:
    limit = 1024**2
    started = time.monotonic()
    with pytest.raises(HandlerError, match=f"exceeds MAX_OUTPUT_BYTES={limit}; killed"):
        command("cat /dev/zero", timeout=30, max_output_bytes=limit)("")
    assert time.monotonic() - started < 5, "it should stop at the limit, not at the timeout"
    assert len(spools) == 1 and spools[0].closed


def test_output_of_exactly_max_output_bytes_is_stored() -> None:
    output = command("printf '[1,2]'", max_output_bytes=5)("")
    assert stored(output) == [1, 2]
    with pytest.raises(HandlerError, match="exceeds MAX_OUTPUT_BYTES=4"):
        command("printf '[1,2]'", max_output_bytes=4)("")


def test_the_spool_never_holds_more_than_the_limit(
    spools: list[IO[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real_close = handlers._Pipes.close

    def close_and_measure(self: handlers._Pipes) -> None:
        sizes.append(_size(self._spool))
        real_close(self)

    monkeypatch.setattr(handlers._Pipes, "close", close_and_measure)
    with pytest.raises(HandlerError, match="MAX_OUTPUT_BYTES"):
        command("cat /dev/zero", max_output_bytes=100_000)("")
    assert 0 < sizes[0] <= 100_000


def test_large_rows_in_and_output_out_flow_at_once() -> None:
    """Neither pipe may fill and stall the command while the other is being served."""
    rows = "x" * 30_000_000
    output = command("""sh -c 'printf "[\\""; cat; printf "\\"]"'""", timeout=60)(rows)
    assert stored(output) == [rows]


def test_a_command_that_ignores_its_rows_is_fine() -> None:
    assert stored(command("echo {}")("x" * 10_000_000)) == {}


def test_invalid_utf8_on_stderr_is_decoded_safely() -> None:
    with pytest.raises(HandlerError, match="exited with 3; stderr: \ufffd"):
        command(r"""sh -c 'printf "\377\376 broken" >&2; exit 3'""")("")


# --- Error messages carry no record values -------------------------------------------------


def test_a_python_exception_quoting_the_rows_is_cut_short() -> None:
    """The message of ``import_module("xx...")`` holds its whole argument, here the rows."""
    with pytest.raises(HandlerError, match="custom code raised ModuleNotFoundError: No mod") as e:
        PythonHandler("importlib:import_module", timeout=5)("x" * 1_000_000)
    assert len(str(e.value)) < handlers.ERROR_TEXT_BYTES + 100
    assert "[truncated" in str(e.value)


@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_no_descriptor_outlives_a_call_however_it_ends() -> None:
    """Each spool and pipe is closed by the handler, not left to the garbage collector."""

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    calls = [
        command("echo {}"),
        command("sh -c 'echo nope; exit 2'"),
        command("echo 'not json'"),
        command("sleep 5", timeout=0.1),
        command("cat /dev/zero", max_output_bytes=10),
        command("/no/such/program"),
    ]
    before = open_descriptors()
    for handler in calls:
        with contextlib.suppress(HandlerError):
            b"".join(handler("rows").chunks())
    assert open_descriptors() == before


RELEASE = threading.Event()


def wait_for_release(rows: str) -> None:
    RELEASE.wait(30)


def test_an_abandoned_call_that_returns_late_no_longer_counts() -> None:
    """Exit 3 means every thread is still held: four timeouts hours apart must not add up."""
    handler = PythonHandler(f"{__name__}:wait_for_release", timeout=0.1)
    with pytest.raises(HandlerError):
        handler("")
    assert handler.abandoned == 1
    RELEASE.set()
    deadline = time.monotonic() + 10
    while handler.abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handler.abandoned == 0
