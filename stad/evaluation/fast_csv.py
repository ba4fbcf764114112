"""A compiled parser for the common shape of AVA CSVs: plain decimals, integer timestamps.

A decimal with at most 15 digits and no exponent is ``m / 10**k`` with ``m < 2**53`` and
``k <= 22``: both are exact doubles and IEEE division rounds correctly, so the value equals
Python's ``float(text)`` bit for bit. Anything else (exponents, quotes, long digit strings, mixed
column counts, odd characters) makes `parse` return None and the caller falls back to pyarrow.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from numba import njit

_POW10 = np.array([10.0 ** k for k in range(23)])


@njit(cache=True, nogil=True)
def _number(buf, pos, end, pow10):
    """Parse ``[-]digits[.digits]`` in ``buf[pos:end]``; returns (value, ok)."""
    negative = False
    if pos < end and buf[pos] == 45:  # '-'
        negative = True
        pos += 1
    mantissa = 0
    digits = 0
    decimals = 0
    seen_dot = False
    if pos == end:
        return 0.0, False
    while pos < end:
        ch = buf[pos]
        if 48 <= ch <= 57:
            mantissa = mantissa * 10 + (ch - 48)
            digits += 1
            if seen_dot:
                decimals += 1
        elif ch == 46 and not seen_dot:  # '.'
            seen_dot = True
        else:
            return 0.0, False
        pos += 1
    if digits == 0 or digits > 15 or decimals > 22:
        return 0.0, False
    value = mantissa / pow10[decimals]
    return (-value if negative else value), True


@njit(cache=True, nogil=True)
def _integer(buf, pos, end):
    negative = False
    if pos < end and buf[pos] == 45:
        negative = True
        pos += 1
    if pos == end or end - pos > 18:
        return 0, False
    value = 0
    while pos < end:
        ch = buf[pos]
        if not 48 <= ch <= 57:
            return 0, False
        value = value * 10 + (ch - 48)
        pos += 1
    return (-value if negative else value), True


@njit(cache=True, nogil=True)
def _hash(buf, start, end):
    h = np.uint64(1469598103934665603)
    for p in range(start, end):
        h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
    return h


@njit(cache=True, nogil=True)
def _same_bytes(buf, a, b, length):
    for i in range(length):
        if buf[a + i] != buf[b + i]:
            return False
    return True


@njit(cache=True, nogil=True)
def _count_lines(buf, start, stop):
    """Lines in ``buf[start:stop]``: its newlines, plus an unterminated last line."""
    count = 0
    for p in range(start, stop):
        if buf[p] == 10:
            count += 1
    if stop > start and buf[stop - 1] != 10:
        count += 1
    return count


@njit(cache=True, nogil=True)
def _split_fields(buf, pos, stop, n_cols, bounds):
    """Field starts of the line ``buf[pos:stop]`` into ``bounds`` (plus ``stop + 1``); False if the
    line does not have exactly ``n_cols`` fields."""
    count = 0
    bounds[0] = pos
    for p in range(pos, stop):
        if buf[p] == 44:  # ','
            count += 1
            if count >= n_cols:
                return False
            bounds[count] = p + 1
    bounds[n_cols] = stop + 1
    return count + 1 == n_cols


@njit(cache=True, nogil=True)
def _box_ok(x1, y1, x2, y2):
    """The box checks of the careful reader (normalised, ordered corners)."""
    return 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0


@njit(cache=True, nogil=True)
def _parse_segment(buf, start, stop, n_cols, pow10, out, video_code, timestamp, x1, y1, x2, y2, action, score):
    """Parse the lines of ``buf[start:stop]`` (whole lines only) into the columns from row ``out`` on.

    Returns ``(ok, n_rows, spans[V, 2])``: video codes written are local to the segment (numbered
    by first appearance), ``spans`` are the byte ranges of their names in ``buf``. ``ok`` is False
    for anything the careful reader should look at (odd numbers, wrong column counts, boxes
    outside [0, 1] or with swapped corners).
    """
    spans = np.empty((1 << 16, 2), np.int64)
    codes = dict()
    codes[np.uint64(0)] = np.int32(-1)
    n_videos = 0
    last_start, last_end, last_code = -1, -1, -1
    row = out
    pos = start
    bounds = np.empty(9, np.int64)
    coords = np.empty(4, np.float64)
    failed = (False, 0, spans[:0])
    while pos < stop:
        line_end = pos
        while line_end < stop and buf[line_end] != 10:
            line_end += 1
        end = line_end - 1 if line_end > pos and buf[line_end - 1] == 13 else line_end
        if end > pos:
            if not _split_fields(buf, pos, end, n_cols, bounds):
                return failed
            v_start, v_end = bounds[0], bounds[1] - 1
            if v_end == v_start:
                return failed
            if v_end - v_start == last_end - last_start and _same_bytes(buf, v_start, last_start, v_end - v_start):
                code = last_code
            else:
                key = _hash(buf, v_start, v_end)
                if key in codes and codes[key] >= 0:
                    code = codes[key]
                    s0, s1 = spans[code, 0], spans[code, 1]
                    if s1 - s0 != v_end - v_start or not _same_bytes(buf, v_start, s0, v_end - v_start):
                        return failed  # hash clash: let pyarrow do it
                else:
                    if n_videos == len(spans):
                        return failed
                    code = n_videos
                    codes[key] = np.int32(code)
                    spans[code, 0], spans[code, 1] = v_start, v_end
                    n_videos += 1
                last_start, last_end, last_code = v_start, v_end, code
            video_code[row] = code
            t, ok = _integer(buf, bounds[1], bounds[2] - 1)
            if not ok:
                return failed
            timestamp[row] = t
            for f in range(4):
                value, ok = _number(buf, bounds[2 + f], bounds[3 + f] - 1, pow10)
                if not ok:
                    return failed
                coords[f] = value
            if not _box_ok(coords[0], coords[1], coords[2], coords[3]):
                return failed
            x1[row], y1[row], x2[row], y2[row] = coords[0], coords[1], coords[2], coords[3]
            a, ok = _integer(buf, bounds[6], bounds[7] - 1)
            if not ok:
                return failed
            action[row] = a
            value = 1.0
            if n_cols == 8:
                value, ok = _number(buf, bounds[7], bounds[8] - 1, pow10)
                if not ok:
                    return failed
            score[row] = value
            row += 1
        pos = line_end + 1
    return True, row - out, spans[:n_videos].copy()


@njit(cache=True, nogil=True)
def _after_last_newline(buf, start, stop):
    """Index just after the last ``\\n`` in ``buf[start:stop]``, or ``start`` if there is none."""
    for p in range(stop - 1, start - 1, -1):
        if buf[p] == 10:
            return p + 1
    return start


class _Columns:
    """Output columns sized for the most rows the file can hold (untouched pages cost no memory)."""

    def __init__(self, size: int, n_cols: int) -> None:
        rows = (size + 1) // (2 * n_cols) + 1  # a row is at least n_cols one-byte fields, commas, newline
        self.video_code = np.empty(rows, np.int32)
        self.timestamp = np.empty(rows, np.int64)
        self.x1, self.y1, self.x2, self.y2, self.score = (np.empty(rows, np.float64) for _ in range(5))
        self.action = np.empty(rows, np.int64)

    def fields(self) -> tuple[np.ndarray, ...]:
        return self.video_code, self.timestamp, self.x1, self.y1, self.x2, self.y2, self.action, self.score


def _segment_task(buf, start, stop, n_cols, columns: _Columns, previous_end: Future, own_end: Future):
    """Count the segment's lines, publish where the next segment's rows start, then parse.

    Returns ``(ok, first_row, n_rows, spans)``. Lines bound rows from above, so offsets are known
    after a quick count and every segment writes straight into the shared columns.
    """
    try:
        lines = _count_lines(buf, start, stop)
        first_row = previous_end.result()
        own_end.set_result(first_row + lines)
    except BaseException as exc:  # never leave the next segment waiting
        own_end.set_exception(exc)
        raise
    if first_row + lines > len(columns.action):
        return False, first_row, 0, None
    ok, n, spans = _parse_segment(buf, start, stop, n_cols, _POW10, first_row, *columns.fields())
    return ok, first_row, n, spans


def _read_and_parse(path: str, n_cols: int, segment_bytes: int, workers: int) -> tuple[np.ndarray, _Columns, list]:
    """Read ``path`` segment by segment; each segment's whole lines are parsed on a worker thread
    while the next one is read (the parser releases the GIL), so disk and parsing overlap."""
    size = os.path.getsize(path)
    buf = np.empty(size, np.uint8)
    columns = _Columns(size, n_cols)
    view = memoryview(buf)
    futures = []
    previous_end: Future = Future()
    previous_end.set_result(0)
    with open(path, "rb", buffering=0) as handle, ThreadPoolExecutor(workers) as pool:
        filled = parsed_to = 0
        while filled < size:
            got = handle.readinto(view[filled:min(size, filled + segment_bytes)])
            if not got:
                raise OSError(f"{path}: file shrank while being read ({filled} of {size} bytes)")
            filled += got
            cut = size if filled == size else _after_last_newline(buf, parsed_to, filled)
            if cut > parsed_to:
                own_end: Future = Future()
                futures.append(pool.submit(_segment_task, buf, parsed_to, cut, n_cols, columns, previous_end, own_end))
                previous_end, parsed_to = own_end, cut
        return buf, columns, [future.result() for future in futures]


def parse(path: str, n_cols: int, segment_bytes: int = 32 << 20, workers: int | None = None) -> tuple | None:
    """``(video_names, video_code, timestamp, x1, y1, x2, y2, action, score)`` or None (use pyarrow).

    Video names are numbered by first appearance in the file. ``workers`` parser threads (default:
    the CPU count) work on ``segment_bytes`` pieces while the file is still being read.
    """
    buf, columns, segments = _read_and_parse(path, n_cols, segment_bytes, workers or os.cpu_count() or 1)
    if not all(segment[0] for segment in segments):
        return None
    numbers: dict[str, int] = {}
    for _, first_row, n, spans in segments:
        try:
            local = [bytes(buf[s:e]).decode("utf-8") for s, e in spans]
        except UnicodeDecodeError:
            return None
        lookup = np.array([numbers.setdefault(name, len(numbers)) for name in local] or [0], np.int32)
        part = columns.video_code[first_row:first_row + n]
        part[:] = lookup[part]
    del buf
    names = np.array(list(numbers), dtype=object)
    pieces = [(first_row, n) for _, first_row, n, _ in segments]
    starts = np.cumsum([0] + [n for _, n in pieces])
    if all(first == start for (first, _), start in zip(pieces, starts)):
        return (names, *(field[:starts[-1]] for field in columns.fields()))
    # blank lines left gaps between segments: close them (rare)
    return (names, *(np.concatenate([field[f:f + n] for f, n in pieces]) for field in columns.fields()))
