"""Errors raised by the format readers: every message names the file, the line and the field."""
from __future__ import annotations


class FormatError(ValueError):
    """An annotation file is malformed.

    Attributes:
        path: the file (or ``<string>``).
        line: 1-based line number (CSV) or 0-based element index (pickles); ``None`` if not known.
        field: the offending column / key, ``None`` if the whole record is wrong.
    """

    def __init__(self, path: object, line: int | None, field: str | None, message: str, unit: str = "line") -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path}: {unit} {line}"
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")
