"""Tables the CLI prints, whole: an id is copied from them into the next command, so no
cell is ever cut. On a terminal, a rich table whose long cells wrap (fold) rather than end
in an ellipsis; piped or redirected, plain space-aligned columns that `awk` and `cut` read;
with `--json`, a JSON list of objects keyed by the column names."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def print_table(
    console: Console,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    as_json: bool = False,
) -> None:
    if as_json:
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2))
    elif console.is_terminal:
        table = Table(*columns)
        for column in table.columns:
            column.overflow = "fold"
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        print(plain(columns, rows))


def plain(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Space-aligned columns, the last one unpadded; empty cells show as "-"."""
    cells = [list(columns)] + [[cell or "-" for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]))
    return "\n".join(lines)
