"""Fast, strict readers for AVA-style CSVs as the evaluator needs them.

The fast path parses with pyarrow (multi-threaded, correctly rounded floats, so values equal
Python's ``float(text)``). Anything unusual (a parse error, a null, a box outside [0, 1], mixed
column counts, ``902.0`` timestamps) sends the file through a row-by-row reader that either accepts
it or raises `AvaCsvError` naming the file, line and field.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIELDS = ("video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "score")


class AvaCsvError(ValueError):
    """Malformed AVA CSV input; the message names file, line and field."""


@dataclass(frozen=True)
class BoxRows:
    """Rows of an AVA CSV in file order (only rows with a box; 2-column rows go to ``empty_keys``).

    Attributes:
        path: source file.
        video_names: unique video ids; ``video_code`` indexes into it.
        video_code: int32 ``[N]``.
        timestamp: int64 ``[N]``.
        x1, y1, x2, y2: float64 ``[N]`` normalised corners.
        action_id: int64 ``[N]`` dataset class ids.
        score: float64 ``[N]`` column 7 (the person id for ground truth), 1.0 when absent.
        empty_keys: ``(video, t)`` keys given by 2-column rows (keyframes without boxes).
    """

    path: str
    video_names: np.ndarray
    video_code: np.ndarray
    timestamp: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    action_id: np.ndarray
    score: np.ndarray
    empty_keys: tuple[tuple[str, int], ...] = ()

    def __len__(self) -> int:
        return len(self.action_id)

    def take(self, mask: np.ndarray) -> "BoxRows":
        """Rows where ``mask`` is true, in file order (``self`` when nothing is dropped)."""
        if mask.all():
            return self
        return BoxRows(self.path, self.video_names, self.video_code[mask], self.timestamp[mask],
                       self.x1[mask], self.y1[mask], self.x2[mask], self.y2[mask],
                       self.action_id[mask], self.score[mask], self.empty_keys)


def _first_line_columns(path: Path) -> int:
    with open(path, newline="") as handle:
        for line in handle:
            if line.strip():
                return len(next(csv.reader([line])))
    return 0


def read_box_csv(path: str | Path, allowed_columns: tuple[int, ...] = (7, 8)) -> BoxRows:
    """Read an AVA GT or prediction CSV (no header). ``allowed_columns`` may include 2."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    ncols = _first_line_columns(path)
    if ncols == 0:
        return _empty_rows(path)
    if ncols in (7, 8) and ncols in allowed_columns:
        rows = _read_fast(path, ncols)
        if rows is not None:
            return rows
    return _read_slow(path, allowed_columns)


def _empty_rows(path: Path) -> BoxRows:
    f = np.zeros(0, np.float64)
    return BoxRows(str(path), np.array([], dtype=object), np.zeros(0, np.int32), np.zeros(0, np.int64),
                   f, f, f, f, np.zeros(0, np.int64), f)


def _read_fast(path: Path, ncols: int) -> BoxRows | None:
    """Compiled parse of plain files, else pyarrow; None when the file needs the careful reader."""
    from stad.evaluation import fast_csv

    parsed = fast_csv.parse(str(path), ncols)
    if parsed is not None:  # the compiled parser already checked every box (as `_first_bad_row`)
        return BoxRows(str(path), *parsed)
    return _read_pyarrow(path, ncols)


