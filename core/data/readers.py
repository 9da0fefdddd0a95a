"""Readers for the upload formats, with the checks that make a bad file a clear error instead of a crash.

=========  ===============================================================================================
modality   formats
=========  ===============================================================================================
text       JSONL, a JSON array, CSV or Parquet of ``text`` (or ``anchor`` + ``positive``: or the columns named at
           upload, :class:`Columns`) and an optional label; plain text, one text a line (no labels, no pairs)
vectors    CSV or Parquet of numeric or boolean columns (in Parquet also lists) and an optional label; NPY, 2-D
image      ZIP in class-folder layout (``<class>/<file>.png``: PNG, JPEG, WebP, AVIF, BMP, GIF, TIFF); NPZ with
           ``images`` and optional ``labels``
=========  ===============================================================================================

CSV files may separate fields with ``;`` or tabs (with decimal commas), and a vectors CSV may have no header row
(:func:`_read_csv_table`). Archives are read entry by entry in memory: no entry name is ever used as a path on
disk. Entries under ``__MACOSX/`` or named with a leading dot (what a Mac adds to a ZIP) are skipped, as are files
that are not images (notes, Windows' ``Thumbs.db``); an image in a format not read (a phone's HEIC) is refused.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from core.data.records import Records

FORMATS: dict[str, tuple[str, ...]] = {
    "text": ("jsonl", "json", "csv", "parquet", "txt"),
    "vectors": ("csv", "npy", "parquet"),
    "image": ("zip", "npz"),
}
ALIASES = {"ndjson": "jsonl", "pq": "parquet", "tsv": "csv"}  # other file extensions the same formats go by
# the image files Pillow reads by itself; images in other formats (a phone's HEIC, a camera's raw files) are refused by
# name, not left out of the dataset unseen, as before anything but .png and .jpg was (a class of WebP images vanished)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".avif", ".bmp", ".gif", ".tif", ".tiff")
UNREAD_IMAGE_SUFFIXES = (".heic", ".heif", ".jxl", ".svg", ".psd", ".raw", ".dng", ".cr2", ".nef", ".arw", ".orf")
IMAGE_FORMATS = "PNG, JPEG, WebP, AVIF, BMP, GIF or TIFF"
ORIENTATION = 0x0112  # the EXIF tag of how to turn the stored pixels upright
GZIP_MAGIC = b"\x1f\x8b"


def format_of_name(name: str) -> str:
    """The format a file's name says: its extension by the format's name (``rows.tsv`` is csv), a compression's
    left aside (``texts.jsonl.gz`` is jsonl); empty where the name has no extension."""
    path = PurePosixPath(name)
    if path.suffix.lower() == ".gz":
        path = PurePosixPath(path.stem)
    extension = path.suffix.lower().lstrip(".")
    return ALIASES.get(extension, extension)


def is_gzip(path: Path) -> bool:
    """Whether the file is gzip, by its first bytes rather than its name (``pandas.to_csv("x.csv.gz")`` and
    ``gzip texts.jsonl`` write it; so may a tool that keeps the name)."""
    with open(path, "rb") as file:
        return file.read(2) == GZIP_MAGIC


class DatasetError(ValueError):
    """The file cannot be used; the message says what is wrong and where."""


class ColumnError(DatasetError):
    """A column the uploader named is not in the file, or the file has no columns to name."""


class LabelColumnError(ColumnError):
    """The label column the uploader named is not in the file, or holds no labels."""


class UnpacksTooLarge(DatasetError):
    """A gzip file unpacks to more than its limit."""


def gunzip(source: Path, target: Path, limit: int | None = None) -> Path:
    """``source``, a gzip file, decompressed into ``target``, refusing more than ``limit`` bytes there (else a small
    file of repeated bytes defeats an upload limit): a corrupt or cut-off file is a :class:`DatasetError`, too much
    an :class:`UnpacksTooLarge`; a full disk stays an ``OSError``, not the file's fault. ``target`` is left only
    whole."""
    try:
        with gzip.open(source, "rb") as packed, open(target, "wb") as out:
            written = 0
            while chunk := packed.read(1 << 20):
                written += len(chunk)
                if limit is not None and written > limit:
                    raise UnpacksTooLarge(f"the upload unpacks to more than the limit of {limit} bytes")
                out.write(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        target.unlink(missing_ok=True)
        raise DatasetError(f"the file is not valid gzip: {error}") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True)
class ReadLimits:
    """Bounds applied while reading."""

    max_records: int = 5_000_000
    max_image_pixels: int = 4096 * 4096
    max_unzipped_bytes: int = 4 << 30
    max_text_chars: int = 100_000
    max_image_side: int = 512


@dataclass(frozen=True)
class Columns:
    """What a text or vectors file's columns hold: the labels (``label``), and a text dataset's texts (``text``) or
    pairs (``anchor`` and ``positive``), by default the columns of those names.

    ``named``: the roles the uploader named a column for (``"label"``, ``"text"``, ``"pairs"``). A named column must be
    in the file (a typo is refused with the file's columns rather than read as absent), and a text dataset is read as
    texts or as pairs as named; unnamed, it is pairs where its first record has an anchor or a positive column."""

    label: str = "label"
    text: str = "text"
    anchor: str = "anchor"
    positive: str = "positive"
    named: frozenset[str] = frozenset()

    @classmethod
    def named_as(cls, label: str | None = None, text: str | None = None, anchor: str | None = None,
                 positive: str | None = None) -> Columns:  # fmt: skip
        """The columns an upload names, each None where it names none (that one keeps its default name)."""
        roles = {"label": label, "text": text, "pairs": anchor}
        return cls(label=label or "label", text=text or "text", anchor=anchor or "anchor",
                   positive=positive or "positive",
                   named=frozenset(role for role, name in roles.items() if name is not None))  # fmt: skip

    def text_fields(self) -> dict[str, str]:
        """The text or pair columns named, under the upload's field names (as a dataset's details keep them)."""
        if "text" in self.named:
            return {"text_column": self.text}
        if "pairs" in self.named:
            return {"anchor_column": self.anchor, "positive_column": self.positive}
        return {}


def read_records(path: Path, modality: str, fmt: str, limits: ReadLimits, columns: Columns = Columns()) -> Records:
    """Parse and validate a dataset file, its columns read as ``columns`` says.

    Raises:
        DatasetError: with a message naming the problem (and the line, column or entry where it is).
    """
    if fmt not in FORMATS.get(modality, ()):
        raise DatasetError(
            f"format {fmt!r} is not accepted for modality {modality!r}; use one of {FORMATS.get(modality)}"
        )
    reader = {
        ("text", "jsonl"): _text_jsonl,
        ("text", "json"): _text_json,
        ("text", "csv"): _text_csv,
        ("text", "parquet"): _text_parquet,
        ("text", "txt"): _text_lines,
        ("vectors", "csv"): _vectors_table,
        ("vectors", "parquet"): _vectors_table,
        ("vectors", "npy"): _vectors_npy,
        ("image", "npz"): _images_npz,
        ("image", "zip"): _images_zip,
    }[(modality, fmt)]
    records = reader(Path(path), fmt, limits, columns)  # each says where a named column is absent
    if "label" in columns.named and records.labels is None:
        raise LabelColumnError(f"label column {columns.label!r} holds no labels: every value is empty")
    if len(records) == 0:
        raise DatasetError("the file holds no records")
    if len(records) > limits.max_records:
        raise DatasetError(f"the file holds {len(records)} records, more than the limit of {limits.max_records}")
    return records


def _labels(values: list, column: str) -> tuple[np.ndarray | None, list[str] | None]:
    """Class indices and names; a missing value is None, NaN or an empty string (a blank cell of a spreadsheet's
    CSV, in any format), and a column of only missing values is no labels."""
    values = [None if isinstance(v, str) and v == "" else v for v in values]
    if all(v is None for v in values):
        return None, None
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        raise DatasetError(f"column {column!r}: some records have a label and some do not")
    odd = next((i for i, v in enumerate(values) if not isinstance(v, str | int | float | np.generic)), None)
    if odd is not None:  # a list (several labels) or an object would otherwise become one class named by its repr
        raise DatasetError(f"column {column!r}, record {odd + 1}: a label must be one string or number, "
                           f"not {type(values[odd]).__name__}")  # fmt: skip
    numbers = all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_) for v in values)
    as_names = [_label_name(v) for v in values]
    names = sorted(set(as_names), key=float if numbers else None)  # numbers in numeric order: 2 before 10
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[name] for name in as_names], dtype=np.int64), names


def _label_name(value: object) -> str:
    """A label's class name; a whole float names the class of the integer (3.0 is 3, as when integer labels are
    written beside float features by ``np.column_stack`` or ``np.savetxt``)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _text_rows(rows: list[dict], where: str, limits: ReadLimits, columns: Columns) -> Records:
    if not rows:
        raise DatasetError("the file holds no records")
    first = rows[0]
    if "pairs" in columns.named or "text" in columns.named:
        paired = "pairs" in columns.named
    else:
        paired = columns.anchor in first or columns.positive in first
    needed = (columns.anchor, columns.positive) if paired else (columns.text,)
    absent = [column for column in needed if column not in first]
    if absent:
        named = "pairs" in columns.named if paired else "text" in columns.named
        raise (ColumnError if named else DatasetError)(
            f"the first record has no column {absent[0]!r} (its columns: {list(first)}); text datasets need 'text', "
            "or 'anchor' and 'positive', or the columns that hold them named at upload (text_column, or "
            "anchor_column and positive_column)"
        )
    texts: list[str] = []
    positives: list[str] = []
    for number, row in enumerate(rows, start=1):
        for column in needed:
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise DatasetError(f"{where} {number}: column {column!r} must be a non-empty string")
            if len(value) > limits.max_text_chars:
                raise DatasetError(
                    f"{where} {number}: column {column!r} is longer than {limits.max_text_chars} characters"
                )
        texts.append(row[needed[0]])
        if paired:
            positives.append(row[needed[1]])
    # a label of 0 (or false) is a label; only a missing, null or empty one is none
    values = [row.get(columns.label) for row in rows]
    if "label" in columns.named and not any(columns.label in row for row in rows):
        raise _no_label_column(columns.label, list(first))
    labels, names = _labels(values, columns.label)
    return Records("text", texts=texts, positives=positives or None, labels=labels, label_names=names)


