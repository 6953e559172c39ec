"""Reading and writing tables for batch jobs with pyarrow, one record batch at a time.

No Django here: paths, column names and signatures in, Arrow tables and numpy out.
CSV and JSON Lines columns are read as text and converted per column to the model's
dtypes, so that a bad value fails its row, not the whole file; Parquet keeps its types.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from inference.runtime.repository import release_memory
from inference.runtime.signature import Signature, TensorSpec, numpy_dtype

FORMATS = ("csv", "parquet", "jsonl")
ROW_COLUMN = "__row"  # the input row number (0-based data rows), kept beside every chunk
_JSONL_BATCH_ROWS = 4096
_CSV_BLOCK_BYTES = 4 * 1024 * 1024


NOT_UTF8_ROW = "invalid UTF-8 bytes in this value (the file is not all UTF-8; save it as UTF-8 to keep the row)"


class TableFormatError(ValueError):
    """The file is not what its format says, or cannot be read as a table."""


@dataclass(frozen=True)
class BadRow:
    row: int | None  # input row number; None for a line that could not be parsed at all
    column: str
    reason: str


def format_from_name(name: str) -> str | None:
    suffix = Path(name).suffix.lower().lstrip(".")
    return {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl", "ndjson": "jsonl"}.get(suffix)


# --- reading --------------------------------------------------------------------------------

_UTF8_HEAD_BYTES = 2 * _CSV_BLOCK_BYTES


def _not_utf8(data: bytes, at: int, *, line_before: int, offset: int) -> TableFormatError:
    """The error for the byte `data[at]` (the file's byte `offset + at`)."""
    line = line_before + data.count(b"\n", 0, at) + 1
    return TableFormatError(
        f"the CSV is not UTF-8 text: byte 0x{data[at : at + 1].hex()} on line {line} (byte {offset + at}) is not "
        "valid UTF-8; save the file as UTF-8 (for example: iconv -f latin1 -t utf-8 in.csv > out.csv)"
    )


def utf8_check(path: Path) -> None:
    """TableFormatError naming the line of the first byte of `path` that is not UTF-8.

    pyarrow's CSV reader needs UTF-8: a bad byte in a text column fails the whole batch, and
    on a line with the wrong number of fields it cannot even hand the line to the invalid-row
    handler (decoding the line inside pyarrow raises, which Python reports as "Exception
    ignored", and the read then fails with a message about field counts). So a CSV input is
    checked first, streaming, in C (the incremental decoder), before pyarrow reads it.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = lines = 0
    with open(path, "rb") as source:
        while True:
            block = source.read(_CSV_BLOCK_BYTES)
            held = decoder.getstate()[0]  # an unfinished character from the previous block
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                # exc.start counts from `held` + block; `held` has no newline in it.
                raise _not_utf8(held + block, exc.start, line_before=lines, offset=offset - len(held)) from None
            if not block:
                return
            lines += block.count(b"\n")
            offset += len(block)


REPLACEMENT = "\ufffd"  # what an invalid byte sequence becomes in a repaired CSV
_REPLACEMENT_BYTES = REPLACEMENT.encode()


def utf8_repair(path: Path, out: Path) -> bool:
    """Copy a CSV to `out` with each invalid UTF-8 sequence replaced by U+FFFD; streaming.

    Only bytes >= 0x80 are ever replaced (an ASCII byte is never part of an invalid
    sequence: the decoder stops before it), so every comma, quote and newline stays where
    it was and pyarrow numbers the rows of the copy as it would the original's. Returns
    False, writing nothing, when the file already holds a U+FFFD of its own: a replaced
    byte could then not be told from it, and the caller refuses the file as before.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    tail = b""
    try:
        with open(path, "rb") as source, open(out, "wb") as target:
            while block := source.read(_CSV_BLOCK_BYTES):
                if _REPLACEMENT_BYTES in tail + block[:2] or _REPLACEMENT_BYTES in block:
                    raise FileExistsError
                tail = block[-2:]
                target.write(decoder.decode(block).encode())
            target.write(decoder.decode(b"", final=True).encode())
    except FileExistsError:
        out.unlink(missing_ok=True)
        return False
    return True


def replaced_rows(
    batch: pa.RecordBatch | pa.Table, columns: Sequence[str]
) -> tuple[np.ndarray[Any, Any], list[tuple[int, str]]]:
    """(mask, [(position, column)]) of the rows of a repaired CSV's batch with a U+FFFD in
    one of `columns` (the first such column names the row)."""
    mask = np.zeros(batch.num_rows, dtype=bool)
    found: list[tuple[int, str]] = []
    for name in columns:
        hit = pc.match_substring(batch.column(name), REPLACEMENT).fill_null(False).to_numpy(zero_copy_only=False)
        for position in np.flatnonzero(hit & ~mask):
            found.append((int(position), name))
        mask |= hit
    found.sort()
    return mask, found


def _source(path: Path | bytes) -> Any:
    return pa.BufferReader(path) if isinstance(path, bytes) else path


def _csv_head(path: Path, *, replace: bool = False) -> bytes:
    """The file's first whole lines, up to _UTF8_HEAD_BYTES, checked for UTF-8: what a look
    at the start of a CSV reads (pyarrow never sees the bytes after it). With `replace`,
    invalid bytes after the header line become U+FFFD (as the plan's repaired copy has them)."""
    with open(path, "rb") as source:
        data = source.read(_UTF8_HEAD_BYTES + 1)
    if len(data) > _UTF8_HEAD_BYTES:
        data = data[: data.rfind(b"\n", 0, _UTF8_HEAD_BYTES) + 1] or data[:_UTF8_HEAD_BYTES]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        header_end = data.find(b"\n") + 1 or len(data)
        cut = exc.start >= len(data) - 3 and len(data) > _UTF8_HEAD_BYTES  # a character cut at the end
        if replace and exc.start >= header_end and _REPLACEMENT_BYTES not in data:
            return data.decode("utf-8", "replace").encode()
        if not cut:
            raise _not_utf8(data, exc.start, line_before=0, offset=0) from None
    return data


def _csv_reader(path: Path | bytes, columns: Sequence[str] | None, on_bad_line: Callable[[str], None] | None) -> Any:
    def handler(row: Any) -> str:
        if on_bad_line is None:
            return "error"
        on_bad_line(f"a line with {row.actual_columns} fields where the header has {row.expected_columns}")
        return "skip"

    read = pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
    parse = pa_csv.ParseOptions(invalid_row_handler=handler)
    try:
        # The header only: bad lines are reported by the reader that returns the rows.
        names_only = pa_csv.ParseOptions(invalid_row_handler=lambda row: "skip")
        names = pa_csv.open_csv(_source(path), read_options=read, parse_options=names_only).schema.names
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise TableFormatError(f"not a readable CSV file: {exc}") from None
    if len(set(names)) != len(names):
        raise TableFormatError("the CSV header names a column twice")
    wanted = list(names if columns is None else columns)
    convert = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in wanted},
        include_columns=wanted,
        strings_can_be_null=True,
    )
    try:
        return pa_csv.open_csv(_source(path), read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError) as exc:
        raise TableFormatError(f"not a readable CSV file: {exc}") from None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return orjson.dumps(value).decode()


