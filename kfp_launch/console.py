"""The only module that prints.

On a terminal it uses rich (colours, tables); in CI it writes plain lines, one per event, that
GitLab's job log renders (ANSI colours only, no cursor movement, no OSC 8 hyperlinks, which GitLab's
log viewer garbles: lindell/multi-gitter#314; docs/gitlab-notes.md, 'Job log output'). Collapsible-section
markers (https://docs.gitlab.com/ci/jobs/job_logs/#custom-collapsible-sections) are written raw to the
stream, never through rich, which would drop the ``\\r`` and highlight the timestamp (observed with
rich 15.0.0: docs/gitlab-notes.md, 'Job log output').

Human progress goes to ``out`` (stdout); errors and warnings go to ``err`` (stderr). Machine-
readable output (``--json``, ``compile -o -``) is written with :meth:`Console.data`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import IO, Self

from rich.console import Console as RichConsole
from rich.markup import escape
from rich.table import Table

_SECTION_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")


class Console:
    """Writes what kfp-launch says to the user.

    Args:
        out: the stream for progress and results (stdout).
        err: the stream for warnings and errors (stderr).
        in_gitlab: true inside a GitLab job: colours forced on (the log renders ANSI SGR) but never
            interactive, and collapsible sections are emitted.
        color: force colours on/off; None lets rich decide (TTY, ``NO_COLOR``...).
        width: the line width for tables, in characters (None: the terminal's, or 120 in CI).
        clock: wall clock in seconds since the epoch, for section timestamps.
    """

    def __init__(
        self,
        *,
        out: IO[str],
        err: IO[str],
        in_gitlab: bool = False,
        color: bool | None = None,
        width: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._out_stream = out
        self.in_gitlab = in_gitlab
        self._clock = clock
        force = True if in_gitlab and color is None else color
        common = {
            "force_terminal": force,
            "force_interactive": False if in_gitlab else None,
            "no_color": color is False,
            "width": width or (120 if in_gitlab else None),
            "highlight": False,
            "soft_wrap": True,
        }
        self._out = RichConsole(file=out, **common)  # type: ignore[arg-type]  # rich's kwargs are typed loosely
        self._err = RichConsole(file=err, stderr=True, **common)  # type: ignore[arg-type]
        self._warned: set[str] = set()
        self._secrets: list[str] = []
        self._open_sections: list[str] = []

    def mask(self, *values: str | None) -> None:
        """Never print these values (tokens, cookies): every output replaces them with ``[MASKED]``.
        A cookie ``name=value; other=value2`` also masks each value alone."""
        for value in values:
            if not value:
                continue
            parts = [value, *(p.split("=", 1)[1] for p in value.split(";") if "=" in p)]
            self._secrets.extend(p.strip() for p in parts if len(p.strip()) >= 4)
        self._secrets.sort(key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[MASKED]")
        return text

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values this console masks (for what another process writes: a local run's log)."""
        return tuple(self._secrets)

    def redact(self, text: str) -> str:
        """``text`` with every masked value replaced (for what is written elsewhere: reports, notes)."""
        return self._clean(text)

    @property
    def is_interactive(self) -> bool:
        """True on a terminal where live redraws are fine (never in CI)."""
        return bool(self._out.is_terminal and self._out.is_interactive and not self.in_gitlab)

    def line(self, text: str = "", *, style: str | None = None, once_key: str | None = None) -> None:
        """Print one line of progress (``text`` is plain text, not rich markup); with ``once_key``, only
        the first time."""
        if once_key is not None:
            if once_key in self._warned:
                return
            self._warned.add(once_key)
        self._out.print(escape(self._clean(text)), style=style, emoji=False)  # ":id:" in a log stays text
        self._out_stream.flush()

    def markup(self, text: str) -> None:
        """Print one line written in rich markup (callers escape user data)."""
        self._out.print(self._clean(text))
        self._out_stream.flush()

    def url(self, label: str, url: str) -> None:
        """Print ``label: URL`` with the URL bare, so GitLab turns it into a link (no OSC 8)."""
        self._out_stream.write(self._clean(f"{label}: {url}\n"))
        self._out_stream.flush()

    def warn(self, text: str, *, once_key: str | None = None) -> None:
        """Print ``warning: text`` on stderr; with ``once_key``, only the first time."""
        if once_key is not None:
            if once_key in self._warned:
                return
            self._warned.add(once_key)
        self._err.print(f"[bold yellow]warning:[/] {escape(self._clean(text))}")

    def error(self, message: str, hint: str = "") -> None:
        """Print ``error: message`` and ``hint: hint`` on stderr, after closing any open GitLab section: an
        error is never hidden in a collapsed one."""
        for name in reversed(self._open_sections):
            self.section_end(name)
        self._err.print(f"[bold red]error:[/] {escape(self._clean(message))}")
        if hint:
            self._err.print(f"[bold]hint:[/] {escape(self._clean(hint))}")

    def data(self, text: str) -> None:
        """Write machine-readable text to stdout verbatim (JSON, YAML)."""
        text = self._clean(text)
        self._out_stream.write(text if text.endswith("\n") else text + "\n")
        self._out_stream.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        title: str | None = None,
        whole: Sequence[str] = (),
    ) -> None:
        """Print a table; cells are plain text. The ``whole`` columns (ids, links) are never wrapped or cut,
        so they can be copied; the others make room."""
        table = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
        for index, column in enumerate(columns):
            if column in whole:
                longest = max((len(row[index]) for row in rows), default=0)
                table.add_column(column, no_wrap=True, min_width=max(longest, len(column)))
            else:
                table.add_column(column, overflow="fold")  # wrapped, never cut: every value stays readable
        for row in rows:
            table.add_row(*(escape(self._clean(cell)) for cell in row))
        self._out.print(table)
        self._out_stream.flush()

    def stamp(self) -> str:
        """The local wall-clock time as ``HH:MM:SS``, for progress lines."""
        return time.strftime("%H:%M:%S", time.localtime(self._clock()))

    def live(self) -> LiveTable:
        """A table redrawn in place on a terminal (never used in CI: see :attr:`is_interactive`)."""
        return LiveTable(self._out, self._clean)

    def section_start(self, name: str, header: str, *, collapsed: bool = False, announce: bool = True) -> None:
        """Open a GitLab collapsible section; elsewhere print the header when ``announce``."""
        if not self.in_gitlab:
            if announce:
                self.markup(f"[bold]{escape(header)}[/]")
            return
        flag = "[collapsed=true]" if collapsed else ""
        safe = _SECTION_NAME_RE.sub("_", name)
        self._open_sections.append(name)
        self._out_stream.write(
            f"\x1b[0Ksection_start:{int(self._clock())}:{safe}{flag}\r\x1b[0K{self._clean(header)}\n"
        )
        self._out_stream.flush()

    def section_end(self, name: str) -> None:
        """Close a GitLab collapsible section (no-op outside GitLab)."""
        if not self.in_gitlab or name not in self._open_sections:
            return
        self._open_sections.remove(name)
        safe = _SECTION_NAME_RE.sub("_", name)
        self._out_stream.write(f"\x1b[0Ksection_end:{int(self._clock())}:{safe}\r\x1b[0K\n")
        self._out_stream.flush()


class LiveTable:
    """A rich ``Live`` display of task states (context manager); :meth:`show` replaces the table."""

    def __init__(self, console: RichConsole, clean: Callable[[str], str] = lambda text: text) -> None:
        from rich.live import Live

        self._clean = clean
        self._live = Live(console=console, refresh_per_second=4, transient=False, auto_refresh=False)

    def __enter__(self) -> Self:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def show(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Redraw the table with these columns and rows of plain-text cells."""
        table = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(escape(self._clean(cell)) for cell in row))
        self._live.update(table, refresh=True)
