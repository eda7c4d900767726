"""Printing command results as aligned tables, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any, Iterable, Sequence


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(document: Any) -> str:
    return json.dumps(document, indent=2, default=_default)


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], right_align: Iterable[int] = ()) -> str:
    body = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    right = set(right_align)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths])] + [line(r) for r in body])


def to_csv(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()
