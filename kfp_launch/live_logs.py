"""Live task logs (``--logs live``): while a run's tasks execute, their new log lines go to the job log,
each prefixed with its task, masked like everything else, within budgets.

Facts this relies on (docs/kfp-backend-notes.md, 'Task logs'):

- the log endpoint ``GET /apis/v1alpha1/runs/{run}/nodes/{pod}/log`` answers a pod's whole ``main``
  container log on every read (``follow`` is never set: kubeflow/pipelines 2.17.0
  backend/src/apiserver/server/run_log_server.go), so what is new is what follows the lines already taken;
  a read made while the task writes may end mid-line, and that part is taken at the next read;
- the user's output is in the executor pod, whose name holds ``system-container-impl``
  (:data:`kfp_launch.failure_logs.EXECUTOR_MARK`); a task without one has no live log;
- backends after 2.17 may refuse the read with 403 (kubeflow/pipelines#13684, the ``readLog`` check).

Rules, so a chatty task cannot flood the job log or the API server:

- reads happen only on a poll tick (after the runs' statuses were read), at most one per task per tick,
  and for at most :attr:`LogBudget.tasks_at_once` tasks per tick: ended tasks first (their last lines),
  then the tasks read least recently, so with more running tasks than that (``--all``, a ParallelFor)
  each is read in turn and its lines come a few polls late, none lost;
- a task is read while RUNNING, and once more when it has ended, for the lines written between the
  last read and its end; a task that ran entirely between two ticks is read once, after it ended; a
  task already ended when the wait began (``watch`` of an old run) is not read;
- at most :attr:`LogBudget.lines_per_tick` lines per task per tick (the newest; the others are counted
  and said skipped), :attr:`LogBudget.task_bytes` per task (then it is read again only when it ends, to
  count what was skipped) and :attr:`LogBudget.job_bytes` in all, a quarter of GitLab's default 4 MiB job
  log limit (docs.gitlab.com, 'Maximum job log file size'); each skip says how many lines and where the
  whole log is (the run's page);
- a 403 turns live logs off with one warning; any other failed read is tried again at the next tick.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kfp_launch.console import Console
from kfp_launch.errors import KfpAuthError, KfpLaunchError
from kfp_launch.failure_logs import EXECUTOR_MARK
from kfp_launch.models import RunStatus, TaskResult
from kfp_launch.states import RunState

READ_TIMEOUT_S = 10.0
"""A log read that takes longer is given up until the next tick (the wait must go on)."""

_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class LogBudget:
    """How much of the tasks' logs goes to the job log (bytes are UTF-8 bytes of printed lines).

    Attributes:
        lines_per_tick: lines printed per task per poll tick; more are skipped (the newest are kept).
        task_bytes: bytes printed per task; then its live log stops and is counted at its end.
        job_bytes: bytes printed in all by one wait; then live logs stop (GitLab's default job log
            limit is 4 MiB: docs.gitlab.com/administration/cicd/job_logs, 'Maximum job log file size').
        tasks_at_once: tasks read per tick (several runs or a ParallelFor fan out to many tasks).
        line_chars: characters kept of one line.
    """

    lines_per_tick: int = 200
    task_bytes: int = 256 * 1024
    job_bytes: int = 1024 * 1024
    tasks_at_once: int = 4
    line_chars: int = 1000


@dataclass(frozen=True, kw_only=True)
class LogStats:
    """What live logs cost and printed, for benchmarks and tests.

    Attributes:
        requests: log reads made.
        bytes_read: bytes the reads returned.
        lines_printed: log lines printed.
        bytes_printed: UTF-8 bytes of the printed log lines (prefixes included).
        lines_skipped: lines not printed because of a budget.
    """

    requests: int
    bytes_read: int
    lines_printed: int
    bytes_printed: int
    lines_skipped: int


class TaskLogReader(Protocol):
    """What live logs need from the KFP adapter (``kfp_api.KfpApi.task_log``)."""

    def task_log(self, run_id: str, node_id: str, *, timeout_s: float | None = None) -> str: ...


@dataclass
class _Task:
    """One task's executor log as followed: ``taken`` complete lines are printed or counted skipped."""

    run_id: str
    pod: str
    label: str
    ended: bool = False
    taken: int = 0
    printed_bytes: int = 0
    skipped: int = 0
    over_budget: bool = False
    done: bool = False
    shown_in_full: bool = False
    last_read: int = -1


