"""The vectorised fast path: the local engine's queries over Arrow record batches.

pyarrow's streaming CSV reader parses the same ranged GETs the Python evaluator reads
(:class:`.reader.RangedObject`), GZIP inflated on the way under the evaluator's caps (data that
breaks them, or does not inflate, is handed back), a block of 512 KiB at a time, every field as
text as S3 Select has it; WHERE, projections and aggregates run as Arrow compute kernels over
each batch, and rows are written a batch at a time (:mod:`.lines`). Memory holds Arrow's
readahead (~32 blocks) and one batch, and the item's deadline is checked between batches.
Queries with ``LIMIT`` stay with the Python evaluator, which stops reading at the rows needed.

The output must be the Python evaluator's byte for byte, so this path runs only what it can
run exactly (:mod:`.fastplan` decides from the SQL) and hands the query back
(:class:`.fastplan.Declined`) at the first batch whose data it cannot vouch for: a value that
does not CAST as Python would, a ragged row, a comment line, a field Arrow cannot parse as
Python's csv does. Batches whose text needs JSON escaping or CSV quoting are written by the
Python serialiser. Importing this module loads pyarrow (~80 MiB): import it only to use it.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import threading
import weakref
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as arrow_csv

from worker.logs import log
from worker.messages import InputFormat
from worker.query import Deadline, QueryError, QueryLimitExceeded
from worker.query.local import sql
from worker.query.local.caps import MAX_NUMBER_CHARS
from worker.query.local.evaluator import Accumulator, CsvLayout
from worker.query.local.fastplan import MAX_EXACT_INT, Declined, literal_value
from worker.query.local.lines import LineWriter, LongLine
from worker.query.local.reader import COMMENT, RangedObject, decompressed
from worker.query.local.serialise import serialise

# Arrow parses a block at a time and refuses a record that spans more than two blocks
# (ArrowInvalid: it "straddles two block boundaries"), so every record it accepts is under
# 2 x 512 KiB bytes, under the evaluator's cap of 1 MiB characters: one it would refuse is
# declined, and the evaluator refuses it in S3 Select's words. Arrow's reader also fetches up
# to 32 blocks ahead on its IO thread: ~16 MiB, the bulk of its memory.
BLOCK_BYTES = 512 << 10
# The first record (header or row) is parsed from the object's first bytes, this many.
PEEK_BYTES = 1 << 16
# How long a stopped scan waits for Arrow's IO thread to drop its input: its read-ahead still
# queued then ends at once (the input reads nothing more), in a millisecond or so.
ARROW_RELEASE_SECONDS = 10.0
# What the Python evaluator reads as a FLOAT (evaluator.py's _NUMBER_TEXT without its spaces).
_FLOAT_TEXT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
# Summed per batch in int64: |value| under 10**12 times the ~260 000 rows a 512 KiB block can
# hold cannot overflow it. Python's integers (the evaluator's) do not overflow at all.
MAX_SUMMED_INT = 10**12
COMPARISON_KERNELS: dict[str, Callable[[Any, Any], Any]] = {
    "=": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}

Value = Callable[[pa.RecordBatch], Any]  # an Arrow array (or scalar) for one batch


def chunks(
    source: RangedObject, fmt: InputFormat, plan: sql.Plan, rows_format: str, deadline: Deadline
) -> Iterator[str]:
    """Yield the query's output text, batch by batch; raise Declined where it cannot be exact.

    A Declined after some output means the Python evaluator's output starts with exactly that
    text: the caller passes on only the rest of it.
    """
    if plan.limit == 0:  # an aggregate's LIMIT 0 (fastplan sends other LIMITs to the evaluator)
        return
    stream = opened(source, fmt)
    first_record = _first_record(stream, fmt)
    layout = _FastLayout(first_record if fmt.csv_header == "USE" else None, len(first_record))
    where = compile_value(plan.where, layout) if plan.where is not None else None
    batches = _batches(stream, fmt, _columns_read(plan, layout), deadline)
    if plan.aggregate:
        yield from _aggregate(plan, layout, where, batches, rows_format)
    else:
        yield from _rows(plan, layout, where, batches, rows_format)


def opened(source: RangedObject, fmt: InputFormat) -> io.BufferedReader:
    """Return the object's bytes as a stream, inflated under the caps where compressed."""
    stream = io.BufferedReader(source, buffer_size=PEEK_BYTES)
    if fmt.compression == "NONE":
        return stream
    inflated = _Filled(decompressed(stream, fmt.compression, source), fmt.compression)
    return io.BufferedReader(inflated, buffer_size=PEEK_BYTES)


