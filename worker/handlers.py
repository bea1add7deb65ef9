"""The custom code, plugged in one of three ways, behind one interface.

* ``HANDLER=package.module:function``: a Python callable taking the rows as ``str`` and
  returning a JSON-serialisable value;
* ``HANDLER_COMMAND="dotnet Job.dll"``: any executable, rows on stdin, JSON on stdout, so a
  .NET, Java or Go program is wrapped without being rewritten;
* neither: the built-in ``rows-to-json``, which stores the rows as one JSON array, as the
  original worker did.

The rows arrive as a stream of text chunks, produced by the query as they are pulled. A
command reads them on stdin as they come and ``rows-to-json`` turns them into the array as it
is uploaded, so neither holds the whole result; only a Python callable, whose interface is one
``str``, gets them joined, capped at :data:`worker.query.MAX_RESULT_BYTES`.

Each returns a :class:`HandlerOutput`, a stream of JSON bytes, so that a large result is
uploaded part by part and never held twice in memory.

A call may take ``HANDLER_TIMEOUT``, or less when the item's deadline is nearer. A command
can hold neither the worker's disk nor its memory (its stdout spool stops at
``MAX_OUTPUT_BYTES``, only a short tail of its stderr is kept), and nothing it starts
outlives its call (see :func:`_end_run`).
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import os
import selectors
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import ijson

from worker.config import Config, ConfigError
from worker.logs import brief, log
from worker.query import join_capped

CHUNK_BYTES = 1024 * 1024
# What one read of a pipe takes: a Linux pipe holds 64 KiB by default.
PIPE_READ_BYTES = 64 * 1024
# What the validator reads at a time. yajl re-reads a string token from its start at each new
# read, so one long string costs time quadratic in its length over this size: 256 KiB
# validates a 100 MB string in about 6 s (64 KiB: 28 s) for 4 MiB more peak memory.
VALIDATE_READ_BYTES = 256 * 1024
# The end of a command's stderr kept for the failure's reason; the rest is read and dropped.
STDERR_TAIL_BYTES = 2000
# Of a Python handler's exception message, which may quote the rows it was given.
ERROR_TEXT_BYTES = 300
# Set, with a value unique to the call, in the environment of each command: what the command
# starts inherits it, so they can be found and killed even after leaving its process group.
RUN_VARIABLE = "BATCHSPOT_RUN"
# How often a command's exit is checked while a child it left behind holds its pipes open.
EXIT_POLL_SECONDS = 0.05
# After the exit and the kill, how long the pipes may take to deliver their last bytes; only
# a process that escaped the kill (see _end_run) can keep them open this long.
DRAIN_SECONDS = 1.0
# How long processes killed with SIGKILL may take to die before a warning says which did not.
KILL_WAIT_SECONDS = 1.0

Ending = Literal["exited", "late", "too-large"]
# An item's rows: the query's chunks as they are produced, or (in tests, for one) a string.
Rows = str | Iterable[str]


class HandlerError(Exception):
    """The custom code failed on this item: raised, timed out, or returned something unusable."""


class HandlerOutput(Protocol):
    """JSON bytes produced by the custom code, read once, in chunks."""

    def chunks(self) -> Iterator[bytes]:
        """Yield the JSON document in pieces."""
        ...


class Handler(Protocol):
    """Custom code: rows in, JSON out."""

    name: str

    def __call__(self, rows: Rows, deadline: float | None = None) -> HandlerOutput:
        """Run the custom code on one item's rows, by ``deadline`` (a ``time.monotonic()``)."""
        ...


class JsonValue:
    """A Python value, encoded lazily so the encoded form is never held whole."""

    def __init__(self, value: Any) -> None:
        """Keep the value; encoding happens while uploading."""
        self._value = value

    def chunks(self) -> Iterator[bytes]:
        """Yield the encoding in chunks of about ``CHUNK_BYTES``."""
        buffer = io.StringIO()
        size = 0
        try:
            for piece in json.JSONEncoder(ensure_ascii=False, allow_nan=False).iterencode(
                self._value
            ):
                buffer.write(piece)
                size += len(piece)
                if size >= CHUNK_BYTES:
                    yield buffer.getvalue().encode("utf-8")
                    buffer = io.StringIO()
                    size = 0
        except (TypeError, ValueError) as error:
            raise HandlerError(f"custom code returned a value that is not JSON: {error}") from None
        yield buffer.getvalue().encode("utf-8")


