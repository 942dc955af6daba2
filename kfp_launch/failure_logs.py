"""Explaining a failed run: which pod's log is a task's log, and its last lines for the job log, the JUnit
report and the merge request note.

The rule (README, 'Why a run failed'): each KFP v2 container task runs a driver pod and an executor pod, and
the log endpoint (``GET /apis/v1alpha1/runs/{run}/nodes/{pod}/log``) reads one pod's ``main`` container
(backend ``ResourceManager.ReadLog``, kubeflow/pipelines 2.17.0). The user's output and traceback are in the
executor, the pod whose name contains ``system-container-impl`` (the Argo template KFP's v2 compiler names for
container tasks, backend/src/v2/compiler/argocompiler/container.go); else the task's own ``pod_name``; a
``system-container-driver`` pod only when nothing else has a log, and then we say so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from kfp_launch.console import Console
from kfp_launch.errors import KfpAuthError, KfpLaunchError
from kfp_launch.kfp_api import KfpApi
from kfp_launch.models import RunStatus, TaskResult
from kfp_launch.states import RunState

EXECUTOR_MARK = "system-container-impl"
DRIVER_MARKS = ("system-container-driver", "system-dag-driver")  # argocompiler container.go and dag.go


def _pods(task: TaskResult) -> list[str]:
    """Every pod of a task, once each: its ``child_tasks`` pods, then its own."""
    return list(dict.fromkeys([*task.node_ids, *([task.pod_name] if task.pod_name else [])]))


def executor_pods(task: TaskResult) -> list[str]:
    """The task's executor pods (its user output), one per attempt, in the order KFP lists them."""
    return [pod for pod in _pods(task) if EXECUTOR_MARK in pod]


def log_pods(task: TaskResult) -> tuple[list[str], list[str]]:
    """A task's pods in the order their logs are tried: the executor first, then the task's own pod, then
    any other pod; and, apart, the driver pods (tried only when none of those has a log)."""
    pods = _pods(task)
    drivers = [pod for pod in pods if any(mark in pod for mark in DRIVER_MARKS)]
    executors = executor_pods(task)
    own = [task.pod_name] if task.pod_name and task.pod_name not in executors + drivers else []
    others = [pod for pod in pods if pod not in executors + drivers + own]
    return executors + own + others, drivers


def explain_failure(
    api: KfpApi,
    status: RunStatus,
    console: Console,
    *,
    log_lines: int,
    job: str = "",
    time_left: Callable[[], float | None] = lambda: None,
    shown_live: Callable[[str, str], bool] | None = None,
) -> RunStatus:
    """Name the failing tasks with their errors and print the last ``log_lines`` lines of each one's log
    (:func:`log_pods` says which pod). Best effort: a log that cannot be read is a warning (a 403 too:
    newer backends check a separate ``readLog`` permission), never an error.

    ``time_left`` (seconds until the wait deadline, None: no deadline) bounds every request; when it is
    spent, the logs not read yet are skipped, saying so. ``shown_live(run_id, pod)`` is True for a log the
    live logs printed whole: its tail is still read for the reports, but not printed twice.

    Returns:
        ``status`` with each failed task's ``log_tail`` and ``log_source`` filled in, for the reports.
    """
    prefix = f"{job}: " if job else ""
    if not status.tasks:
        try:
            status = api.get_run(status.run_id, timeout_s=time_left())  # a list may carry no task details
        except KfpLaunchError as exc:
            console.warn(f"could not read why {job or status.run_id} failed: {exc.message}")
    failing = [t for t in status.tasks if t.state == RunState.FAILED]
    if not failing:
        errors = [e for _, e in status.state_history if e] + ([status.error] if status.error else [])
        console.line(
            f"{prefix}why it failed: {errors[-1] if errors else 'Kubeflow gave no task details or error message'}"
        )
        return status
    explained = {}
    for task in failing:
        console.line(f"{prefix}task {task.name} FAILED" + (f": {task.error}" if task.error else ""), style="red")
        explained[task.name] = _with_log(api, status.run_id, task, console, log_lines, time_left, shown_live)
    return replace(
        status, tasks=tuple(explained.get(t.name, t) if t.state == RunState.FAILED else t for t in status.tasks)
    )


def _with_log(
    api: KfpApi,
    run_id: str,
    task: TaskResult,
    console: Console,
    log_lines: int,
    time_left: Callable[[], float | None],
    shown_live: Callable[[str, str], bool] | None = None,
) -> TaskResult:
    if log_lines <= 0:
        return task
    preferred, drivers = log_pods(task)
    for pods, fallback in ((preferred, False), (drivers, True)):
        for pod in pods:
            left = time_left()
            if left is not None and left <= 0:
                console.line("  (the wait deadline has passed: the rest of the logs are not read)", style="dim")
                return task
            lines = _tail(api, run_id, pod, console, log_lines, left)
            if not lines:
                continue
            if shown_live is not None and shown_live(run_id, pod):
                console.line(f"  (its log, {pod}, is printed whole above)", style="dim")
                return replace(task, log_tail=tuple(lines), log_source=pod)
            if fallback:
                console.line(f"  (no executor log: the lines below are the driver's, {pod})", style="dim")
            console.line(f"  last {len(lines)} lines of {pod}:")
            for line in lines:
                console.line(f"  | {line}")
            return replace(task, log_tail=tuple(lines), log_source=pod)
    console.line(f"  (no log of task {task.name} could be read)", style="dim")
    return task


def _tail(api: KfpApi, run_id: str, pod: str, console: Console, log_lines: int, timeout_s: float | None) -> list[str]:
    try:
        text = api.task_log(run_id, pod, timeout_s=timeout_s)
    except KfpAuthError as exc:
        console.warn(f"the log of {pod} is not readable with these credentials: {exc.message}")
        return []
    except KfpLaunchError as exc:
        console.line(f"  (log of {pod} not available: {exc.message})", style="dim")
        return []
    return [line[:1000] for line in text.rstrip("\n").splitlines()[-log_lines:]]