class _Filled(io.RawIOBase):
    """Decompressed bytes, each read filled to its size unless the data ends.

    A peek then sees PEEK_BYTES unless the data is shorter, as on uncompressed input. Data
    that does not decompress, or decompresses past the caps of :mod:`.caps`, declines: the
    evaluator reads it again and refuses it in its own words.
    """

    def __init__(self, inflating: io.BufferedIOBase, compression: str) -> None:
        super().__init__()
        self._inflating, self._compression = inflating, compression

    def readable(self) -> bool:
        """Say yes: Arrow reads this."""
        return True

    def readinto(self, target: Any) -> int:
        """Fill ``target`` with decompressed bytes; fewer only at the end of the data."""
        view = memoryview(target).cast("B")
        filled = 0
        try:
            while filled < len(view):
                count = self._inflating.readinto(view[filled:])
                if not count:
                    break
                filled += count
        except (QueryLimitExceeded, OSError, EOFError, zlib.error) as error:
            raise Declined(
                f"the {self._compression} data does not decompress within the caps "
                f"({type(error).__name__})"
            ) from None
        return filled


def _first_record(stream: io.BufferedReader, fmt: InputFormat) -> list[str]:
    """Parse the object's first record (the header, or the first row) from its first bytes.

    It gives the names and the width before Arrow opens, so that Arrow converts only the
    columns the query reads; Python's csv parses it, as the evaluator does. Declined unless it
    ends within the first PEEK_BYTES (a shorter peek is the whole object: the first range
    holds at least PEEK_BYTES of any larger one).
    """
    head = stream.peek(PEEK_BYTES)[:PEEK_BYTES]
    whole = len(head) < PEEK_BYTES
    try:
        text = (head if whole else head[: head.rfind(b"\n") + 1]).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Declined("the object's first bytes are not UTF-8") from None
    records = csv.reader(
        io.StringIO(text, newline=""), delimiter=fmt.delimiter, quotechar=fmt.quote
    )
    try:
        first = next((row for row in records if row), None)
        ended = whole or records.line_num < text.count("\n")
    except csv.Error:
        raise Declined("the object's first record is not CSV as Python reads it") from None
    if first is None or not ended:
        raise Declined(f"the first record does not end within {PEEK_BYTES} bytes")
    if first[0].startswith(COMMENT):
        raise Declined("the first record is a comment")
    return first


def _columns_read(plan: sql.Plan, layout: _FastLayout) -> list[int]:
    """Return the positions of the fields the query reads; the first always (comments)."""
    if plan.projections is None:
        return list(range(layout.width))
    columns = {0}
    stack: list[object] = [plan.where, *(p.expr for p in plan.projections)]
    while stack:
        node = stack.pop()
        if isinstance(node, sql.Column):
            columns.add(layout.position(node))
        elif hasattr(node, "__dataclass_fields__"):
            stack += [getattr(node, name) for name in node.__dataclass_fields__]
        elif isinstance(node, tuple):
            stack += node
    return sorted(columns)