_OPENING = frozenset({"start_map", "start_array"})
_CLOSING = frozenset({"end_map", "end_array"})


class JsonFile:
    """JSON in a temporary file (a command's stdout), validated before it is stored."""

    def __init__(self, file: IO[bytes]) -> None:
        """Take ownership of ``file``; it is closed once read."""
        self._file = file

    def validate(self) -> None:
        """Check the file holds exactly one JSON document, streaming, in constant memory.

        Whitespace may follow the document; anything else (``{"a":1} trailing``,
        ``{"a":1}{"b":2}``) is refused rather than stored. ``basic_parse`` rather than
        ``parse``: the latter builds each event's path, in time and memory quadratic in the
        depth, and deep output would hold the worker. The parser's message is cut to its first
        line, since the lines after it quote the output.
        """
        if self._file.seek(0, os.SEEK_END) == 0:
            raise HandlerError("command printed nothing; expected a JSON document on stdout")
        self._file.seek(0)
        depth = 0
        complete = False  # a whole top-level value has been read
        try:
            for event, _ in ijson.basic_parse(
                self._file, buf_size=VALIDATE_READ_BYTES, multiple_values=False
            ):
                if event in _OPENING:
                    depth += 1
                elif event in _CLOSING:
                    depth -= 1
                complete = depth == 0
        except ijson.JSONError as error:
            reason = brief(str(error).partition("\n")[0], 200)
            if complete:
                raise HandlerError(f"command's output is not one JSON document: {reason}") from None
            raise HandlerError(f"command printed output that is not JSON: {reason}") from None

    def chunks(self) -> Iterator[bytes]:
        """Yield the file's bytes."""
        self._file.seek(0)
        with self._file:
            while piece := self._file.read(CHUNK_BYTES):
                yield piece


class PythonHandler:
    """Calls ``package.module:function``; a call past its time limit fails the item."""

    def __init__(self, spec: str, timeout: float) -> None:
        """Import the callable now, so a bad ``HANDLER`` stops the worker at start."""
        module_name, _, function_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise ConfigError(f"HANDLER {spec!r}: cannot import {module_name}: {error}") from None
        function = getattr(module, function_name, None)
        if not callable(function):
            raise ConfigError(f"HANDLER {spec!r}: {module_name} has no callable {function_name}")
        self.name = spec
        self._function: Callable[[str], Any] = function
        self._timeout = timeout
        self._abandoned: list[threading.Thread] = []
        self._abandoned_lock = threading.Lock()

    @property
    def abandoned(self) -> int:
        """Calls given up on whose threads still run: a call that returns late frees its slot."""
        with self._abandoned_lock:
            self._abandoned = [thread for thread in self._abandoned if thread.is_alive()]
            return len(self._abandoned)

    def __call__(self, rows: Rows, deadline: float | None = None) -> HandlerOutput:
        """Run the callable in its own thread so a hung call cannot hold the item forever.

        The rows are read whole first (the query's time is not the custom code's). Python
        cannot kill a thread: a call past ``HANDLER_TIMEOUT`` or the item's deadline is
        abandoned (counted in ``abandoned`` while it runs) and the item fails; the worker
        restarts itself when every thread is held so. An exception's message is cut short:
        it may quote the rows.
        """
        text = join_capped(_chunks(rows))
        limit, by_deadline = _time_limit(self._timeout, deadline)
        if limit <= 0:
            raise HandlerError(_past_deadline(limit))
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["value"] = self._function(text)
            except BaseException as error:
                outcome["error"] = error

        thread = threading.Thread(target=call, name="handler", daemon=True)
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            with self._abandoned_lock:
                self._abandoned.append(thread)
            raise HandlerError(
                _past_deadline(limit)
                if by_deadline
                else f"custom code did not return within HANDLER_TIMEOUT={self._timeout:g} s"
            )
        if "error" in outcome:
            error = outcome["error"]
            raise HandlerError(
                f"custom code raised {type(error).__name__}: {brief(error, ERROR_TEXT_BYTES)}"
            )
        return JsonValue(outcome["value"])