def _open_text(path: Path) -> str:
    """The file's text; a leading byte-order mark (spreadsheets write one in "CSV UTF-8") is dropped."""
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise DatasetError(f"the file is not valid UTF-8 (byte {error.start})") from None


def _text_jsonl(path: Path, _fmt: str, limits: ReadLimits, columns: Columns) -> Records:
    rows = []
    for number, line in enumerate(_open_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"line {number}: each line must be a JSON object")
        rows.append(row)
        if len(rows) > limits.max_records:
            raise DatasetError(f"more than the limit of {limits.max_records} records")
    return _text_rows(rows, "line", limits, columns)


def _text_lines(path: Path, _fmt: str, limits: ReadLimits, columns: Columns) -> Records:
    """Plain text, one text a line, as ``embedtrain embed`` reads it; blank lines are skipped."""
    if columns.named:
        raise ColumnError("a plain-text file is one text a line, with no columns to name; give named columns as "
                          "JSONL, JSON, CSV or Parquet")  # fmt: skip
    rows = [{columns.text: line} for line in _open_text(path).splitlines() if line.strip()]
    if len(rows) > limits.max_records:
        raise DatasetError(f"more than the limit of {limits.max_records} records")
    return _text_rows(rows, "non-blank line", limits, columns)


def _text_json(path: Path, _fmt: str, limits: ReadLimits, columns: Columns) -> Records:
    """One JSON array of objects (what ``json.dump(records)`` and pandas' ``to_json(orient="records")`` write)."""
    try:
        rows = json.loads(_open_text(path))
    except json.JSONDecodeError as error:
        raise DatasetError(f"not valid JSON at line {error.lineno} column {error.colno} ({error.msg})") from None
    if not isinstance(rows, list):
        raise DatasetError("a .json dataset must be one array of objects, [{\"text\": ...}, ...]; for one object a "
                           "line, name the file .jsonl")  # fmt: skip
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DatasetError(f"record {number}: each record must be a JSON object")
    if len(rows) > limits.max_records:
        raise DatasetError(f"more than the limit of {limits.max_records} records")
    return _text_rows(rows, "record", limits, columns)