def _batches(
    stream: io.BufferedReader, fmt: InputFormat, columns: list[int], deadline: Deadline
) -> Iterator[pa.RecordBatch]:
    """Yield the records block by block: the fields at ``columns``, each named ``f<position>``.

    The first record is skipped when it is the header (FileHeaderInfo USE or IGNORE). Arrow
    errors (bad UTF-8, a row of another width, a record past two blocks) decline: the Python
    evaluator reads the same bytes and either succeeds or says exactly what is wrong. A source
    that fails (GZIP past the caps, a GET refused) ends Arrow's input there and raises here,
    before any batch read after the failure is passed on.
    """
    convert = arrow_csv.ConvertOptions(
        column_types={f"f{i}": pa.string() for i in columns},
        include_columns=[f"f{i}" for i in columns],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    source = _ArrowInput(stream)
    try:
        try:
            source.opened(
                arrow_csv.open_csv(
                    source.for_arrow(),
                    read_options=_read_options(BLOCK_BYTES),
                    parse_options=_parse_options(fmt),
                    convert_options=convert,
                )
            )
        except pa.ArrowException as error:
            source.raise_failure()
            raise _unreadable(error) from None
        header_left = fmt.csv_header in ("USE", "IGNORE")
        while True:
            deadline.check()
            try:
                batch = source.next_batch()
            except StopIteration:
                source.raise_failure()
                return
            except pa.ArrowException as error:
                source.raise_failure()
                raise _unreadable(error) from None
            source.raise_failure()
            if batch.num_rows and pc.any(pc.starts_with(batch.column(0), COMMENT)).as_py():
                raise Declined("a record starts with the comment character")
            if header_left and batch.num_rows:
                batch, header_left = batch.slice(1), False
            deadline.records += batch.num_rows
            yield batch
    finally:
        source.stop()


class _ArrowInput(io.RawIOBase):
    """The stream Arrow's read-ahead thread reads: never raises into Arrow, ends with the scan.

    Arrow reads on its own IO thread, up to 32 blocks ahead of the batches taken. Two ways that
    thread outlived a scan (tests/unit/test_query_fast.py, a child process that must exit):

    * An exception raised into Arrow stays in its error status, and its traceback holds the
      frame that holds the reader: when Arrow's thread dropped the status last, it destroyed
      the reader and waited, on itself, for its own read-ahead to finish. The thread hung and
      the process could not exit (a GZIP bomb: 4 runs in 30 on the loaded 2-core machine). A
      failure is therefore kept here, Arrow sees the end of its input, the scan raises it.
    * A reader closed while its read-ahead was in a read went on reading the source, and a
      process exiting then aborted ("PyGILState_Release ... finalizing"). :meth:`stop` ends
      the input and takes the reader to its end, so the thread is out of Python when the scan
      ends; scans still open as the process exits (a result never read to its end) are
      stopped then, before the interpreter is torn down.
    * Read-ahead still queued when the reader went away kept its reference to the input, and
      Arrow's thread dropped it later, in Python (the file's ``close`` and deallocation): in
      a process exiting by then, that aborted ("terminate called without an active
      exception", 4 runs in 80 of a 64 MiB line, four processes at once). Arrow gets an
      object of its own (:meth:`for_arrow`) and :meth:`stop` waits until Arrow has let it go.
    """

    def __init__(self, stream: io.BufferedIOBase) -> None:
        super().__init__()
        self._stream = stream
        self._failure: BaseException | None = None
        self._ended = False
        self._reads = threading.Condition()
        self._reading = False
        self._reader: arrow_csv.CSVStreamingReader | None = None
        self._turn = threading.Lock()  # the scan's thread, or the process's exit, reads
        self._released = threading.Event()
        self._arrow_side: weakref.ref[_ArrowSide] | None = None

    def readable(self) -> bool:
        """Say yes: Arrow reads this."""
        return True

    def readinto(self, target: Any) -> int:
        """Read from the stream; 0 (the end) once the scan stopped or the stream failed."""
        with self._reads:
            if self._ended or self._failure is not None:
                return 0
            self._reading = True
        try:
            return self._stream.readinto(target)
        except Exception as error:  # kept, and raised on the scan's thread
            self._failure = error
            return 0
        finally:
            with self._reads:
                self._reading = False
                self._reads.notify_all()

    def raise_failure(self) -> None:
        """Raise the stream's failure, if any, on the scan's thread (and forget it here)."""
        failure, self._failure = self._failure, None
        if failure is not None:
            self._ended = True
            raise failure

    def for_arrow(self) -> _ArrowSide:
        """Return the file to give Arrow: this input's reads, in an object only Arrow holds."""
        side = _ArrowSide(self)
        released = self._released
        self._arrow_side = weakref.ref(side, lambda _: released.set())
        return side

    def opened(self, reader: arrow_csv.CSVStreamingReader) -> None:
        """Read batches from ``reader`` (over this input) until :meth:`stop`."""
        self._reader = reader
        _OPEN_INPUTS.add(self)

    def next_batch(self) -> pa.RecordBatch:
        """Return Arrow's next batch; StopIteration at the end."""
        with self._turn:
            if self._reader is None:  # never a silent end: the rows would look complete
                raise QueryError("the fast-path scan was stopped: the process is exiting")
            return self._reader.read_next_batch()

    def stop(self) -> None:
        """End the input and wait until Arrow's thread is done with it.

        The reader is read to its end (the end of input is now immediate, so that costs only
        the blocks already read ahead), after which Arrow reads no more; then a read still
        under way, if Arrow stopped on an error instead, is waited for, and then Arrow's
        release of the object it reads (:class:`_ArrowSide`).
        """
        with self._reads:
            self._ended = True
        with self._turn:
            reader, self._reader = self._reader, None
            if reader is not None:
                with contextlib.suppress(StopIteration, pa.ArrowException):
                    while True:
                        reader.read_next_batch()
                reader.close()
            del reader  # Arrow's own reference to its input is dropped with the last task's
        with self._reads:
            self._reads.wait_for(lambda: not self._reading)
        if self._arrow_side is not None and not self._released.wait(ARROW_RELEASE_SECONDS):
            log("warning", reason=f"Arrow held a fast-path input {ARROW_RELEASE_SECONDS} s on")
        self._failure = None
        _OPEN_INPUTS.discard(self)


class _ArrowSide(io.RawIOBase):
    """The file Arrow reads: an :class:`_ArrowInput`'s reads, in an object only Arrow holds.

    Its end tells the input's :meth:`~_ArrowInput.stop` that Arrow holds nothing of the scan.
    """

    def __init__(self, source: _ArrowInput) -> None:
        """Read as ``source`` reads."""
        super().__init__()
        # The input's own method, not one of this class: no frame of this object's is made.
        # A failure kept for the scan keeps its frames, and through their callers a frame of
        # this object's would keep it from Arrow's release (the stop waited it out each time).
        self.readinto = source.readinto

    def readable(self) -> bool:
        """Say yes: Arrow reads this."""
        return True


# The inputs of scans open in this process, each stopped at its end or, at the latest, on exit.
_OPEN_INPUTS: weakref.WeakSet[_ArrowInput] = weakref.WeakSet()


@atexit.register
def _stop_open_inputs() -> None:
    """Stop the scans still open as the process exits, while Arrow's thread may run Python.

    Once the interpreter is finalizing, a read by that thread aborts the process.
    """
    for source in list(_OPEN_INPUTS):
        source.stop()


def _read_options(block_size: int | None = None) -> arrow_csv.ReadOptions:
    """Fields named by position (f0, f1, ...), all as data: the header is handled here."""
    size = {"block_size": block_size} if block_size else {}
    return arrow_csv.ReadOptions(use_threads=False, autogenerate_column_names=True, **size)


def _parse_options(fmt: InputFormat) -> arrow_csv.ParseOptions:
    """Python csv's reading as the evaluator configures it: doubled quotes, newlines in quotes."""
    return arrow_csv.ParseOptions(
        delimiter=fmt.delimiter,
        quote_char=fmt.quote,
        double_quote=True,
        escape_char=False,
        newlines_in_values=True,
        ignore_empty_lines=True,
        invalid_row_handler=lambda row: "error",
    )


def _unreadable(error: pa.ArrowException) -> Declined:
    """Arrow's messages quote the rows they fail on; logs name only the kind of failure."""
    return Declined(f"Arrow cannot read the CSV as Python's csv does ({type(error).__name__})")


class _FastLayout:
    """Column names to positions, as :class:`.evaluator.CsvLayout` resolves them."""

    def __init__(self, header: list[str] | None, width: int) -> None:
        self.header, self.width = header, width
        self._layout = CsvLayout(header)

    def position(self, column: sql.Column) -> int:
        """Return the field ``column`` names; Declined where the Python evaluator would fail."""
        step = column.path[0]
        assert isinstance(step, tuple)  # fastplan.kind_of admits one-name paths only
        try:
            position = self._layout.index(*step)
        except QueryError as error:
            raise Declined(str(error)) from None
        if position >= self.width:
            raise Declined(f"{sql.describe(column)} is past the rows' end (MISSING)")
        return position

    def star_names(self) -> list[str]:
        """Return the names ``SELECT *`` gives: the header, else ``_1``, ``_2``, ..."""
        names = self.header or [f"_{i + 1}" for i in range(self.width)]
        if len(set(names)) != len(names):
            raise Declined("the header repeats a name")
        return names


# --- expressions ------------------------------------------------------------------------------


def compile_value(expr: sql.Expr, layout: _FastLayout) -> Value:
    """Compile a plan expression :func:`.fastplan.kind_of` admitted into a batch function."""
    if isinstance(expr, (sql.Literal, sql.Negate)):
        constant = pa.scalar(literal_value(expr))
        return lambda batch: constant
    if isinstance(expr, sql.Column):
        name = f"f{layout.position(expr)}"
        return lambda batch: batch.column(name)
    if isinstance(expr, sql.Cast):
        operand = compile_value(expr.operand, layout)
        convert = {"INT": _to_int, "FLOAT": _to_float, "STRING": lambda text: text}[expr.type]
        return lambda batch: convert(operand(batch))
    if isinstance(expr, sql.Compare):
        left, right, kernel = (
            compile_value(expr.left, layout),
            compile_value(expr.right, layout),
            expr.op,
        )
        return lambda batch: COMPARISON_KERNELS[kernel](left(batch), right(batch))
    if isinstance(expr, sql.Between):
        low = sql.Compare(">=", expr.operand, expr.low)
        return compile_value(
            sql.Logical("AND", (low, sql.Compare("<=", expr.operand, expr.high))), layout
        )
    if isinstance(expr, sql.In):
        equals = tuple(sql.Compare("=", expr.operand, item) for item in expr.items)
        return compile_value(sql.Logical("OR", equals), layout)
    if isinstance(expr, sql.Logical):
        operands = [compile_value(item, layout) for item in expr.operands]
        # SQL's three-valued logic: NULL (a JSON field null or missing) AND FALSE is FALSE.
        join = pc.and_kleene if expr.op == "AND" else pc.or_kleene
        return lambda batch: _fold(join, [operand(batch) for operand in operands])
    if isinstance(expr, sql.Not):
        operand = compile_value(expr.operand, layout)
        return lambda batch: pc.invert(operand(batch))
    raise Declined(sql.describe(expr))  # kind_of admits nothing else


def _fold(join: Callable[[Any, Any], Any], values: list[Any]) -> Any:
    result = values[0]
    for value in values[1:]:
        result = join(result, value)
    return result


def _to_int(text: pa.Array) -> pa.Array:
    """CAST AS INT where every value is a plain integer both engines read alike."""
    try:
        values = pc.cast(text, pa.int64())
    except pa.ArrowInvalid:
        raise Declined("a value that is not a plain integer is CAST AS INT") from None
    extremes = pc.min_max(values)
    if len(values) and max(-extremes["min"].as_py(), extremes["max"].as_py()) >= MAX_EXACT_INT:
        raise Declined("an INT too large to compare exactly with a FLOAT")
    return values


def _to_float(text: pa.Array) -> pa.Array:
    """CAST AS FLOAT where every value is a number as the Python evaluator reads it.

    Arrow reads every finite number the evaluator reads, alike (both round correctly), and
    refuses the rest, except that it also reads "nan" and "inf": only a batch with a value
    that is not finite is matched against the evaluator's pattern.
    """
    longest = pc.max(pc.binary_length(text)).as_py() if len(text) else 0
    try:
        values = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:
        raise Declined("a value that is not a plain number is CAST AS FLOAT") from None
    if longest > MAX_NUMBER_CHARS or not (
        pc.all(pc.is_finite(values)).as_py()
        or pc.all(pc.match_substring_regex(text, _FLOAT_TEXT)).as_py()
    ):
        raise Declined("a value that is not a plain number is CAST AS FLOAT")
    return values


def masked(where: Value | None, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return the batch's records whose condition is TRUE; NULL (a JSON field) drops as FALSE."""
    if where is None:
        return batch
    keep = where(batch)
    if isinstance(keep, pa.Scalar):
        return batch if keep.as_py() else batch.slice(0, 0)
    return batch.filter(keep)


# --- rows ---------------------------------------------------------------------------------


def _rows(
    plan: sql.Plan,
    layout: _FastLayout,
    where: Value | None,
    batches: Iterator[pa.RecordBatch],
    rows_format: str,
) -> Iterator[str]:
    if plan.projections is None:
        names = layout.star_names()
        values = [_column(f"f{position}") for position in range(layout.width)]
    else:
        names = [p.name for p in plan.projections]
        values = [compile_value(p.expr, layout) for p in plan.projections]
    writer = LineWriter(names, rows_format)
    emitted = 0
    for batch in batches:
        selected = masked(where, batch)
        if not selected.num_rows:
            continue
        try:
            yield writer.text([value(selected) for value in values], emitted + 1)
        except LongLine as error:  # the evaluator refuses it in S3 Select's words
            raise Declined(str(error)) from None
        emitted += selected.num_rows


def _column(name: str) -> Value:
    return lambda batch: batch.column(name)


# --- aggregates ---------------------------------------------------------------------------


def _aggregate(
    plan: sql.Plan,
    layout: _FastLayout,
    where: Value | None,
    batches: Iterator[pa.RecordBatch],
    rows_format: str,
) -> Iterator[str]:
    folds = []
    for projection in plan.projections or ():
        node = projection.expr
        assert isinstance(node, sql.Aggregate)  # Plan.aggregate guarantees it
        operand = compile_value(node.operand, layout) if node.operand is not None else None
        folds.append(Fold(node, operand))
    for batch in batches:
        selected = masked(where, batch)
        for fold in folds:
            fold.add(selected)
    names = [p.name for p in plan.projections or ()]
    yield from serialise([(names, [fold.result() for fold in folds])], rows_format)


def _present(values: pa.Array) -> pa.Array:
    """Return the values, or the entries of a dictionary array that its rows use (Parquet text)."""
    if pa.types.is_dictionary(values.type):
        return values.dictionary.take(pc.unique(values.indices))
    return values


class Fold:
    """One aggregate over batches, into the evaluator's own :class:`.evaluator.Accumulator`.

    The accumulator's ``result`` then types the answer as the Python evaluator does (AVG of
    INT as DECIMAL, SUM of nothing as NULL). FLOAT sums add value by value, in order, as the
    evaluator does, so rounding matches to the last bit. Integers and floats are told apart by
    the values' type, batch by batch: a JSON field's integers may turn to floats part way.
    """

    def __init__(self, node: sql.Aggregate, operand: Value | None) -> None:
        self._state = Accumulator(node, None)
        self._function, self._operand = node.function, operand

    def add(self, batch: pa.RecordBatch) -> None:
        state = self._state
        if self._operand is None or not batch.num_rows:
            state.count += batch.num_rows
            return
        values = self._operand(batch)
        state.count += len(values)
        if not len(values):  # every value NULL (Parquet): nothing to add, as in SQL
            return
        if self._function in ("SUM", "AVG"):
            state.total = self._sum(values, state.total)
        elif self._function in ("MIN", "MAX"):
            extremes = pc.min_max(_present(values))
            best = extremes["min" if self._function == "MIN" else "max"].as_py()
            if best == 0 and pa.types.is_floating(values.type):
                raise Declined("MIN / MAX of FLOAT at zero: 0.0 and -0.0 tie")
            better = state.best is None or (
                best < state.best if self._function == "MIN" else best > state.best
            )
            state.best = best if better else state.best

    def _sum(self, values: pa.Array, total: Any) -> Any:
        if pa.types.is_integer(values.type):
            extremes = pc.min_max(values)
            if max(-extremes["min"].as_py(), extremes["max"].as_py()) >= MAX_SUMMED_INT:
                raise Declined("an INT too large to sum in 64 bits")
            return total + pc.sum(values).as_py()
        return pc.cumulative_sum(values, start=float(total))[-1].as_py()

    def result(self) -> Any:
        return self._state.result()