class CommandHandler:
    """Runs an executable per item: rows on stdin, JSON on stdout, in its own process group."""

    def __init__(self, command: str, timeout: float, *, max_output_bytes: int) -> None:
        """Split the command line now, so a malformed one stops the worker at start."""
        try:
            self._argv = shlex.split(command)
        except ValueError as error:
            raise ConfigError(f"HANDLER_COMMAND {command!r} cannot be parsed: {error}") from None
        if not self._argv:
            raise ConfigError("HANDLER_COMMAND is empty")
        self.name = command
        self._timeout = timeout
        self._max_output_bytes = max_output_bytes
        self._lock = threading.Lock()
        self._running: dict[int, str] = {}  # process group -> run id
        self._killed_all = False  # set by kill_all: a command starting after it is ended too
        self.abandoned = 0

    def __call__(self, rows: Rows, deadline: float | None = None) -> HandlerOutput:
        """Run the command; whatever the way it ends, kill everything it started.

        The rows are written to its stdin as the query produces them, and ``HANDLER_TIMEOUT``
        counts from its start, checked between chunks. Its stdout goes through the worker into
        the spool, so once the call has read it no process left behind can add to the result
        that is validated and stored. A query failure while the command runs (its deadline,
        a cap, a read error) kills the command and is raised as it is.
        """
        chunks = (chunk.encode("utf-8") for chunk in _chunks(rows))
        limit, by_deadline = _time_limit(self._timeout, deadline)
        if limit <= 0:
            raise HandlerError(_past_deadline(limit))
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to JsonFile, which closes it
        try:
            ending, status, tail = self._run(chunks, spool, limit)
            if ending == "late":
                reason = (
                    _past_deadline(limit)
                    if by_deadline
                    else f"command did not finish within HANDLER_TIMEOUT={self._timeout:g} s"
                )
                raise HandlerError(f"{reason}; killed its process group{tail}")
            if ending == "too-large":
                raise HandlerError(
                    f"command's output exceeds MAX_OUTPUT_BYTES={self._max_output_bytes}; "
                    f"killed its process group{tail}"
                )
            if status != 0:
                raise HandlerError(f"command exited with {status}{tail}")
            # A command may stop reading early (``head``): the query still runs to its end, so
            # its failures and its check that the source did not change are not skipped.
            for _ in chunks:
                pass
            output = JsonFile(spool)
            try:
                output.validate()
            except HandlerError as error:
                raise HandlerError(f"{error}{tail}") from None
            return output
        except BaseException:
            spool.close()
            raise

    def _run(
        self, rows: Iterator[bytes], spool: IO[bytes], limit: float
    ) -> tuple[Ending, int, str]:
        """Start the command and serve its pipes; return how it ended, its status, its stderr.

        Once the command has exited (or been stopped), everything it started is killed before
        its pipes are drained, so they reach EOF and nothing writes after this returns.
        """
        run_id = uuid.uuid4().hex
        try:
            process = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env={**os.environ, RUN_VARIABLE: run_id},
            )
        except OSError as error:
            raise HandlerError(f"command {self._argv[0]!r} could not start: {error}") from None
        with self._lock:
            self._running[process.pid] = run_id
            killed_all = self._killed_all
        if killed_all:
            # kill_all ran while this command was starting (it may already be running its
            # code before Popen returned here): it must not outlive the stop either.
            _end_run(process.pid, run_id)
        pipes = _Pipes(process, rows, spool, self._max_output_bytes)
        try:
            try:
                ending = pipes.run(time.monotonic() + limit)
            finally:
                _end_run(process.pid, run_id)
            if ending == "exited":
                ending = pipes.drain(time.monotonic() + DRAIN_SECONDS)
        finally:
            pipes.close()
            process.wait()
            with self._lock:
                self._running.pop(process.pid, None)
        return ending, process.returncode, _tail(pipes.stderr_tail)

    def kill_all(self) -> None:
        """Kill every command running or starting (the worker is stopping and released them)."""
        with self._lock:
            self._killed_all = True
            running = list(self._running.items())
        for group, run_id in running:
            _end_run(group, run_id)