def _read_pyarrow(path: Path, ncols: int) -> BoxRows | None:
    """pyarrow parse; None when the file needs the careful reader (errors, odd values)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = list(FIELDS[:ncols])
    types = {"video_id": pa.dictionary(pa.int32(), pa.string()), "timestamp": pa.int64(),
             "action_id": pa.int64()}
    types.update({name: pa.float64() for name in ("x1", "y1", "x2", "y2", "score")})
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, block_size=32 << 20),
            parse_options=pacsv.ParseOptions(delimiter=","),
            convert_options=pacsv.ConvertOptions(column_types={n: types[n] for n in names},
                                                 strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if any(table.column(n).null_count for n in names):
        return None
    timestamp = table.column("timestamp").to_numpy()
    video = table.column("video_id").unify_dictionaries().combine_chunks()
    columns = {n: table.column(n).to_numpy() for n in names[2:]}
    score = columns.get("score", np.ones(len(timestamp), np.float64))
    rows = BoxRows(str(path), np.asarray(video.dictionary.to_pylist(), dtype=object),
                   video.indices.to_numpy().astype(np.int32, copy=False), timestamp.astype(np.int64, copy=False),
                   columns["x1"], columns["y1"], columns["x2"], columns["y2"],
                   columns["action_id"].astype(np.int64, copy=False), score.astype(np.float64, copy=False))
    return rows if _first_bad_row(rows) is None else None


def _first_bad_row(rows: BoxRows) -> int | None:
    """Index of the first row whose box or score is out of range, else None."""
    x1, y1, x2, y2 = rows.x1, rows.y1, rows.x2, rows.y2
    ok = (x1 >= 0) & (x1 <= 1) & (y1 >= 0) & (y1 <= 1) & (x2 >= 0) & (x2 <= 1) & (y2 >= 0) & (y2 <= 1)
    ok &= (x1 <= x2) & (y1 <= y2) & np.isfinite(rows.score)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else None


def _parse_timestamp(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError("not a whole number of seconds / frames")
    return int(value)


def _check_row(row: list[str], where: str) -> tuple:
    """Parse one 7/8-column row; raise AvaCsvError naming the field."""
    def fail(field: str, value: str, why: str) -> AvaCsvError:
        return AvaCsvError(f"{where}: field '{field}' = {value!r}: {why}")

    if not row[0]:
        raise fail("video_id", row[0], "empty video id")
    try:
        timestamp = _parse_timestamp(row[1])
    except ValueError as exc:
        raise fail("timestamp", row[1], f"not an integer timestamp ({exc})") from None
    coords = []
    for name, text in zip(FIELDS[2:6], row[2:6]):
        try:
            value = float(text)
        except ValueError:
            raise fail(name, text, "not a number") from None
        if not 0.0 <= value <= 1.0:
            raise fail(name, text, "box coordinates must be normalised to [0, 1]")
        coords.append(value)
    if coords[0] > coords[2]:
        raise fail("x1", row[2], f"x1 > x2 ({row[4]})")
    if coords[1] > coords[3]:
        raise fail("y1", row[3], f"y1 > y2 ({row[5]})")
    try:
        action_id = int(row[6])
    except ValueError:
        raise fail("action_id", row[6], "not an integer class id") from None
    score = 1.0
    if len(row) == 8:
        try:
            score = float(row[7])
        except ValueError:
            raise fail("score", row[7], "not a number") from None
        if not math.isfinite(score):
            raise fail("score", row[7], "score must be finite")
    return (row[0], timestamp, *coords, action_id, score)


def _read_slow(path: Path, allowed_columns: tuple[int, ...]) -> BoxRows:
    parsed: list[tuple] = []
    empty_keys: list[tuple[str, int]] = []
    with open(path, newline="") as handle:
        for lineno, row in enumerate(csv.reader(handle), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            where = f"{path}:{lineno}"
            if len(row) not in allowed_columns:
                hint = " (a header line? AVA CSVs have none)" if lineno == 1 else ""
                raise AvaCsvError(f"{where}: expected {' or '.join(map(str, allowed_columns))} columns, "
                                  f"got {len(row)}{hint}")
            if len(row) == 2:
                try:
                    empty_keys.append((row[0], _parse_timestamp(row[1])))
                except ValueError as exc:
                    raise AvaCsvError(f"{where}: field 'timestamp' = {row[1]!r}: {exc}") from None
                continue
            parsed.append(_check_row(row, where))
    if not parsed:
        rows = _empty_rows(path)
        return BoxRows(**{**rows.__dict__, "empty_keys": tuple(empty_keys)})
    videos, timestamps, x1, y1, x2, y2, actions, scores = zip(*parsed)
    names, codes = np.unique(np.asarray(videos, dtype=object), return_inverse=True)
    return BoxRows(str(path), names, codes.astype(np.int32), np.asarray(timestamps, np.int64),
                   np.asarray(x1, np.float64), np.asarray(y1, np.float64), np.asarray(x2, np.float64),
                   np.asarray(y2, np.float64), np.asarray(actions, np.int64), np.asarray(scores, np.float64),
                   tuple(empty_keys))


def read_exclusions(path: str | Path | None) -> set[tuple[str, int]]:
    """``video,timestamp`` rows (2 columns, no header) -> set of keys.

    Deliberately not `stad.data.formats.ava.read_excluded`: that reader strips whitespace around
    fields, the official evaluator does not, and keys must match exactly as they do there.
    """
    if path is None:
        return set()
    path = Path(path)
    keys = set()
    with open(path, newline="") as handle:
        for lineno, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) != 2:
                raise AvaCsvError(f"{path}:{lineno}: excluded-timestamps rows need 2 columns "
                                  f"(video_id,timestamp), got {len(row)}")
            try:
                keys.add((row[0], _parse_timestamp(row[1])))
            except ValueError as exc:
                raise AvaCsvError(f"{path}:{lineno}: field 'timestamp' = {row[1]!r}: {exc}") from None
    return keys
