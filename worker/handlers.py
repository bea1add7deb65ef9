"""The custom code, plugged in one of three ways, behind one interface.

* ``HANDLER=package.module:function``: a Python callable taking the rows as ``str`` and
  returning a JSON-serialisable value;
* ``HANDLER_COMMAND="dotnet Job.dll"``: any executable, rows on stdin, JSON on stdout, so a
  .NET, Java or Go program is wrapped without being rewritten;
* neither: the built-in ``rows-to-json``, which stores the rows as one JSON array, as the
  original worker did.

Each returns a :class:`HandlerOutput`, a stream of JSON bytes, so that a large result is
uploaded part by part and never held twice in memory.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import os
import shlex
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol

import ijson

from worker.config import Config, ConfigError

CHUNK_BYTES = 1024 * 1024
STDERR_TAIL_BYTES = 2000


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

    def __call__(self, rows: str) -> HandlerOutput:
        """Run the custom code on one item's rows."""
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


class JsonFile:
    """JSON in a temporary file (a command's stdout), validated before it is stored."""

    def __init__(self, file: IO[bytes]) -> None:
        """Take ownership of ``file``; it is closed once read."""
        self._file = file

    def validate(self) -> None:
        """Check the file holds exactly one JSON document, streaming, in constant memory."""
        if self._file.seek(0, os.SEEK_END) == 0:
            raise HandlerError("command printed nothing; expected a JSON document on stdout")
        self._file.seek(0)
        try:
            for _ in ijson.parse(self._file, multiple_values=False):
                pass
        except ijson.JSONError as error:
            raise HandlerError(f"command printed output that is not JSON: {error}") from None

    def chunks(self) -> Iterator[bytes]:
        """Yield the file's bytes."""
        self._file.seek(0)
        with self._file:
            while piece := self._file.read(CHUNK_BYTES):
                yield piece


class PythonHandler:
    """Calls ``package.module:function``; a call past the timeout fails the item."""

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
        self.abandoned = 0

    def __call__(self, rows: str) -> HandlerOutput:
        """Run the callable in its own thread so a hung call cannot hold the item forever.

        Python cannot kill a thread: a call past ``HANDLER_TIMEOUT`` is abandoned (counted
        in ``abandoned``) and the item fails; the worker restarts itself when too many are.
        """
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["value"] = self._function(rows)
            except BaseException as error:
                outcome["error"] = error

        thread = threading.Thread(target=call, name="handler", daemon=True)
        thread.start()
        thread.join(self._timeout)
        if thread.is_alive():
            self.abandoned += 1
            raise HandlerError(
                f"custom code did not return within HANDLER_TIMEOUT={self._timeout:g} s"
            )
        if "error" in outcome:
            error = outcome["error"]
            raise HandlerError(f"custom code raised {type(error).__name__}: {error}")
        return JsonValue(outcome["value"])


class CommandHandler:
    """Runs an executable per item: rows on stdin, JSON on stdout, in its own process group."""

    def __init__(self, command: str, timeout: float) -> None:
        """Split the command line now, so a malformed one stops the worker at start."""
        try:
            self._argv = shlex.split(command)
        except ValueError as error:
            raise ConfigError(f"HANDLER_COMMAND {command!r} cannot be parsed: {error}") from None
        if not self._argv:
            raise ConfigError("HANDLER_COMMAND is empty")
        self.name = command
        self._timeout = timeout
        self._lock = threading.Lock()
        self._running: set[int] = set()
        self.abandoned = 0

    def __call__(self, rows: str) -> HandlerOutput:
        """Run the command; kill its whole process group if it outlives the timeout."""
        stdout = tempfile.TemporaryFile()  # noqa: SIM115 - handed to JsonFile, which closes it
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(
                    self._argv,
                    stdin=subprocess.PIPE,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
            except OSError as error:
                stdout.close()
                raise HandlerError(f"command {self._argv[0]!r} could not start: {error}") from None
            with self._lock:
                self._running.add(process.pid)
            try:
                process.communicate(rows.encode("utf-8"), timeout=self._timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid)
                process.wait()
                stdout.close()
                raise HandlerError(
                    f"command did not finish within HANDLER_TIMEOUT={self._timeout:g} s; "
                    f"killed its process group{_tail(stderr)}"
                ) from None
            except BrokenPipeError:
                process.wait()  # it stopped reading; its exit status tells what happened
            finally:
                with self._lock:
                    self._running.discard(process.pid)
            if process.returncode != 0:
                stdout.close()
                raise HandlerError(f"command exited with {process.returncode}{_tail(stderr)}")
            output = JsonFile(stdout)
            try:
                output.validate()
            except HandlerError as error:
                stdout.close()
                raise HandlerError(f"{error}{_tail(stderr)}") from None
            return output

    def kill_all(self) -> None:
        """Kill every command still running (the worker is stopping and released them)."""
        with self._lock:
            for pid in list(self._running):
                _kill_group(pid)


class RowsToJson:
    """The built-in handler: the rows as one JSON array, as the original worker stored them."""

    name = "rows-to-json"

    def __init__(self, rows_format: str) -> None:
        """Remember whether rows arrive as JSON lines or CSV."""
        self._rows_format = rows_format

    def __call__(self, rows: str) -> HandlerOutput:
        """Wrap the rows; JSON lines are already JSON, CSV records become arrays of strings."""
        return _RowsArray(rows, self._rows_format)


class _RowsArray:
    def __init__(self, rows: str, rows_format: str) -> None:
        self._rows = rows
        self._rows_format = rows_format

    def chunks(self) -> Iterator[bytes]:
        if self._rows_format == "json":
            records: Iterator[str] = (line for line in self._rows.splitlines() if line.strip())
        else:
            records = (
                json.dumps(r, ensure_ascii=False) for r in csv.reader(io.StringIO(self._rows))
            )
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
        return CommandHandler(config.handler_command, config.handler_timeout)
    if config.handler:
        return PythonHandler(config.handler, config.handler_timeout)
    return RowsToJson(config.rows_format)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(stderr: IO[bytes]) -> str:
    stderr.seek(0, os.SEEK_END)
    size = stderr.tell()
    stderr.seek(max(0, size - STDERR_TAIL_BYTES))
    text = stderr.read().decode("utf-8", errors="replace").strip()
    return f"; stderr: {text}" if text else ""