def _jsonl_batches(
    path: Path, columns: Sequence[str] | None, on_bad_line: Callable[[str], None] | None
) -> Iterator[pa.RecordBatch]:
    """JSON Lines, parsed line by line (orjson), every value kept as text like CSV's."""
    names: list[str] | None = list(columns) if columns is not None else None
    buffer: list[dict[str, Any]] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                obj, reason = None, f"line {number}: not JSON ({exc})"
            else:
                reason = f"line {number}: expected a JSON object, got {type(obj).__name__}"
            if not isinstance(obj, dict):
                if on_bad_line is None:
                    raise TableFormatError(f"not a readable JSON Lines file: {reason}")
                on_bad_line(reason)
                continue
            if names is None:
                names = list(obj)
            buffer.append(obj)
            if len(buffer) >= _JSONL_BATCH_ROWS:
                yield _jsonl_batch(buffer, names)
                buffer = []
    if buffer and names is not None:
        yield _jsonl_batch(buffer, names)


def _jsonl_batch(rows: list[dict[str, Any]], names: list[str]) -> pa.RecordBatch:
    arrays = [pa.array([_text(row.get(name)) for row in rows], type=pa.string()) for name in names]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def column_names(path: Path, fmt: str, *, replace: bool = False) -> list[str]:
    """The columns of a table file (the first JSON Lines object's keys)."""
    if fmt == "csv":
        return list(_csv_reader(_csv_head(path, replace=replace), None, _ignore).schema.names)
    if fmt == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    return list(head(path, fmt, rows=1).column_names)


def _ignore(reason: str) -> None:
    return None


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableFormatError(f"not a readable Parquet file: {exc}") from None


