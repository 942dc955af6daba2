"""Showing a run's progress: one line per state change in CI, a live task table on a terminal."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Self

from kfp_launch.console import Console, LiveTable
from kfp_launch.models import RunStatus
from kfp_launch.states import RunState

_STYLES = {
    RunState.SUCCEEDED: "green",
    RunState.FAILED: "red",
    RunState.CANCELED: "yellow",
    RunState.CANCELING: "yellow",
    RunState.SKIPPED: "yellow",
}


class _Display:
    """A context manager that owns a live table on an interactive terminal (never in CI)."""

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self._console = console
        self._live_wanted = console.is_interactive if live is None else live
        self._stack = ExitStack()
        self._table: LiveTable | None = None

    def __enter__(self) -> Self:
        if self._live_wanted:
            self._table = self._stack.enter_context(self._console.live())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def note(self, text: str) -> None:
        """Print a line about the wait itself (retries, outages)."""
        self._console.line(f"{self._console.stamp()} {text}", style="dim")


class RunProgress(_Display):
    """Prints what changed since the last :meth:`update` (context manager: owns the live table).

    Args:
        console: where to print.
        live: use a live table (default: when the console is an interactive terminal, never in CI).
    """

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        super().__init__(console, live=live)
        self._run_state = ""
        self._task_states: dict[str, str] = {}

    def update(self, statuses: Mapping[str, RunStatus]) -> None:
        """Show the (only) run's state and each task's state if they changed."""
        status = next(iter(statuses.values()))
        changed = [t for t in status.tasks if self._task_states.get(t.name) != t.state]
        run_changed = status.state != self._run_state
        self._run_state = status.state
        for task in changed:
            self._task_states[task.name] = task.state
        if self._table is not None:
            if run_changed or changed:
                rows = [
                    [t.name, t.state, f"{t.duration_s:.0f}s" if t.duration_s is not None else ""] for t in status.tasks
                ]
                self._table.show(f"run {status.state}", ("task", "state", "time"), rows)
            return
        if run_changed:
            self._console.line(f"{self._console.stamp()} run {status.state}", style=_STYLES.get(status.state))
        for task in changed:
            took = f" ({task.duration_s:.0f}s)" if task.duration_s is not None else ""
            self._console.line(
                f"{self._console.stamp()}   task {task.name} {task.state}{took}", style=_STYLES.get(task.state)
            )


class RunsProgress(_Display):
    """Progress of several runs at once: one line per run state change in CI, a live table on a terminal.

    Args:
        console: where to print.
        jobs: run id -> job name, in display order.
        live: use a live table (default: when the console is an interactive terminal, never in CI).
    """

    def __init__(self, console: Console, jobs: dict[str, str], *, live: bool | None = None) -> None:
        super().__init__(console, live=live)
        self._jobs = jobs
        self._states: dict[str, str] = {}

    def update(self, statuses: Mapping[str, RunStatus]) -> None:
        """Show each run whose state changed."""
        changed = [s for s in statuses.values() if self._states.get(s.run_id) != s.state]
        for status in changed:
            self._states[status.run_id] = status.state
        if self._table is not None:
            if changed:
                rows = [[job, self._states.get(run_id, RunState.PENDING), run_id] for run_id, job in self._jobs.items()]
                done = sum(1 for s in statuses.values() if s.is_terminal)
                self._table.show(f"{done}/{len(self._jobs)} runs finished", ("job", "state", "run"), rows)
            return
        for status in changed:
            job = self._jobs.get(status.run_id, status.name)
            self._console.line(f"{self._console.stamp()} {job} {status.state}", style=_STYLES.get(status.state))


def progress_for(console: Console, jobs: dict[str, str]) -> RunProgress | RunsProgress:
    """The display of a wait: one run's tasks (:class:`RunProgress`), or several runs' states
    (:class:`RunsProgress`, one line per run, or a table of runs on a terminal).

    Args:
        console: where to print.
        jobs: run id -> job name, in display order.
    """
    return RunProgress(console) if len(jobs) == 1 else RunsProgress(console, jobs)
