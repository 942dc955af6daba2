"""Live task logs (``--logs live``): while a run's tasks execute, their new log lines go to the job log,
each prefixed with its task, masked like everything else, within budgets.

Facts this relies on (docs/kfp-backend-notes.md, 'Task logs'):

- the log endpoint ``GET /apis/v1alpha1/runs/{run}/nodes/{pod}/log`` answers a pod's whole ``main``
  container log on every read (``follow`` is never set: kubeflow/pipelines 2.17.0
  backend/src/apiserver/server/run_log_server.go), so what is new is what follows the lines already taken;
  a read made while the task writes may end mid-line, and that part is taken at the next read;
- the user's output is in the executor pod, whose name holds ``system-container-impl``
  (:data:`kfp_launch.failure_logs.EXECUTOR_MARK`); a task without one has no live log, and a retried task
  has one executor pod per attempt;
- backends after 2.17 may refuse the read with 403 (kubeflow/pipelines#13684, the ``readLog`` check).

Rules, so a chatty task can flood neither the job log nor the API server:

- reads happen only on a poll tick (after the runs' statuses were read), at most one per task per tick,
  for at most :attr:`LogBudget.tasks_at_once` tasks per tick and within :attr:`LogBudget.tick_s` seconds
  per tick: ended tasks first (their last lines), then the tasks read least recently, so with more running
  tasks than that (``--all``, a ParallelFor) each is read in turn and its lines come a few polls late;
- a task is read while RUNNING, and once more when it has ended, for the lines written between the last
  read and its end (an ended task whose log cannot be read is given up after :data:`ENDED_ATTEMPTS`
  attempts); a task that ran entirely between two ticks is read once, after it ended; a task already ended
  when the wait began (``watch`` of an old run) is not read;
- at most :attr:`LogBudget.lines_per_tick` lines per task per tick (the newest; the others are counted and
  said skipped), :attr:`LogBudget.task_bytes` printed per task (then it is read again only when it ends, to
  count what was skipped), :attr:`LogBudget.task_read_bytes` read per task (every read returns the whole
  log: then it is not read again), and :attr:`LogBudget.job_bytes` printed in all, a quarter of GitLab's
  default 4 MiB job log limit; each skip says how many lines and where the whole log is (the run's page);
- a 403 turns live logs off with one warning; any other failed read is tried again at the next tick.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kfp_launch.console import Console
from kfp_launch.errors import KfpAuthError, KfpLaunchError, TransientKfpError
from kfp_launch.failure_logs import executor_pods
from kfp_launch.models import RunStatus, TaskResult
from kfp_launch.states import RunState

READ_TIMEOUT_S = 10.0
"""A log read that takes longer is given up until the next tick (the wait must go on)."""

ENDED_ATTEMPTS = 2
"""Reads of an ended task's log before giving it up (its pod may be gone: Argo's pod GC, no log archive)."""

_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class LogBudget:
    """How much of the tasks' logs goes to the job log (bytes are UTF-8 bytes of printed lines, masked).

    Attributes:
        lines_per_tick: lines printed per task per poll tick; more are skipped (the newest are kept).
        task_bytes: bytes printed per task; then its live log stops and is counted at its end.
        task_read_bytes: bytes read from the log endpoint per task; then it is not read again.
        job_bytes: bytes printed in all by one wait; then live logs stop (GitLab's default job log
            limit is 4 MiB: docs.gitlab.com/administration/cicd/job_logs, 'Maximum job log file size').
        tasks_at_once: tasks read per tick (several runs or a ParallelFor fan out to many tasks).
        tick_s: seconds the reads of one tick (and the last reads after the wait) may take in all.
        line_chars: characters kept of one line.
    """

    lines_per_tick: int = 200
    task_bytes: int = 256 * 1024
    task_read_bytes: int = 32 * 1024 * 1024
    job_bytes: int = 1024 * 1024
    tasks_at_once: int = 4
    tick_s: float = 10.0
    line_chars: int = 1000


@dataclass(frozen=True, kw_only=True)
class LogStats:
    """What live logs cost and printed, for benchmarks and tests.

    Attributes:
        requests: log reads made.
        bytes_read: bytes the reads returned.
        lines_printed: log lines printed.
        bytes_printed: UTF-8 bytes printed (log lines with their prefixes, and skip notices).
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
    """One executor pod's log as followed: ``taken`` complete lines are printed or counted skipped."""

    run_id: str
    pod: str
    label: str
    ended: bool = False
    taken: int = 0
    last_taken: str | None = None  # the last line taken: a log whose line there differs was replaced
    printed_bytes: int = 0
    read_bytes: int = 0
    skipped: int = 0
    printed_since_skip: int = 0  # lines printed after the last skip: the end of the log, shown whole
    over_budget: bool = False
    given_up: bool = False
    failed_reads: int = 0
    done: bool = False
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
        clock: monotonic seconds, for the time budget of a tick.
    """

    api: TaskLogReader
    console: Console
    runs: Mapping[str, tuple[str, str]]
    budget: LogBudget = field(default_factory=LogBudget)
    time_left: Callable[[], float | None] = lambda: None
    before: Mapping[str, RunStatus] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _tasks: dict[tuple[str, str], _Task] = field(default_factory=dict, init=False)
    _names: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    _labels: dict[tuple[str, str], str] = field(default_factory=dict, init=False)
    _ticks: int = field(default=0, init=False)
    _reads_left: int = field(default=0, init=False)
    _stop_at: float = field(default=0.0, init=False)
    _off: bool = field(default=False, init=False)
    _refused: bool = field(default=False, init=False)
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

    @property
    def refused(self) -> bool:
        """True when Kubeflow refused to read logs (403): reading them again for a failure is pointless."""
        return self._refused

    def tail_shown(self, run_id: str, pod: str, lines: int) -> bool:
        """True when the last ``lines`` lines of this pod's log were printed live, in one piece, to its end."""
        task = self._tasks.get((run_id, pod))
        if task is None or not task.done or task.given_up or task.over_budget:
            return False
        return task.skipped == 0 or task.printed_since_skip >= lines

    def tick(self, statuses: Mapping[str, RunStatus]) -> None:
        """Read and print what is new in the logs of the tasks these statuses show running or just ended
        (:meth:`ended_first`, then :meth:`running`)."""
        self.ended_first(statuses)
        self.running()

    def ended_first(self, statuses: Mapping[str, RunStatus]) -> None:
        """The first half of a tick, before the progress lines: the last lines of the tasks that ended (so
        that they come before the line saying the task ended)."""
        if self._off:
            return
        for run_id, status in statuses.items():
            self._discover(run_id, status)
        self._ticks += 1
        self._reads_left = self.budget.tasks_at_once
        self._stop_at = self.clock() + self.budget.tick_s
        self._read_some([t for t in self._due() if t.ended])

    def running(self) -> None:
        """The second half of a tick, after the progress lines: the new lines of running tasks, the ones
        read least recently first, with what is left of the tick's budget."""
        self._read_some(sorted((t for t in self._due() if not t.ended), key=lambda t: t.last_read))

    def finish(self) -> None:
        """After the wait (the runs ended): the last read of each ended task not read to its end yet,
        within one tick's time budget."""
        self._reads_left = len(self._tasks)
        self._stop_at = self.clock() + self.budget.tick_s
        self._read_some([t for t in self._due() if t.ended])

    # -- internals ---------------------------------------------------------------------------------------

    def _due(self) -> list[_Task]:
        return [t for t in self._tasks.values() if not t.done and not t.given_up and (t.ended or not t.over_budget)]

    def _read_some(self, tasks: list[_Task]) -> None:
        for task in tasks:
            left = self._stop_at - self.clock()
            if self._off or left <= 0 or self._reads_left <= 0:
                return
            self._reads_left -= 1
            if not self._read(task, left):
                self._reads_left = 0  # a read timed out or the deadline passed: the rest waits for the next tick
                return
            task.last_read = self._ticks

    def _discover(self, run_id: str, status: RunStatus) -> None:
        before = self.before.get(run_id)
        ended_before = {p for t in before.tasks if t.state.is_terminal for p in executor_pods(t)} if before else set()
        job = self.runs.get(run_id, (status.name, ""))[0]
        repeated = {t.name for t in status.tasks if sum(1 for o in status.tasks if o.name == t.name) > 1}
        for task in status.tasks:
            pods = executor_pods(task)
            for attempt, pod in enumerate(pods, start=1):
                key = (run_id, pod)
                known = self._tasks.get(key)
                if known is None:
                    if pod in ended_before or task.state not in (RunState.RUNNING, *_ENDED):
                        continue  # ended before we watched; or not started (no pod yet), or skipped
                    label = self._label(run_id, task, repeated) + (f" (try {attempt})" if attempt > 1 else "")
                    known = self._tasks[key] = _Task(run_id, pod, f"{job}/{label}" if len(self.runs) > 1 else label)
                # an earlier attempt's pod has ended even while the task runs its next attempt
                known.ended = task.state.is_terminal or attempt < len(pods)

    def _label(self, run_id: str, task: TaskResult, repeated: set[str]) -> str:
        """The task's name; a name several tasks share (a loop's iterations) gets ``[1]``, ``[2]``... from the
        second task seen with it on (``[0]`` too for the first when several show up at once), never reused;
        the same for every attempt of one task. KFP's task details carry no iteration index to use."""
        key = (run_id, task.task_id or task.name)
        if key not in self._labels:
            count = self._names.get((run_id, task.name), 0)
            self._names[(run_id, task.name)] = count + 1
            self._labels[key] = f"{task.name}[{count}]" if count or task.name in repeated else task.name
        return self._labels[key]

    def _read(self, task: _Task, budget_s: float) -> bool:
        """One read of ``task``'s log; prints what is new. False when the tick should stop reading."""
        left = self.time_left()
        if left is not None and left <= 0:
            return False
        timeout = min(READ_TIMEOUT_S, budget_s, left if left is not None else READ_TIMEOUT_S)
        self._requests += 1
        try:
            text = self.api.task_log(task.run_id, task.pod, timeout_s=timeout)
        except KfpAuthError as exc:
            if "HTTP 403" not in exc.message:
                return False  # a 401 or a login page (an expired token): the status poll says so; next tick
            self._off = self._refused = True
            self.console.warn(
                f"live logs are off: {exc.message}. The run goes on and its outcome is unchanged; newer Kubeflow "
                "Pipelines check a separate `readLog` permission: ask for it, or set --logs failed."
            )
            return False
        except KfpLaunchError as exc:
            if task.ended:
                task.failed_reads += 1
                task.given_up = task.failed_reads >= ENDED_ATTEMPTS  # its pod is gone: do not block the others
            # a timeout or a 5xx: the server struggles, the rest waits for the next tick; else (no pod yet,
            # or gone: an error body) the next task
            return not isinstance(exc, TransientKfpError)
        size = len(text.encode("utf-8", errors="replace"))
        self._bytes_read += size
        task.read_bytes += size
        self._take(task, text)
        if task.ended:
            task.done = True
        elif task.read_bytes >= self.budget.task_read_bytes and not task.over_budget:
            task.over_budget = task.given_up = True  # every read returns the whole log: stop reading it
            self._notice(
                task,
                f"{task.label} | … live log stops here: {task.read_bytes // (1024 * 1024)} MiB were read for it "
                "(each read returns the whole log); the whole log:",
            )
        return True

    def _take(self, task: _Task, text: str) -> None:
        lines = text.split("\n")
        complete = lines[:-1] if not task.ended or not lines[-1] else lines  # a last line without "\n"...
        replaced = task.taken and (len(complete) < task.taken or complete[task.taken - 1] != task.last_taken)
        if replaced:  # a restarted container or a rotated log: what it holds now is new
            task.taken = 0
        new = complete[task.taken :]
        task.taken = len(complete)  # ...is taken once the task has ended (else at the next read)
        task.last_taken = complete[-1] if complete else None
        if task.over_budget:
            self._skip(task, len(new))
            if task.ended:
                self._notice(task, f"{task.label} | … {task.skipped} lines skipped in all; the whole log:")
            return
        if len(new) > self.budget.lines_per_tick:
            dropped = len(new) - self.budget.lines_per_tick
            self._skip(task, dropped)
            new = new[dropped:]
            self._notice(
                task,
                f"{task.label} | … {dropped} lines skipped (more than {self.budget.lines_per_tick} at once); "
                "the whole log:",
            )
        for position, raw in enumerate(new):
            masked = self.console.redact(f"{task.label} | {_printable(raw)}")  # masked, then cut: no half secret
            line = masked if len(masked) <= self.budget.line_chars else masked[: self.budget.line_chars - 1] + "…"
            size = len(line.encode("utf-8", errors="replace")) + 1
            if self._bytes_printed + size > self.budget.job_bytes:
                self._skip(task, len(new) - position)
                self._off = True
                url = self.runs.get(task.run_id, ("", ""))[1] or "the run's page"
                self.console.line(
                    f"… live logs stop here: {self.budget.job_bytes // 1024} KiB of task logs were printed, this "
                    f"job's share (GitLab cuts a job log at 4 MiB by default); {len(new) - position} more lines "
                    f"of {task.label} and the rest of every task's log are not shown. The whole logs: {url}",
                    style="dim",
                )
                return
            if task.printed_bytes + size > self.budget.task_bytes:
                self._skip(task, len(new) - position)
                task.over_budget = True
                what = (
                    f"{task.skipped} lines skipped in all"
                    if task.ended
                    else "the lines it skips are counted when it ends"
                )
                self._notice(
                    task,
                    f"{task.label} | … live log stops here ({self.budget.task_bytes // 1024} KiB printed, the "
                    f"task's share); {what}. The whole log:",
                )
                return
            self.console.line(line)
            task.printed_bytes += size
            task.printed_since_skip += 1
            self._bytes_printed += size
            self._lines_printed += 1

    def _notice(self, task: _Task, text: str) -> None:
        line = f"{text} {self.runs.get(task.run_id, ('', ''))[1] or 'the run page'}"
        self._bytes_printed += len(line.encode("utf-8", errors="replace")) + 1
        self.console.line(line, style="dim")

    def _skip(self, task: _Task, count: int) -> None:
        if count:
            task.skipped += count
            task.printed_since_skip = 0
            self._lines_skipped += count


_ENDED = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED)


def _printable(line: str) -> str:
    """A log line as a terminal would leave it (the text after its last carriage return: progress bars),
    without escape sequences or control characters (a task cannot open or close a GitLab section or clear
    the job log's lines)."""
    return _CONTROL.sub("", line.rstrip("\r").rsplit("\r", 1)[-1])
