"""Plain aligned text tables of metrics for the terminal."""

from __future__ import annotations

from collections.abc import Mapping

_COLUMN_GAP = "  "


def _percent(value: float | None) -> str:
    """0.3721 -> '37.2'; missing or negative (COCO's -1, no such objects) -> '-'."""
    if value is None or value < 0:
        return "-"
    return f"{100.0 * value:.1f}"


def format_table(header: list[str], body: list[list[str]], title: str | None = None, *,
                 markdown: bool = False) -> str:
    """Left-align the first column, right-align the others, and rule off the header.

    markdown: a GitHub table (| cells |, the rule marks the alignment) instead of plain text.
    """
    if markdown:
        rule = ["---", *("---:" for _ in header[1:])]
        lines = ["| " + " | ".join(cells) + " |" for cells in [header, rule, *body]]
        return "\n".join([title, *lines] if title else lines)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        return _COLUMN_GAP.join([first, *rest]).rstrip()

    rule = _COLUMN_GAP.join("-" * width for width in widths)
    lines = [line(header), rule, *(line(row) for row in body)]
    return "\n".join([title, *lines] if title else lines)


def format_metrics_table(
    rows: Mapping[str, Mapping[str, float]] | Mapping[str, float],
    *,
    title: str | None = None,
) -> str:
    """Metrics in [0, 1] as a text table of percentages with 1 decimal.

    Args:
        rows: a flat {metric: value}, shown as two columns (metric, value); or
            {row name: {metric: value}}, e.g. teacher and student, shown one row per entry with
            a column per metric in first-seen order ('-' where a row lacks one).
        title: an optional first line.
    """
    nested = [isinstance(value, Mapping) for value in rows.values()]
    if any(nested) and not all(nested):
        raise TypeError("format_metrics_table: give {metric: value} or {row: {metric: value}}, not a mix")
    if not any(nested):
        body = [[name, _percent(value)] for name, value in rows.items()]
        return format_table(["metric", "value"], body, title)
    metrics = list(dict.fromkeys(name for row in rows.values() for name in row))
    body = [[row_name, *(_percent(row.get(name)) for name in metrics)] for row_name, row in rows.items()]
    return format_table(["", *metrics], body, title)