def _csv_dialect(path: Path) -> tuple[str, str]:
    """The field separator and decimal point of a CSV file: ``,`` and ``.``, or, as spreadsheets save "CSV" where the
    decimal point is a comma, ``;`` (or a tab) between fields and ``,`` in numbers. Told from the first line (a
    header's names or the first row's numbers) and, for the decimal comma, the first 64 KiB."""
    with open(path, "rb") as file:
        sample = file.read(1 << 16).decode("utf-8", errors="replace").removeprefix("\ufeff")
    first = sample.split("\n", 1)[0]
    if ";" in first:
        delimiter = ";"
    elif "\t" in first and "," not in first:
        delimiter = "\t"
    else:
        return ",", "."
    decimal_comma = re.search(rf"(^|{delimiter})\s*-?\d+,\d+(e[-+]?\d+)?\s*({delimiter}|\r?$)", sample, re.M | re.I)
    return delimiter, "," if decimal_comma else "."


def _text_csv(path: Path, _fmt: str, limits: ReadLimits, columns: Columns) -> Records:
    reader = csv.DictReader(io.StringIO(_open_text(path)), delimiter=_csv_dialect(path)[0])
    rows = []
    for row in reader:
        if None in row or any(value is None for value in row.values()):
            raise DatasetError(f"row {reader.line_num}: the number of fields differs from the header")
        rows.append(row)
    if reader.fieldnames is None:
        raise DatasetError("the file is empty")
    return _text_rows(rows, "row", limits, columns)