@dataclass
class LiveLogs:
    """Follows the executor logs of the running tasks of one wait; :meth:`tick` after each status read,
    :meth:`finish` when the runs have ended.

    Args:
        api: reads a pod's log (``KfpApi``).
        console: prints the lines (masked) and the warnings.
        runs: run id -> (job name, run page URL), in display order.
        budget: the limits (:class:`LogBudget`).
        time_left: seconds until the wait deadline (None: none); no read outlasts it.
        before: each run as read before the wait; a task it shows ended is not read (``watch`` of an
            old run, or a retried CI job that attaches: those lines are not new).
    """

    api: TaskLogReader
    console: Console
    runs: Mapping[str, tuple[str, str]]
    budget: LogBudget = field(default_factory=LogBudget)
    time_left: Callable[[], float | None] = lambda: None
    before: Mapping[str, RunStatus] = field(default_factory=dict)
    _tasks: dict[tuple[str, str], _Task] = field(default_factory=dict, init=False)
    _ticks: int = field(default=0, init=False)
    _off: bool = field(default=False, init=False)
    _requests: int = field(default=0, init=False)
    _bytes_read: int = field(default=0, init=False)
    _lines_printed: int = field(default=0, init=False)
    _bytes_printed: int = field(default=0, init=False)
    _lines_skipped: int = field(default=0, init=False)

    @property
    def stats(self) -> LogStats:
        """The reads made and the lines printed so far."""
        return LogStats(
            requests=self._requests,
            bytes_read=self._bytes_read,
            lines_printed=self._lines_printed,
            bytes_printed=self._bytes_printed,
            lines_skipped=self._lines_skipped,
        )

    def shown_in_full(self, run_id: str, pod: str) -> bool:
        """True when every line of this pod's log was printed live, to its end (nothing skipped)."""
        task = self._tasks.get((run_id, pod))
        return task is not None and task.shown_in_full

    def tick(self, statuses: Mapping[str, RunStatus]) -> None:
        """Read and print what is new in the logs of the tasks these statuses show running or just ended."""
        if self._off:
            return
        for run_id, status in statuses.items():
            self._discover(run_id, status)
        self._ticks += 1
        due = [t for t in self._tasks.values() if not t.done and (t.ended or not t.over_budget)]
        due.sort(key=lambda t: (0, 0) if t.ended else (1, t.last_read))  # stable: else in discovery order
        for task in due[: self.budget.tasks_at_once]:
            if self._off:
                return
            self._read(task)
            task.last_read = self._ticks

    def finish(self) -> None:
        """After the wait: the last read of each ended task not read to its end yet (one at a time)."""
        for task in self._tasks.values():
            if self._off:
                return
            if task.ended and not task.done:
                self._read(task)

    # -- internals ---------------------------------------------------------------------------------------

    def _discover(self, run_id: str, status: RunStatus) -> None:
        before = self.before.get(run_id)
        ended_before = {_executor_pod(t) for t in before.tasks if t.state.is_terminal} if before else set()
        job = self.runs.get(run_id, (status.name, ""))[0]
        names = [t.name for t in status.tasks]
        ordinal: dict[str, int] = {}
        for task in status.tasks:
            pod = _executor_pod(task)
            index = ordinal[task.name] = ordinal.get(task.name, -1) + 1
            if not pod:
                continue
            key = (run_id, pod)
            known = self._tasks.get(key)
            if known is None:
                if pod in ended_before or task.state not in (RunState.RUNNING, *_ENDED):
                    continue  # ended before we watched; or not started (no pod yet), or skipped
                label = task.name + (f"[{index}]" if names.count(task.name) > 1 else "")
                known = self._tasks[key] = _Task(run_id, pod, f"{job}/{label}" if len(self.runs) > 1 else label)
            known.ended = task.state.is_terminal

    def _read(self, task: _Task) -> None:
        """One read of ``task``'s log; prints what is new."""
        left = self.time_left()
        if left is not None and left <= 0:
            return
        try:
            text = self.api.task_log(task.run_id, task.pod, timeout_s=min(READ_TIMEOUT_S, left or READ_TIMEOUT_S))
        except KfpAuthError as exc:
            self._requests += 1
            self._off = True
            self.console.warn(
                f"live logs are off: Kubeflow refused to read the log of {task.pod} ({exc.message}); the run "
                "goes on and its outcome is unchanged. Newer Kubeflow Pipelines check a separate `readLog` "
                "permission; ask for it, or set --logs failed."
            )
            return
        except KfpLaunchError:
            self._requests += 1
            return  # not readable yet (pod not created) or a passing failure: the next tick tries again
        self._requests += 1
        self._bytes_read += len(text.encode("utf-8", errors="replace"))
        self._take(task, text)
        if task.ended:
            task.done = True
            task.shown_in_full = task.skipped == 0 and not task.over_budget

    def _take(self, task: _Task, text: str) -> None:
        lines = text.split("\n")
        complete = lines[:-1] if not task.ended or not lines[-1] else lines  # a last line without "\n"...
        if len(complete) < task.taken:  # the log started again (a restarted container)
            task.taken = 0
        new = complete[task.taken :]
        task.taken = len(complete)  # ...is taken once the task has ended (else at the next read)
        if not new and not task.over_budget:
            return
        url = self.runs.get(task.run_id, ("", ""))[1]
        if task.over_budget:
            self._skip(task, len(new))
            if task.ended:
                self.console.line(
                    f"{task.label} | … {task.skipped} lines skipped in all (past this task's live log budget); "
                    f"the whole log: {url or 'the run page'}",
                    style="dim",
                )
            return
        if len(new) > self.budget.lines_per_tick:
            dropped = len(new) - self.budget.lines_per_tick
            self._skip(task, dropped)
            new = new[dropped:]
            self.console.line(
                f"{task.label} | … {dropped} lines skipped (more than {self.budget.lines_per_tick} since the "
                f"last poll); the whole log: {url or 'the run page'}",
                style="dim",
            )
        for position, raw in enumerate(new):
            line = f"{task.label} | {_printable(raw, self.budget.line_chars)}"
            size = len(line.encode("utf-8", errors="replace")) + 1
            if self._bytes_printed + size > self.budget.job_bytes:
                self._skip(task, len(new) - position)
                self._off = True
                self.console.line(
                    f"… live logs stop here: {len(new) - position} lines of {task.label} skipped, and the rest "
                    f"of every task's log: {self.budget.job_bytes // 1024} KiB were printed, this job's share "
                    f"(GitLab cuts a job log at 4 MiB by default). The whole logs: {url or 'the run page'}",
                    style="dim",
                )
                return
            if task.printed_bytes + size > self.budget.task_bytes:
                self._skip(task, len(new) - position)
                task.over_budget = True
                self.console.line(
                    f"{task.label} | … live log stops here ({self.budget.task_bytes // 1024} KiB printed, the "
                    f"task's share); the lines skipped are counted when it ends. The whole log: "
                    f"{url or 'the run page'}",
                    style="dim",
                )
                return
            self.console.line(line)
            task.printed_bytes += size
            self._bytes_printed += size
            self._lines_printed += 1

    def _skip(self, task: _Task, count: int) -> None:
        task.skipped += count
        self._lines_skipped += count


_ENDED = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED)


def _executor_pod(task: TaskResult) -> str:
    """The task's executor pod (the one whose log is the user's output), or '' when it has none."""
    return next((pod for pod in (*task.node_ids, task.pod_name) if pod and EXECUTOR_MARK in pod), "")


def _printable(line: str, limit: int) -> str:
    """A log line as a terminal would leave it (the text after its last carriage return: progress bars),
    without escape sequences or control characters (a task cannot open or close a GitLab section or
    clear the job log's lines), cut to ``limit`` characters."""
    line = _CONTROL.sub("", line.rstrip("\r").rsplit("\r", 1)[-1])
    return line if len(line) <= limit else line[: limit - 1] + "…"
