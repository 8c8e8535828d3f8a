"""Which claims of an executed notebook are checked in a cell that does not show their verdict (issue 19, item 3).

A claim is *recorded* by the code cell that calls `.claim("ID", ...)` or `.examine("ID", ...)` with its id as a
literal; it is *visible* when that cell's outputs hold its verdict line: "ID: MARK" (MARK = holds, DOES NOT HOLD,
inconclusive, optionally after "asserted: " or "examined: "), the start of `claims.verdict_line` and also of the
older multi-line `ClaimRecord` repr, so runs made before the verdict lines existed can be counted the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MARKS = {"holds": "holds", "does not hold": "DOES NOT HOLD", "inconclusive": "inconclusive"}


def mark(record: Mapping[str, Any]) -> str:
    """The verdict word(s) a record's line shows."""
    if "verdict" in record:
        return MARKS[record["verdict"]]
    return "holds" if record.get("holds") else "DOES NOT HOLD"


def output_text(cell: Mapping[str, Any]) -> str:
    """Everything a code cell shows as text: streams, text/plain, text/markdown and text/html of its outputs."""
    parts: list[str] = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(_text(out.get("text", "")))
        for mime in ("text/plain", "text/markdown", "text/html"):
            if mime in out.get("data", {}):
                parts.append(_text(out["data"][mime]))
    return "\n".join(parts)


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def recording_cells(cells: list[Mapping[str, Any]], claim_id: str) -> list[int]:
    """Indices of the code cells that call `.claim(` / `.examine(` with `claim_id` as a literal first argument, else
    (a claim checked in a loop over its ids) of the code cells that call one of them and name `claim_id` literally."""
    call = re.compile(r"\.(?:claim|examine)\(\s*f?[\"']" + re.escape(claim_id) + r"[\"']")
    code = [(i, _text(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    direct = [i for i, source in code if call.search(source)]
    named = re.compile(r"[\"']" + re.escape(claim_id) + r"[\"']")
    return direct or [i for i, source in code if named.search(source) and re.search(r"\.(?:claim|examine)\(", source)]


def hidden_verdicts(cells: list[Mapping[str, Any]], records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The ids of `records` whose verdict line is missing from the outputs of the cell that records them.

    A claim recorded by no cell of the notebook (e.g. inside a recipe) counts as hidden unless its line is shown
    somewhere in the notebook.
    """
    hidden = []
    for record in records:
        line = re.compile(re.escape(record["id"]) + r": (?:asserted: |examined: )?" + re.escape(mark(record)))
        where = recording_cells(cells, record["id"]) or [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
        if not any(line.search(output_text(cells[i])) for i in where):
            hidden.append(record["id"])
    return hidden