def _text_parquet(path: Path, _fmt: str, limits: ReadLimits, columns: Columns) -> Records:
    """A Parquet table of texts, as Hugging Face datasets and pandas write them; its rows are read as JSONL's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = _without_pandas_index(pq.read_table(path))
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetError(f"the PARQUET file cannot be read: {str(error).splitlines()[0]}") from None
    if table.num_rows > limits.max_records:
        raise DatasetError(f"more than the limit of {limits.max_records} records")
    return _text_rows(table.to_pylist(), "row", limits, columns)


def _no_label_column(label_column: str, columns: list[str]) -> DatasetError:
    return LabelColumnError(f"no label column {label_column!r} in the file (its columns: {list(columns)}); name the "
                        "column that holds the labels, or leave label_column out for an unlabelled dataset")  # fmt: skip


def _finite_matrix(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] == 0:
        raise DatasetError(f"{what} must be a 2-D array of shape (records, features), got shape {x.shape}")
    numeric = np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_  # booleans: 0 and 1
    if not numeric or np.issubdtype(x.dtype, np.complexfloating):
        raise DatasetError(f"{what} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(
            f"{what} holds NaN or infinite values ({int(bad.sum())} of them; first at record {row}, feature {col})"
        )
    return x


def _vectors_table(path: Path, fmt: str, limits: ReadLimits, columns: Columns) -> Records:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if fmt == "csv":
            table = _read_csv_table(path, columns.label, "label" in columns.named)
        else:
            table = _without_pandas_index(pq.read_table(path))
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetError(f"the {fmt.upper()} file cannot be read: {str(error).splitlines()[0]}") from None
    labels = names = None
    if "label" in columns.named and columns.label not in table.column_names:
        raise _no_label_column(columns.label, table.column_names)
    if columns.label in table.column_names:
        labels, names = _labels(table.column(columns.label).to_pylist(), columns.label)
        table = table.drop([columns.label])
    if table.num_columns == 0:
        raise DatasetError("no feature columns besides the label")
    blocks = [_feature_block(name, column) for name, column in zip(table.column_names, table.columns, strict=True)]
    x = np.column_stack(blocks)
    return Records("vectors", vectors=_finite_matrix(x, "the feature columns"), labels=labels, label_names=names)


def _read_csv_table(path: Path, label_column: str, require_label: bool):  # noqa: ANN202 - a pyarrow Table
    """A vectors CSV as a table. Its first row is data, not silently taken for column names, where it cannot be a
    header: only numbers, and a float among them (``0.5``, ``1.0``, ``5e-01``: what ``np.savetxt`` and pandas'
    ``to_csv(header=False)`` write) or a repeated one (names are unique); whole numbers otherwise name columns
    (wavelengths, years; pandas' default ``0, 1, ...``). A float beside a name (a data row with its label) and an
    unnamed column (pandas' ``to_csv()`` writes its row index so) are refused: either would put a record or
    something that is not a feature among the features. A spreadsheet's CSV of ``;``-separated fields with decimal
    commas is read as it means (:func:`_csv_dialect`)."""
    import pyarrow.csv as pacsv

    delimiter, decimal = _csv_dialect(path)
    parse, convert = pacsv.ParseOptions(delimiter=delimiter), pacsv.ConvertOptions(decimal_point=decimal)
    table = pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    columns = table.column_names
    unnamed = next((i for i, name in enumerate(columns) if not name.strip()), None)
    if unnamed is not None:
        raise DatasetError(f"column {unnamed + 1} of the header has no name; pandas' to_csv() writes its row index so, "
                           "which is not a feature: write the file with to_csv(index=False), or name the column")  # fmt: skip
    numbers = [name for name in columns if _is_number(name.replace(decimal, "."))]
    floats = [name for name in numbers if not re.fullmatch(r"\s*[-+]?\d+\s*", name)]
    if len(numbers) < len(columns):
        if floats:
            raise DatasetError(f"the first row mixes numbers ({', '.join(floats[:3])}) with names, as a record "
                               "with its label does; taken for the header it would be lost: begin the file with a "
                               "header row naming every column, such as x0,x1,...,label")  # fmt: skip
        return table
    if not floats and len(set(columns)) == len(columns):
        return table  # whole numbers, each once: column names
    if require_label:
        raise LabelColumnError(f"the file has no header row (its first row is numbers), so no column is named "
                               f"{label_column!r}: begin it with a header row naming every column, such as "
                               f"x0,x1,...,{label_column}")  # fmt: skip
    headerless = pacsv.ReadOptions(autogenerate_column_names=True)  # f0, f1, ...
    return pacsv.read_csv(path, read_options=headerless, parse_options=parse, convert_options=convert)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _without_pandas_index(table):  # noqa: ANN001, ANN202 - a pyarrow Table
    """The table without the unnamed index pandas' ``to_parquet`` stores beside the data (``__index_level_0__``, for
    a frame whose index is not a plain range, as after a filter or a shuffle): a row's number is not a feature. A
    named index (``set_index("label")``) is the user's column and stays."""
    index = (table.schema.pandas_metadata or {}).get("index_columns", [])
    unnamed = [name for name in index if isinstance(name, str) and re.fullmatch(r"__index_level_\d+__", name)]
    return table.drop([name for name in unnamed if name in table.column_names])


def _feature_block(name: str, column) -> np.ndarray:  # noqa: ANN001 - a pyarrow ChunkedArray
    """A feature column's values, (records, 1), booleans as 0 and 1; or a column of equal-length numeric lists (how
    Parquet files from pandas, Polars or Hugging Face datasets hold embeddings), (records, length)."""
    import pyarrow as pa

    def numeric(kind) -> bool:  # noqa: ANN001
        return pa.types.is_integer(kind) or pa.types.is_floating(kind)

    if column.null_count:
        raise DatasetError(f"column {name!r} has {column.null_count} empty or NaN values")
    if numeric(column.type):
        return column.to_numpy()[:, None]
    if pa.types.is_boolean(column.type):  # a one-hot column, as pandas' get_dummies writes them: 0 and 1
        return column.to_numpy().astype(np.float32)[:, None]
    listed = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    if not ((listed or pa.types.is_fixed_size_list(column.type)) and numeric(column.type.value_type)):
        raise DatasetError(
            f"column {name!r} is not numeric ({column.type}); "
            "vectors need numeric columns or a column of numeric lists, one a record"
        )
    lists = column.combine_chunks()
    lengths = np.unique(lists.value_lengths().to_numpy()) if listed else np.array([column.type.list_size])
    if len(lengths) != 1 or lengths[0] == 0:
        raise DatasetError(f"column {name!r}: every record's list must have one length, not {lengths.tolist()[:5]}")
    values = lists.flatten()
    if values.null_count:
        raise DatasetError(f"column {name!r} has {values.null_count} empty values inside its lists")
    return values.to_numpy().reshape(len(lists), int(lengths[0]))


def _vectors_npy(path: Path, _fmt: str, limits: ReadLimits, columns: Columns) -> Records:
    try:
        x = np.load(path, allow_pickle=False)  # never unpickle user data
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(f"the NPY file cannot be read: {error}") from None
    if "label" in columns.named:
        raise LabelColumnError(f"an NPY file holds one array and no columns, so no label column {columns.label!r}; "
                               "give labelled vectors as CSV or Parquet")  # fmt: skip
    return Records("vectors", vectors=_finite_matrix(np.asarray(x), "the array"))


def _zip_entries(archive: zipfile.ZipFile, limits: ReadLimits) -> list[zipfile.ZipInfo]:
    entries = [info for info in archive.infolist() if not info.is_dir()]
    total = sum(info.file_size for info in entries)
    if total > limits.max_unzipped_bytes:
        raise DatasetError(f"the archive unpacks to {total} bytes, more than the limit of {limits.max_unzipped_bytes}")
    for info in entries:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DatasetError(f"archive entry {info.filename!r} has an absolute or '..' path")
    return entries


def nchw(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images from (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3; values untouched."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DatasetError(
            f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3, got {images.shape}"
        )
    return images


def to_uint8_nchw(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 pixels from images in any layout :func:`nchw` takes: uint8 as they are, uint16 scaled as a
    16-bit PNG is, other numbers in [0, 1] or [0, 255] scaled to [0, 255]; others refused, never clipped."""
    images = nchw(images)
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if not np.issubdtype(images.dtype, np.number):
        raise DatasetError(f"images must be numeric, got dtype {images.dtype}")
    sixteen_bit = images.dtype == np.uint16
    images = images.astype(np.float32)
    if not np.isfinite(images).all():
        raise DatasetError("images hold NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if sixteen_bit and high > 255:  # 16-bit pixels: scaled, as a 16-bit PNG is
        return np.round(images / 257.0).astype(np.uint8)
    if low < 0 or high > 255:  # clipping would destroy them without a word (normalised or raw-unit images)
        raise DatasetError(
            f"image pixels range over [{low:g}, {high:g}]; give them in [0, 1] or [0, 255] (or as uint8 or uint16)"
        )
    top = 1.0 if high <= 1.0 else 255.0
    return np.round(images / top * 255.0).astype(np.uint8)


def _images_npz(path: Path, _fmt: str, limits: ReadLimits, _columns: Columns) -> Records:
    try:
        with zipfile.ZipFile(path) as archive:
            _zip_entries(archive, limits)  # an NPZ is a ZIP: refuse bombs before numpy inflates them
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data.files:
                raise DatasetError(f"the NPZ needs an 'images' array; it has {sorted(data.files)}")
            images = to_uint8_nchw(np.asarray(data["images"]))
            raw_labels = np.asarray(data["labels"]) if "labels" in data.files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"the NPZ file cannot be read: {error}") from None
    if images.shape[2] * images.shape[3] > limits.max_image_pixels:
        raise DatasetError(
            f"images of {images.shape[2]}x{images.shape[3]} exceed the limit of {limits.max_image_pixels} pixels"
        )
    images = _shrunk_stack(images, limits.max_image_side)  # as a ZIP's images are
    labels = names = None
    if raw_labels is not None:
        if raw_labels.shape != (len(images),):
            raise DatasetError(f"'labels' must have shape ({len(images)},), got {raw_labels.shape}")
        labels, names = _labels(raw_labels.tolist(), "labels")
    return Records("image", images=images, labels=labels, label_names=names)


def decode_image(data: bytes, limits: ReadLimits, where: str) -> np.ndarray:
    """Image bytes (:data:`IMAGE_FORMATS`) -> (H, W, C) uint8 with C = 1 or 3, upright and shrunk to
    ``max_image_side`` (see :func:`_pixels`); refuses corrupt images, and images that would decode to more than
    ``max_image_pixels`` (:func:`_opened`)."""
    with _opened(data, limits, where) as image:
        array = _pixels(image, limits.max_image_side)
    return array[:, :, None] if array.ndim == 2 else array


def image_shape(data: bytes, limits: ReadLimits, where: str) -> tuple[int, int, int]:
    """The (H, W, C) :func:`decode_image` gives these bytes, from the image's header: no pixel is decoded."""
    with _opened(data, limits, where) as image:
        width, height = image.size
        if image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):  # turned a quarter by ImageOps.exif_transpose
            width, height = height, width
        return *_shrunk_size(height, width, limits.max_image_side), 1 if _grey(image.mode) else 3


@contextmanager
def _opened(data: bytes, limits: ReadLimits, where: str) -> Iterator[Any]:
    """The image, opened and not yet decoded (a JPEG drafted to what it decodes at); what goes wrong in the block,
    as in the opening, is refused with a :class:`DatasetError` naming ``where``.

    A JPEG decodes at 1/2, 1/4 or 1/8 of its size where that still covers ``max_image_side`` (Pillow's ``draft``),
    and the bound is on what it decodes to: a camera's 24 or 45 MP JPEG decodes to under 1 MP. Before, the bound was
    on the stored size, so that every photo of more than 16.8 MP (the default bound), as cameras and phones of 24,
    48 or 50 MP take them, was refused, though what was decoded of it was a 64th of that."""
    from PIL import Image, UnidentifiedImageError

    # Pillow's own guard, at open: a header may claim up to 64 times the bound (a 1/8 draft), ours is checked below
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels * 64
    try:
        with Image.open(io.BytesIO(data)) as image:
            stored = image.size
            scale = limits.max_image_side / max(image.size)
            if scale < 1:  # a JPEG's size is now what it decodes to; other formats keep theirs
                image.draft(None, (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
            if image.width * image.height > limits.max_image_pixels:
                decoded = "" if image.size == stored else f" (decoded at {image.width}x{image.height})"
                raise DatasetError(
                    f"{where}: {stored[0]}x{stored[1]}{decoded} is more than {limits.max_image_pixels} pixels"
                )
            yield image
    except Image.DecompressionBombError:
        raise DatasetError(f"{where}: more than {limits.max_image_pixels} pixels (decompression bomb guard)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{where}: not a readable image ({IMAGE_FORMATS}; {type(error).__name__})") from None


def _pixels(image, max_side: int) -> np.ndarray:  # noqa: ANN001 - a PIL image, opened (a JPEG drafted), not decoded
    """The image's pixels (:func:`_to_uint8_array`), upright, shrunk with antialiasing, its aspect kept, so that its
    longer side is at most ``max_side``.

    Upright: a phone stores a portrait photo's pixels sideways with an EXIF Orientation tag that viewers apply; read
    without it, the model saw such photos lying on their side. Shrunk: image models see at most 512 pixels a side
    (``model.image_size``); a phone's 12 MP photo kept whole is 36 MB, so that 40 of them took 4.3 GB to read (230
    would fill a 24 GiB machine). A JPEG is decoded at the smallest of 1/2, 1/4 or 1/8 of its size that is still
    larger (Pillow's ``draft``, set by :func:`decode_image`)."""
    from PIL import ImageOps

    return _shrunk(_to_uint8_array(ImageOps.exif_transpose(image)), max_side)


def _shrunk_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) scaled, the aspect kept, so that the longer side is at most ``max_side``."""
    scale = max_side / max(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def _shrunk(array: np.ndarray, max_side: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 pixels shrunk with Pillow's Lanczos filter to :func:`_shrunk_size`; an image within
    ``max_side`` is returned as it is."""
    from PIL import Image

    height, width = _shrunk_size(*array.shape[:2], max_side)
    if (height, width) == array.shape[:2]:
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.LANCZOS))


def _shrunk_stack(images: np.ndarray, max_side: int) -> np.ndarray:
    """(N, C, H, W) uint8 images, each shrunk as a ZIP's are (:func:`_shrunk`), into one new array; the same array
    where they are within ``max_side``."""
    height, width = _shrunk_size(*images.shape[2:], max_side)
    if (height, width) == images.shape[2:]:
        return images
    out = np.empty((len(images), images.shape[1], height, width), dtype=np.uint8)
    for index, image in enumerate(images):
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)  # as Pillow takes them: (H, W[, 3])
        shrunk = _shrunk(pixels, max_side)
        out[index] = shrunk[None] if shrunk.ndim == 2 else shrunk.transpose(2, 0, 1)
    return out