class _Pipes:
    """A command's three pipes, served by the calling thread alone.

    Rows go in, a chunk pulled from the query whenever the last one is written; stdout goes
    to the spool until it would pass ``limit`` bytes; of stderr only the last
    ``STDERR_TAIL_BYTES`` are kept. Disk and memory stay bounded whatever the query returns or
    the command prints, and no pipe can fill and stall it while another is being served.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], rows: Iterator[bytes], spool: IO[bytes], limit: int
    ) -> None:
        """Make the pipes non-blocking, so one read or write never waits on the command."""
        self._process = process
        self._rows = rows
        self._unsent = memoryview(b"")
        self._spool = spool
        self._limit = limit
        self._size = 0
        self.stderr_tail = bytearray()
        self._selector = selectors.DefaultSelector()
        assert process.stdin and process.stdout and process.stderr
        self._stdin, self._stdout = process.stdin, process.stdout
        for pipe, events in (
            (process.stdin, selectors.EVENT_WRITE),
            (process.stdout, selectors.EVENT_READ),
            (process.stderr, selectors.EVENT_READ),
        ):
            os.set_blocking(pipe.fileno(), False)
            self._selector.register(pipe, events)

    def run(self, until: float) -> Ending:
        """Serve the pipes until the command exits, passes ``until`` or prints too much."""
        while self._process.poll() is None:
            left = until - time.monotonic()
            if left <= 0:
                return "late"
            if not self._selector.get_map():
                try:
                    self._process.wait(left)
                except subprocess.TimeoutExpired:
                    return "late"
            elif not self._serve(min(left, EXIT_POLL_SECONDS)):
                return "too-large"
        return "exited"

    def drain(self, until: float) -> Ending:
        """After the exit and the kill, read what stdout and stderr still hold, until EOF.

        Killed processes close their ends at once; only one that escaped the kill can hold
        them open, and it gets until ``until``, then its pipes are closed under it.
        """
        if self._stdin in self._open():
            self._close(self._stdin)
        while self._selector.get_map() and (left := until - time.monotonic()) > 0:
            if not self._serve(left):
                return "too-large"
        return "exited"

    def close(self) -> None:
        """Close whatever pipe is still open: a writer left behind gets EPIPE from now on."""
        for pipe in self._open():
            self._close(pipe)
        self._selector.close()

    def _open(self) -> list[IO[bytes]]:
        return [key.fileobj for key in self._selector.get_map().values()]  # type: ignore[misc]

    def _serve(self, timeout: float) -> bool:
        """Serve each ready pipe once; False if stdout would pass the limit."""
        for key, _ in self._selector.select(timeout):
            pipe: IO[bytes] = key.fileobj  # type: ignore[assignment]
            if pipe is self._stdin:
                self._feed()
                continue
            try:
                data = os.read(pipe.fileno(), PIPE_READ_BYTES)
            except BlockingIOError:
                continue
            if not data:
                self._close(pipe)
            elif pipe is self._stdout:
                if self._size + len(data) > self._limit:
                    return False
                self._spool.write(data)
                self._size += len(data)
            else:
                self.stderr_tail += data
                del self.stderr_tail[:-STDERR_TAIL_BYTES]
        return True

    def _feed(self) -> None:
        """Write what stdin takes now; after the last chunk, close it so the command sees EOF."""
        if not self._unsent:
            chunk = next(self._rows, None)
            if chunk is None:
                self._close(self._stdin)
                return
            self._unsent = memoryview(chunk)
        try:
            self._unsent = self._unsent[os.write(self._stdin.fileno(), self._unsent) :]
        except BlockingIOError:
            return
        except BrokenPipeError:
            self._close(self._stdin)  # it stopped reading; its exit status tells the rest

    def _close(self, pipe: IO[bytes]) -> None:
        self._selector.unregister(pipe)
        pipe.close()


class RowsToJson:
    """The built-in handler: the rows as one JSON array, as the original worker stored them."""

    name = "rows-to-json"

    def __init__(self, rows_format: str) -> None:
        """Remember whether rows arrive as JSON lines or CSV."""
        self._rows_format = rows_format

    def __call__(self, rows: Rows, deadline: float | None = None) -> HandlerOutput:
        """Wrap the rows; JSON lines are already JSON, CSV records become arrays of strings.

        Nothing runs here to bound by ``deadline``: the array is built as it is uploaded, as
        the query produces the rows (which checks the deadline itself).
        """
        return _RowsArray(_chunks(rows), self._rows_format)


class _RowsArray:
    def __init__(self, rows: Iterable[str], rows_format: str) -> None:
        self._rows = rows
        self._rows_format = rows_format

    def chunks(self) -> Iterator[bytes]:
        lines = _lines(self._rows)
        if self._rows_format == "json":
            records: Iterator[str] = (line.rstrip("\n") for line in lines if line.strip())
        else:
            records = (json.dumps(r, ensure_ascii=False) for r in csv.reader(lines))
        buffer = io.StringIO()
        buffer.write("[")
        for index, record in enumerate(records):
            if index:
                buffer.write(",")
            buffer.write(record)
            if buffer.tell() >= CHUNK_BYTES:
                yield buffer.getvalue().encode("utf-8")
                buffer = io.StringIO()
        buffer.write("]")
        yield buffer.getvalue().encode("utf-8")


def load_handler(config: Config) -> Handler:
    """Build the handler the configuration names; raise ConfigError if it cannot be loaded."""
    if config.handler_command:
        return CommandHandler(
            config.handler_command,
            config.handler_timeout,
            max_output_bytes=config.max_output_bytes,
        )
    if config.handler:
        return PythonHandler(config.handler, config.handler_timeout)
    return RowsToJson(config.rows_format)


def _chunks(rows: Rows) -> Iterable[str]:
    return (rows,) if isinstance(rows, str) else rows


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    """Regroup text chunks into lines, each with its newline (S3 Select's record delimiter).

    A line split across chunks is held in pieces until its end arrives, so a long record costs
    time linear in its length. CSV's quoted newlines are left to ``csv.reader``, which takes a
    record that spans lines.
    """
    partial: list[str] = []
    for chunk in chunks:
        start = 0
        while (end := chunk.find("\n", start)) != -1:
            partial.append(chunk[start : end + 1])
            yield "".join(partial)
            partial.clear()
            start = end + 1
        if start < len(chunk):
            partial.append(chunk[start:])
    if partial:
        yield "".join(partial)


def _time_limit(timeout: float, deadline: float | None) -> tuple[float, bool]:
    """Return the seconds a call may take, and whether the item's deadline sets them."""
    if deadline is not None and (left := deadline - time.monotonic()) < timeout:
        return left, True
    return timeout, False


def _past_deadline(limit: float) -> str:
    if limit <= 0:
        return "custom code passed the item's deadline before it started"
    return f"custom code passed the item's deadline, {limit:.3g} s after it started"


def _end_run(group: int, run_id: str) -> None:
    """SIGKILL every process a command started: its process group, and what carries its run id.

    A process group alone misses a descendant that called ``setsid`` (``setsid sleep 100 &``,
    a daemon's double fork). Each command gets ``RUN_VARIABLE`` set to a value of its own,
    which every descendant inherits across ``setsid`` and ``exec``, so those are found in
    ``/proc`` and killed too. Why not the alternatives: a subreaper
    (``PR_SET_CHILD_SUBREAPER``) would make the worker reap orphans itself, and a
    ``waitpid(-1)`` steals the exit status ``subprocess`` waits for; cgroups and PID
    namespaces need privileges the container does not have.

    Not caught: a descendant that both leaves the group and replaces its environment (``setsid
    env -i ...``). It can no longer add to the result, since the worker reads stdout and closes
    the pipe after the drain; it is reparented to the container's init (the job definition
    sets ``initProcessEnabled``), which reaps it, and ends with the container.
    """
    _kill_group(group)
    marker = f"\0{RUN_VARIABLE}={run_id}\0".encode()
    give_up = time.monotonic() + KILL_WAIT_SECONDS
    while alive := _processes_of(group, marker):
        if time.monotonic() > give_up:
            log("warning", reason="processes of a command outlived SIGKILL", pids=alive[:20])
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.001)


def _processes_of(group: int, marker: bytes) -> list[int]:
    """Live (not zombie) processes in ``group`` or whose environment holds ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
            state, _, pgrp = stat[stat.rindex(b")") + 2 :].split(maxsplit=3)[:3]
            if state in (b"Z", b"X"):
                continue
            if int(pgrp) == group or marker in b"\0" + Path(f"/proc/{name}/environ").read_bytes():
                found.append(int(name))
        except (OSError, ValueError):
            continue  # it ended meanwhile, or is another user's
    return found


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def _tail(stderr: bytearray) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    return f"; stderr: {text}" if text else ""
