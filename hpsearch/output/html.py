"""The terminal's tables as HTML, for a Jupyter notebook: the same rich Table (title, columns,
cells, caption) written as a small <table>, so a notebook shows what the CLI prints."""

from __future__ import annotations

import html

from rich.table import Table
from rich.text import Text


def _text(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def table_html(table: Table) -> str:
    """`table` as an HTML table: its title as the caption, its caption as lines below; numbers
    right-aligned as in the terminal."""
    parts = ["<table>"]
    if table.title:
        parts.append(f'<caption style="text-align:left">{html.escape(_text(table.title))}</caption>')
    aligns = [f' style="text-align:{c.justify}"' if c.justify in ("right", "center") else "" for c in table.columns]
    header = "".join(f"<th{a}>{html.escape(_text(c.header))}</th>" for c, a in zip(table.columns, aligns, strict=True))
    parts.append(f"<thead><tr>{header}</tr></thead><tbody>")
    for row in zip(*(c.cells for c in table.columns), strict=True):
        cells = "".join(f"<td{a}>{html.escape(_text(v))}</td>" for v, a in zip(row, aligns, strict=True))
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    if table.caption:
        parts += [f"<div>{html.escape(line)}</div>" for line in _text(table.caption).splitlines()]
    return "".join(parts)


def lines_html(lines: list[str], label: str) -> str:
    """Warnings or notes under a table: one line each, labelled."""
    return "".join(f"<div><b>{html.escape(label)}:</b> {html.escape(line)}</div>" for line in lines)