def _to_uint8_array(image) -> np.ndarray:  # noqa: ANN001 - a PIL image
    """(H, W) grey or (H, W, 3) colour uint8 pixels. 16-bit grey (PNG's, as in microscopy or scans) is scaled to
    8 bits: Pillow's own conversion clips it, so that every value above 255 (nearly all of them) became white."""
    wide = image.mode.startswith("I;16") or image.mode == "I"  # "I": 16-bit PNGs as older Pillows open them
    if wide and (pixels := np.asarray(image)).max() > 255:
        return np.round(np.clip(pixels, 0, 65535).astype(np.float32) / 257.0).astype(np.uint8)
    return np.asarray(image.convert("L" if _grey(image.mode) else "RGB"))


def _grey(mode: str) -> bool:
    """Whether an image of this Pillow mode is read as one channel (alpha is dropped, as for RGBA)."""
    return mode.startswith("I;16") or mode in ("1", "L", "LA", "La", "I", "F")


def _images_zip(path: Path, _fmt: str, limits: ReadLimits, _columns: Columns) -> Records:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetError(f"the ZIP file cannot be read: {error}") from None
    with archive:
        entries = [e for e in _zip_entries(archive, limits) if image_file(e.filename)]
        if unread := next((e.filename for e in entries if not e.filename.lower().endswith(IMAGE_SUFFIXES)), None):
            raise DatasetError(f"entry {unread!r} is an image in a format this service does not read: convert the "
                               f"images to {IMAGE_FORMATS}")  # fmt: skip
        if not entries:
            raise DatasetError(f"the archive holds no images ({IMAGE_FORMATS}; expected <class>/<image>.png)")
        if len(entries) > limits.max_records:
            raise DatasetError(f"the archive holds more than {limits.max_records} images")
        entries.sort(key=lambda e: e.filename)
        shapes, classes = [], []
        for info in entries:
            parts = PurePosixPath(info.filename).parts
            if len(parts) < 2:
                raise DatasetError(f"entry {info.filename!r} is not inside a class folder (<class>/<image>.png)")
            shapes.append(image_shape(_entry(archive, info), limits, f"entry {info.filename!r}"))
            classes.append(parts[-2])
        # Each image decoded into its place in the dataset's array: before, every decoded image was kept in a list,
        # stacked, then transposed, three copies of the dataset at once (354 MB to read 118 MB of images)
        size = _common_size([shape[:2] for shape in shapes])
        colour = any(shape[2] == 3 for shape in shapes)
        images = np.empty((len(entries), 3 if colour else 1, *size), dtype=np.uint8)
        for index, info in enumerate(entries):
            pixels = decode_image(_entry(archive, info), limits, f"entry {info.filename!r}")
            images[index] = _conform(pixels, size, colour).transpose(2, 0, 1)
    labels, names = _labels(classes, "class folder")
    return Records("image", images=images, labels=labels, label_names=names)


