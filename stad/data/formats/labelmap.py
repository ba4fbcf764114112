"""AVA label map ``.pbtxt`` in both dialects (``item {name id}`` and ``label {name label_id label_type}``).

The official parsers are line based and need ``name`` before ``id``; this one reads each
``item``/``label`` block as a whole, in any field order, also on one line, and names the file and
line of anything it cannot read.
"""
from __future__ import annotations

import re
from pathlib import Path

from stad.io_utils import atomic_write_text
from stad.structures import LabelMap

_BLOCK = re.compile(r"\b(item|label)\s*\{(.*?)\}", re.S)
_FIELD = re.compile(r"(\w+)\s*:\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s\"']+)")


class LabelMapError(ValueError):
    """A label map file could not be parsed; the message names file and line."""


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def parse_labelmap(text: str, source: str = "<string>") -> LabelMap:
    """Parse pbtxt ``text``; classes keep file order."""
    ids: list[int] = []
    names: list[str] = []
    types: list[str] = []
    for block in _BLOCK.finditer(text):
        line = _line_of(text, block.start())
        fields = {key: value.strip("\"'") for key, value in _FIELD.findall(block.group(2))}
        raw_id = fields.get("id", fields.get("label_id"))
        if raw_id is None or "name" not in fields:
            raise LabelMapError(f"{source}:{line}: {block.group(1)} block needs 'name' and 'id'/'label_id'")
        try:
            class_id = int(raw_id)
        except ValueError:
            raise LabelMapError(f"{source}:{line}: field id={raw_id!r} is not an integer") from None
        if class_id in ids:
            raise LabelMapError(f"{source}:{line}: duplicate class id {class_id}")
        ids.append(class_id)
        names.append(fields["name"])
        types.append(fields.get("label_type", ""))
    if not ids:
        raise LabelMapError(f"{source}: no 'item {{...}}' or 'label {{...}}' entries found")
    return LabelMap(tuple(ids), tuple(names), tuple(types) if any(types) else ())


def read_labelmap(path: str | Path) -> LabelMap:
    """Read a ``.pbtxt`` label map file."""
    path = Path(path)
    return parse_labelmap(path.read_text(encoding="utf-8"), str(path))


def format_labelmap(labelmap: LabelMap, dialect: str = "label") -> str:
    """Multi-line pbtxt text in the ``label`` (label_id/label_type) or ``item`` (id) dialect."""
    if dialect not in ("label", "item"):
        raise ValueError(f"dialect must be 'label' or 'item', got {dialect!r}")
    types = labelmap.label_types or ("PERSON_MOVEMENT",) * len(labelmap)
    chunks = []
    for class_id, name, label_type in zip(labelmap.ids, labelmap.names, types):
        if dialect == "item":
            chunks.append(f'item {{\n  name: "{name}"\n  id: {class_id}\n}}\n')
        else:
            chunks.append(f'label {{\n  name: "{name}"\n  label_id: {class_id}\n  label_type: {label_type}\n}}\n')
    return "".join(chunks)


def write_labelmap(labelmap: LabelMap, path: str | Path, dialect: str = "label") -> None:
    """Write ``labelmap`` atomically."""
    atomic_write_text(path, format_labelmap(labelmap, dialect))