def iter_batches(
    path: Path,
    fmt: str,
    *,
    columns: Sequence[str] | None = None,
    on_bad_line: Callable[[str], None] | None = None,
    start_only: bool = False,
    replace: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Record batches of `path` (only `columns`); never the whole file in memory.

    `on_bad_line` receives a reason for every line that cannot be parsed as a row (CSV,
    JSON Lines) and the line is skipped; without it such a line is a TableFormatError.
    """
    if fmt not in FORMATS:
        raise TableFormatError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        if fmt == "csv":
            yield from _csv_reader(_csv_head(path, replace=replace) if start_only else path, columns, on_bad_line)
        elif fmt == "parquet":
            # One reader per row group: a single reader over the whole file keeps memory in
            # proportion to the rows read so far (measured: about 1 KB per row of 256 FP32
            # columns, 0.5 GB at 100k rows and 1.1 GB at 400k), one per group stays flat.
            source = _parquet_file(path)
            wanted = list(columns) if columns is not None else None
            for group in range(source.num_row_groups):
                yield from source.iter_batches(batch_size=65536, row_groups=[group], columns=wanted)
        else:
            yield from _jsonl_batches(path, columns, on_bad_line)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise TableFormatError(f"not a readable {fmt} file: {exc}") from None


def head(path: Path, fmt: str, *, rows: int, columns: Sequence[str] | None = None, replace: bool = False) -> pa.Table:
    """The first `rows` rows (fewer if the file is shorter), read without the rest.

    Lines that do not parse are left out, as the job would; a file with no row that
    parses is a TableFormatError naming the first bad line.
    """
    batches: list[pa.RecordBatch] = []
    bad: list[str] = []
    count = 0
    schema = None
    for batch in iter_batches(path, fmt, columns=columns, on_bad_line=bad.append, start_only=True, replace=replace):
        schema = batch.schema
        batches.append(batch)
        count += batch.num_rows
        if count >= rows:
            break
    if count == 0 and bad:
        raise TableFormatError(f"not a readable {fmt} file: {bad[0]}")
    if schema is None:
        return pa.table({name: pa.array([], pa.string()) for name in columns or []})
    return pa.Table.from_batches(batches, schema=schema).slice(0, rows)


def split_into_chunks(
    path: Path,
    fmt: str,
    *,
    columns: Sequence[str],
    chunk_rows: int,
    out_dir: Path,
    on_bad_line: Callable[[str], None] | None,
    on_bad_row: Callable[[BadRow], None] | None = None,
) -> list[int]:
    """Write the input as Parquet files of `chunk_rows` rows each (chunk-00000.parquet ...).

    Every chunk file gets a `__row` column with the input row number. Returns the row
    counts. One record batch is in memory at a time. A CSV that is not UTF-8 is refused
    (TableFormatError naming the first bad byte's line) unless `on_bad_row` is given: then
    it is read from a repaired copy (utf8_repair) and each row with invalid bytes in one of
    `columns` goes to `on_bad_row` with its row number instead of into a chunk.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    repaired = False
    if fmt == "csv":
        try:
            utf8_check(path)
        except TableFormatError:
            copy = out_dir / "input.utf8.csv"
            if on_bad_row is None or not utf8_repair(path, copy):
                raise
            path, repaired = copy, True
    counts: list[int] = []
    writer: pq.ParquetWriter | None = None
    in_chunk = 0
    row = 0

    def open_next(schema: pa.Schema) -> pq.ParquetWriter:
        return pq.ParquetWriter(chunk_file(out_dir, len(counts)), schema, compression="none")

    for batch in iter_batches(path, fmt, columns=columns, on_bad_line=on_bad_line):
        batch = batch.select(list(columns))
        numbers = pa.array(np.arange(row, row + batch.num_rows, dtype=np.int64))
        batch = pa.RecordBatch.from_arrays([*batch.columns, numbers], names=[*columns, ROW_COLUMN])
        row += batch.num_rows
        if repaired:
            mask, found = replaced_rows(batch, columns)
            if found:
                assert on_bad_row is not None
                for position, column in found:
                    on_bad_row(BadRow(row - batch.num_rows + position, column, NOT_UTF8_ROW))
                batch = batch.filter(pa.array(~mask))
        offset = 0
        while offset < batch.num_rows:
            if writer is None:
                writer = open_next(batch.schema)
            take = min(chunk_rows - in_chunk, batch.num_rows - offset)
            writer.write_batch(batch.slice(offset, take))
            offset += take
            in_chunk += take
            if in_chunk == chunk_rows:
                writer.close()
                writer = None
                counts.append(in_chunk)
                in_chunk = 0
    if writer is not None:
        writer.close()
        counts.append(in_chunk)
    if repaired:
        path.unlink(missing_ok=True)
    return counts


def parquet_row_group_chunks(path: Path, chunk_rows: int) -> list[tuple[int, int]] | None:
    """Chunks of a Parquet input as runs of its own whole row groups, from the footer alone.

    Returns [(first row, rows), ...]: consecutive row groups are packed into a chunk while
    it stays within `chunk_rows`. None when one row group alone is larger than `chunk_rows`
    (every chunk cut from it would have to decode the whole group): the caller rewrites the
    input as chunk files instead. Row groups with no rows are left out.
    """
    metadata = _parquet_file(path).metadata
    chunks: list[tuple[int, int]] = []
    start = count = 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if rows > chunk_rows:
            return None
        if count and count + rows > chunk_rows:
            chunks.append((start, count))
            start, count = start + count, 0
        count += rows
    if count:
        chunks.append((start, count))
    return chunks


def read_row_range(path: Path, *, columns: Sequence[str], row_start: int, row_count: int) -> pa.Table:
    """Rows [row_start, row_start + row_count) of a Parquet file, only `columns`, with `__row`.

    Only the row groups the range lies in are decoded (a chunk planned by
    parquet_row_group_chunks is exactly its own groups). A file with fewer rows than the
    range (changed since it was planned) is a TableFormatError.
    """
    source = _parquet_file(path)
    metadata = source.metadata
    groups: list[int] = []
    first = offset = 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if rows and offset < row_start + row_count and offset + rows > row_start:
            if not groups:
                first = offset
            groups.append(group)
        offset += rows
    try:
        table = source.read_row_groups(groups, columns=list(columns)).select(list(columns))
    except (pa.ArrowInvalid, pa.ArrowKeyError, KeyError, OSError) as exc:
        raise TableFormatError(f"not a readable Parquet file: {exc}") from None
    table = table.slice(row_start - first, row_count)
    if table.num_rows != row_count:
        raise TableFormatError(
            f"rows {row_start} to {row_start + row_count - 1} are not in the file any more ({offset} rows now)"
        )
    numbers = pa.array(np.arange(row_start, row_start + row_count, dtype=np.int64))
    return table.append_column(ROW_COLUMN, numbers)


def file_stamp(path: Path) -> str:
    """ "size:mtime_ns" of a file: what tells a chunk that a path input changed since the plan."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def memory_release() -> None:
    """Hand memory freed by a finished plan or chunk back to the operating system.

    pyarrow's pool (mimalloc by default) and glibc's malloc both keep freed blocks for
    reuse; a batch worker between chunks has nothing to reuse them for, so its RSS would
    stay at the high-water mark of the largest step it ran.
    """
    pa.default_memory_pool().release_unused()
    release_memory()


def chunk_file(out_dir: Path, index: int) -> Path:
    return out_dir / f"chunk-{index:05d}.parquet"


def read_chunk(path: Path) -> pa.Table:
    return pq.read_table(path)


# --- model inputs ---------------------------------------------------------------------------


def input_width(spec: TensorSpec) -> int | None:
    """How many columns feed `spec`: 1 for [-1], k for [-1, k], None for [-1, -1]."""
    if spec.rank == 1 or (spec.rank == 2 and spec.shape[1] == 1):
        return 1
    if spec.rank == 2:
        return None if spec.shape[1] == -1 else spec.shape[1]
    raise ValueError(f'input "{spec.name}": {spec.describe()} has rank {spec.rank}; a table can feed rank 1 or 2')


def _column_values(column: pa.ChunkedArray | pa.Array, dtype: np.dtype[Any]) -> tuple[np.ndarray[Any, Any], Any]:
    """(values, bad) for one column: bad is None, or a list of (position, reason)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if dtype == np.dtype(object):
        values = array.cast(pa.string()).to_numpy(zero_copy_only=False)
        nulls = np.asarray(array.is_null().to_numpy(zero_copy_only=False))
        bad = [(int(i), "missing value") for i in np.flatnonzero(nulls)]
        return values, bad or None
    target = pa.from_numpy_dtype(dtype)
    bad: list[tuple[int, str]] = []
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = pc.utf8_trim_whitespace(array)
    try:
        converted = array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        converted = None
    if converted is None:
        # Some values do not convert: find them one by one (only on this slow path).
        python_values = array.to_pylist()
        out = np.zeros(len(python_values), dtype=dtype)
        for i, value in enumerate(python_values):
            if value is None:
                bad.append((i, "missing value"))
                continue
            try:
                number = float(value) if dtype.kind == "f" else _to_int(value)
                out[i] = number
            except (TypeError, ValueError, OverflowError):
                bad.append((i, f"expected {dtype.name}, got {str(value)[:60]!r}"))
        return out, bad or None
    nulls = converted.is_null().to_numpy(zero_copy_only=False) if converted.null_count else None
    values = converted.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    if nulls is not None:
        bad = [(int(i), "missing value") for i in np.flatnonzero(nulls)]
    return values, bad or None


def _to_int(value: Any) -> int:
    if isinstance(value, str):
        number = float(value)
        if not math.isfinite(number) or number != int(number):
            raise ValueError(value)
        return int(number)
    return int(value)


def model_feeds(
    table: pa.Table, mapping: Mapping[str, Sequence[str]], signature: Signature
) -> tuple[dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any], list[BadRow]]:
    """The model's inputs from mapped columns: (feeds of good rows, good-row mask, bad rows).

    Row numbers in BadRow come from the table's `__row` column when it has one.
    """
    n = table.num_rows
    good = np.ones(n, dtype=bool)
    reasons: dict[int, tuple[str, str]] = {}
    full: dict[str, np.ndarray[Any, Any]] = {}
    for name, columns in mapping.items():
        spec = signature.input(name)
        dtype = numpy_dtype(spec.datatype)
        parts = []
        for column in columns:
            values, bad = _column_values(table.column(column), dtype)
            parts.append(values)
            for position, reason in bad or ():
                good[position] = False
                reasons.setdefault(position, (column, reason))
        if spec.rank == 1:
            full[name] = parts[0]
        else:
            full[name] = np.stack(parts, axis=1) if len(parts) > 1 else parts[0].reshape(n, 1)
    numbers = table.column(ROW_COLUMN).to_numpy() if ROW_COLUMN in table.column_names else np.arange(n, dtype=np.int64)
    bad_rows = [BadRow(int(numbers[p]), column, reason) for p, (column, reason) in sorted(reasons.items())]
    if reasons:
        full = {name: values[good] for name, values in full.items()}
    feeds = {name: np.ascontiguousarray(values) for name, values in full.items()}
    return feeds, good, bad_rows


def output_columns(outputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, pa.Array]:
    """Output tensors as table columns: [n] and [n, 1] -> name; [n, k] -> name_0 .. name_{k-1}."""
    columns: dict[str, pa.Array] = {}
    for name, values in outputs.items():
        if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
            columns[name] = pa.array(values.reshape(-1) if values.dtype != object else list(values.reshape(-1)))
        elif values.ndim == 2:
            for j in range(values.shape[1]):
                columns[f"{name}_{j}"] = pa.array(np.ascontiguousarray(values[:, j]))
        else:
            flat = values.reshape(values.shape[0], -1)
            columns[name] = pa.array(list(flat))
    return columns


# --- writing --------------------------------------------------------------------------------


def write_part(table: pa.Table, path: Path, fmt: str) -> int:
    """Write a part (no CSV header: the result gets one) to a temp name, then rename it in."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if fmt == "csv":
            pa_csv.write_csv(table, tmp, write_options=pa_csv.WriteOptions(include_header=False))
        elif fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            with open(tmp, "wb") as out:
                for start in range(0, table.num_rows, 8192):
                    for row in table.slice(start, 8192).to_pylist():
                        out.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY))
                        out.write(b"\n")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def csv_header(columns: Sequence[str]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(columns)
    return text.getvalue().encode()


def errors_part(rows: Iterable[BadRow], path: Path) -> None:
    """Bad rows as CSV lines without header (row, column, reason), renamed into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        for bad in rows:
            writer.writerow(["" if bad.row is None else bad.row, bad.column, bad.reason])
    os.replace(tmp, path)


def concatenate(parts: Sequence[Path], out: Path, fmt: str, *, header: bytes = b"") -> None:
    """Join parts in order into `out` (written to a temp name and renamed in)."""
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        if fmt == "parquet":
            writer: pq.ParquetWriter | None = None
            for part in parts:
                source = pq.ParquetFile(part)
                if source.metadata.num_rows == 0:
                    continue  # a chunk whose rows all failed: no output columns to match
                for group in range(source.num_row_groups):
                    table = source.read_row_group(group)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table.cast(writer.schema))
            if writer is None:
                pq.write_table(pa.table({}), tmp)
            else:
                writer.close()
        else:
            with open(tmp, "wb") as target:
                target.write(header)
                for part in parts:
                    with open(part, "rb") as source_file:
                        shutil.copyfileobj(source_file, target, 1024 * 1024)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