def _entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DatasetError(f"entry {info.filename!r} cannot be read: {error}") from None


def image_file(name: str) -> bool:
    """Whether a file of a class folder is an image, read or refused by its format (a hidden file is neither)."""
    return name.lower().endswith(IMAGE_SUFFIXES + UNREAD_IMAGE_SUFFIXES) and not hidden_entry(name)


def hidden_entry(name: str) -> bool:
    """What a ZIP made on a Mac (Finder's "Compress") adds beside the images: ``__MACOSX/`` with an AppleDouble
    ``._<name>.png`` for each image, and ``.DS_Store``; these are not images, so they are skipped, as is any other
    entry in or under a dot-named folder."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and (parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts))


def _common_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The (H, W) most of the images have (of two as common, the larger): the one every image is resized to. Before,
    the first image's by file name was taken, so that one thumbnail sorted first shrank every photo to its size."""
    counts = Counter(sizes)
    return max(counts, key=lambda size: (counts[size], size[0] * size[1]))


def aspect_box(height: int, width: int, target_h: int, target_w: int) -> tuple[slice, slice]:
    """The rows and columns of a ``height`` x ``width`` image that a crop around its centre to the aspect of
    ``target_h`` x ``target_w`` keeps: what an image of another aspect than a dataset's keeps, in the dataset and
    when embedded by a model trained on it."""
    if height * target_w > target_h * width:  # taller than the target's aspect
        keep = max(1, round(width * target_h / target_w))
        return slice((height - keep) // 2, (height - keep) // 2 + keep), slice(0, width)
    if height * target_w < target_h * width:  # wider
        keep = max(1, round(height * target_w / target_h))
        return slice(0, height), slice((width - keep) // 2, (width - keep) // 2 + keep)
    return slice(0, height), slice(0, width)


def _conform(image: np.ndarray, size: tuple[int, int], colour: bool) -> np.ndarray:
    """Match the dataset's channels and common size, so every record has one shape: an image of another aspect (a
    portrait among landscapes) loses its edges to a centred crop of the common aspect, then is resized. Before, it
    was stretched to the common size: a 3:4 portrait among 4:3 landscapes came out 1.78 times wider for its height."""
    from PIL import Image

    if colour and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    target_h, target_w = size
    rows, cols = aspect_box(*image.shape[:2], target_h, target_w)
    image = image[rows, cols]
    if image.shape[:2] != size:
        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        image = np.asarray(pil.resize((target_w, target_h), Image.Resampling.LANCZOS))
        image = image[:, :, None] if image.ndim == 2 else image
    return image
