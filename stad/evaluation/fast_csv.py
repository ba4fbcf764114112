"""A compiled parser for the common shape of AVA CSVs: plain decimals, integer timestamps.

A decimal with at most 15 digits and no exponent is ``m / 10**k`` with ``m < 2**53`` and
``k <= 22``: both are exact doubles and IEEE division rounds correctly, so the value equals
Python's ``float(text)`` bit for bit. Anything else (exponents, quotes, long digit strings, mixed
column counts, odd characters) makes `parse` return None and the caller falls back to pyarrow.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_POW10 = np.array([10.0 ** k for k in range(23)])


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _hash(buf, start, end):
    h = np.uint64(1469598103934665603)
    for p in range(start, end):
        h = (h ^ np.uint64(buf[p])) * np.uint64(1099511628211)
    return h


@njit(cache=True)
def _same_bytes(buf, a, b, length):
    for i in range(length):
        if buf[a + i] != buf[b + i]:
            return False
    return True


@njit(cache=True)
def _parse(buf, n_lines, n_cols, pow10):
    """Returns (ok, n_rows, video_code, first_span[V,2], timestamp, numbers[N,5], action)."""
    video_code = np.empty(n_lines, np.int32)
    timestamp = np.empty(n_lines, np.int64)
    numbers = np.empty((n_lines, 5), np.float64)
    action = np.empty(n_lines, np.int64)
    spans = np.empty((n_lines if n_lines < 1 << 16 else 1 << 16, 2), np.int64)
    codes = dict()
    codes[np.uint64(0)] = np.int32(-1)
    n_videos = 0
    last_start, last_end, last_code = -1, -1, -1
    row = 0
    pos = 0
    size = len(buf)
    bounds = np.empty(9, np.int64)
    while pos < size:
        line_end = pos
        while line_end < size and buf[line_end] != 10:
            line_end += 1
        stop = line_end - 1 if line_end > pos and buf[line_end - 1] == 13 else line_end
        if stop > pos:
            # split into fields
            count = 0
            bounds[0] = pos
            for p in range(pos, stop):
                if buf[p] == 44:
                    count += 1
                    if count > 7:
                        return False, row, video_code, spans, timestamp, numbers, action
                    bounds[count] = p + 1
            if count + 1 != n_cols:
                return False, row, video_code, spans, timestamp, numbers, action
            bounds[n_cols] = stop + 1
            v_start, v_end = bounds[0], bounds[1] - 1
            if v_end == v_start:
                return False, row, video_code, spans, timestamp, numbers, action
            if v_end - v_start == last_end - last_start and _same_bytes(buf, v_start, last_start, v_end - v_start):
                code = last_code
            else:
                key = _hash(buf, v_start, v_end)
                if key in codes and codes[key] >= 0:
                    code = codes[key]
                    s0, s1 = spans[code, 0], spans[code, 1]
                    if s1 - s0 != v_end - v_start or not _same_bytes(buf, v_start, s0, v_end - v_start):
                        return False, row, video_code, spans, timestamp, numbers, action  # hash clash
                else:
                    if n_videos == len(spans):
                        return False, row, video_code, spans, timestamp, numbers, action
                    code = n_videos
                    codes[key] = np.int32(code)
                    spans[code, 0], spans[code, 1] = v_start, v_end
                    n_videos += 1
                last_start, last_end, last_code = v_start, v_end, code
            video_code[row] = code
            t, ok = _integer(buf, bounds[1], bounds[2] - 1)
            if not ok:
                return False, row, video_code, spans, timestamp, numbers, action
            timestamp[row] = t
            for f in range(4):
                value, ok = _number(buf, bounds[2 + f], bounds[3 + f] - 1, pow10)
                if not ok:
                    return False, row, video_code, spans, timestamp, numbers, action
                numbers[row, f] = value
            a, ok = _integer(buf, bounds[6], bounds[7] - 1)
            if not ok:
                return False, row, video_code, spans, timestamp, numbers, action
            action[row] = a
            if n_cols == 8:
                value, ok = _number(buf, bounds[7], bounds[8] - 1, pow10)
                if not ok:
                    return False, row, video_code, spans, timestamp, numbers, action
                numbers[row, 4] = value
            else:
                numbers[row, 4] = 1.0
            row += 1
        pos = line_end + 1
    return True, row, video_code, spans[:n_videos], timestamp, numbers, action


@njit(cache=True)
def _count_lines(buf):
    count = 1
    for ch in buf:
        if ch == 10:
            count += 1
    return count


def parse(path: str, n_cols: int) -> tuple | None:
    """``(video_names, video_code, timestamp, x1, y1, x2, y2, action, score)`` or None (use pyarrow)."""
    buf = np.fromfile(path, dtype=np.uint8)
    n_lines = _count_lines(buf)
    ok, n, code, spans, timestamp, numbers, action = _parse(buf, n_lines, n_cols, _POW10)
    if not ok:
        return None
    try:
        names = np.array([bytes(buf[s:e]).decode("utf-8") for s, e in spans], dtype=object)
    except UnicodeDecodeError:
        return None
    cols = [np.ascontiguousarray(numbers[:n, i]) for i in range(5)]
    return names, code[:n], timestamp[:n], cols[0], cols[1], cols[2], cols[3], action[:n], cols[4]
