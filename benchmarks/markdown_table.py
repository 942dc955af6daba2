"""The Markdown table every benchmark script prints its figures as (shared by bench.py and code_shape.py)."""

from __future__ import annotations

import sys


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """Print ``### TITLE`` and a Markdown table of ROWS under HEADER on stdout, flushed."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()
