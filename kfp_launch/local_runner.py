"""Run a compiled pipeline on this machine with ``kfp.local`` (no cluster).

Runs the same YAML package kfp-launch would submit (``load_component_from_text``), with
``SubprocessRunner(use_venv=False)``: tasks run as subprocesses of the current interpreter.

Facts used (read in kfp 2.17.3 ``kfp/local``, i.e. kubeflow/pipelines sdk/python/kfp/local/ at 2.17.0;
details in docs/kfp-backend-notes.md, 'kfp.local'):
- during a run kfp.local replaces the root logger's handlers (``logging_utils.local_logger_context``)
  and prints every task's streamed output to ``sys.stdout`` (``subprocess_task_handler.py``); it logs
  ``Executing task 'x'`` and ``Task 'x' finished with status SUCCESS|FAILURE`` per task
  (``task_dispatcher.py``), with ANSI colour codes;
- a failing run raises ``RuntimeError("Pipeline 'p' finished with status FAILURE. Inner task failed:
  'boom' inside 'exit-handler-1'.")`` (colour codes included; ``pipeline_orchestrator.py``);
- artifacts land in ``<pipeline_root>/<pipeline>-<timestamp>/<task>/`` (``executor_input_utils.py``);
  ``Metrics`` values live only in ``executor_output.json`` metadata;
- ``local.init`` sets a process-global config (``config.LocalExecutionConfig``): one local run at a time
  per process.

The run happens in a worker process (``python -m kfp_launch.local_runner REQUEST``) in its own
session; kfp.local's own output goes to a log file (and to stderr with ``echo``), and the worker
reports each finished task as a JSON line the caller turns into ``on_task`` callbacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kfp_launch.models import CompiledPipeline, LocalRunOutcome, MetricValue, TaskResult
from kfp_launch.states import RunState

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXECUTING_RE = re.compile(r"^Executing task '(?P<task>[^']+)'")
_FINISHED_RE = re.compile(r"^Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_INNER_RE = re.compile(r"Inner task failed: '(?P<task>[^']+)'")
_STATES = {"SUCCESS": RunState.SUCCEEDED, "FAILURE": RunState.FAILED}  # kfp.local's words
LOG_TAIL_LINES = 20


class UnsupportedLocallyError(RuntimeError):
    """kfp.local cannot run this pipeline (e.g. container components); nothing ran."""


class LocalWorkerDiedError(RuntimeError):
    """The kfp.local worker process ended without a result (killed, e.g. out of memory)."""


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (kfp.local colours its messages even off a TTY)."""
    return ANSI_RE.sub("", text)


class _TaskTracker(logging.Filter):
    """Observes kfp.local's log records (a root-logger filter survives its handler swap) and the
    streamed task output, and turns them into :class:`TaskResult` events."""

    def __init__(self, on_task: Callable[[TaskResult], None], clock: Callable[[], float]) -> None:
        super().__init__()
        self._on_task = on_task
        self._clock = clock
        self._lock = threading.Lock()
        self._current: dict[int, str] = {}  # thread ident -> task running in that thread
        self._started: dict[str, float] = {}
        self._lines: dict[str, list[str]] = {}
        self.finished: list[TaskResult] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = strip_ansi(record.getMessage())
        if match := _EXECUTING_RE.match(message):
            with self._lock:
                self._current[record.thread or 0] = match["task"]
                self._started[match["task"]] = self._clock()
                self._lines[match["task"]] = []
        elif match := _FINISHED_RE.match(message):
            self._finish(
                match["task"], _STATES.get(match["status"]) or RunState.parse(match["status"]), record.thread or 0
            )
        return True

    def _finish(self, task: str, state: RunState, thread: int) -> None:
        with self._lock:
            self._current.pop(thread, None)
            started = self._started.get(task)
            lines = [ln for ln in self._lines.get(task, []) if ln.strip()]
        result = TaskResult(
            name=task,
            state=state,
            duration_s=None if started is None else self._clock() - started,
            error=_last_error_line(lines) if state == RunState.FAILED else "",
            log_tail=failure_log_tail(lines) if state == RunState.FAILED else (),
        )
        self.finished.append(result)
        self._on_task(result)

    def record_output(self, text: str) -> None:
        """Attribute streamed output to the task running in the calling thread."""
        with self._lock:
            task = self._current.get(threading.get_ident())
            if task is not None:
                self._lines[task].extend(strip_ansi(text).splitlines())


def failure_log_tail(lines: list[str], limit: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    """The useful end of a failed task's output: its last traceback without the frames of
    installed packages (kfp's executor), or else its last ``limit`` lines."""
    starts = [i for i, line in enumerate(lines) if line.strip().startswith("Traceback (most recent call last)")]
    if not starts:
        return tuple(lines[-limit:])
    kept: list[str] = []
    skip_code = False
    for line in lines[starts[-1] :]:
        stripped = line.strip()
        if stripped.startswith('File "'):
            skip_code = "site-packages" in stripped or stripped.startswith('File "<frozen')
            if skip_code:
                continue
        elif skip_code and line.startswith("    ") and not stripped.startswith("File"):
            continue
        else:
            skip_code = False
        kept.append(line)
    return tuple(kept[-limit:])


def _last_error_line(lines: list[str]) -> str:
    for line in reversed(lines):
        stripped = line.strip()
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", stripped):
            return stripped
    return lines[-1].strip() if lines else ""


class _CaptureStream(io.TextIOBase):
    """A stdout replacement: writes to the run's log file, optionally echoes, feeds the tracker."""

    def __init__(self, log: IO[str], tracker: _TaskTracker, echo: IO[str] | None) -> None:
        self._log = log
        self._tracker = tracker
        self._echo = echo

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        if self._echo is not None:
            self._echo.write(text)
        self._tracker.record_output(text)
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        if self._echo is not None:
            self._echo.flush()


def run_local(
    pipeline: CompiledPipeline,
    arguments: Mapping[str, object],
    *,
    pipeline_root: Path,
    env: Mapping[str, str],
    on_task: Callable[[TaskResult], None] = lambda _task: None,
    echo: bool = False,
    clock: Callable[[], float] = time.monotonic,
    kill_grace_s: float = 5.0,
) -> LocalRunOutcome:
    """Run ``pipeline`` with kfp.local in a worker process and report how it ended.

    The worker (``python -m kfp_launch.local_runner``) runs in its own session, so that an
    interrupt (SIGINT/SIGTERM/SIGHUP raised as an exception in this process) terminates the worker
    and every task subprocess it started, instead of leaving them running; it also keeps
    kfp.local's process-global configuration and root-logger changes out of this process.

    Args:
        pipeline: the compiled pipeline (its YAML package is what runs).
        arguments: parameter values by name (defaults need not be repeated).
        pipeline_root: a fresh directory for this run's artifacts and log (created).
        env: the worker's (and so the components') environment: the process environment without
            credentials, the interpreter's own ``bin/`` first on PATH (``App.subprocess_environ``).
        on_task: called each time a task finishes.
        echo: also copy kfp.local's own output (task logs) to this process's stderr, live.
        clock: monotonic clock in seconds, for the run's duration.
        kill_grace_s: seconds between SIGTERM and SIGKILL when the run is interrupted.

    Returns:
        The outcome; a failed task is a result (state FAILED), not an exception.

    Raises:
        UnsupportedLocallyError: kfp.local cannot run this pipeline at all (e.g. container components);
            the message is kfp's, without ANSI codes.
        LocalWorkerDiedError: the worker was killed (e.g. out of memory) before reporting a result.
    """
    pipeline_root.mkdir(parents=True, exist_ok=True)
    log_path = pipeline_root / "kfp-local.log"
    request = pipeline_root / "kfp-launch-request.json"
    request.write_text(
        json.dumps(
            {
                "package_yaml": pipeline.package_yaml,
                "arguments": dict(arguments),
                "pipeline_root": str(pipeline_root),
                "log_path": str(log_path),
                "echo": echo,
            }
        ),
        encoding="utf-8",
    )
    started = clock()
    worker = subprocess.Popen(
        [sys.executable, "-m", "kfp_launch.local_runner", str(request)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        start_new_session=True,
        env=dict(env),
    )
    try:
        tasks, result = _read_events(worker, on_task)
    except BaseException:
        _kill_group(worker, kill_grace_s)
        raise
    if result.get("unsupported"):
        raise UnsupportedLocallyError(result["unsupported"])
    if not result:
        how = f"signal {-worker.returncode}" if worker.returncode < 0 else f"exit code {worker.returncode}"
        raise LocalWorkerDiedError(f"the kfp.local worker process ended with {how} before the run finished")
    run_dir = _run_dir(pipeline_root)
    return LocalRunOutcome(
        job=pipeline.job,
        state=RunState.FAILED if result["error"] else RunState.SUCCEEDED,
        tasks=tuple(tasks),
        outputs=result["outputs"],
        metrics=read_metrics(run_dir, pipeline.package_yaml) if run_dir else (),
        error=result["error"],
        failed_task=result["failed_task"],
        run_dir=str(run_dir or pipeline_root),
        log_path=str(log_path),
        duration_s=clock() - started,
    )


def _read_events(
    worker: subprocess.Popen[str], on_task: Callable[[TaskResult], None]
) -> tuple[list[TaskResult], dict[str, Any]]:
    """Read the worker's JSON-line events until it exits: the tasks as they finish, and the final result
    (``{}`` when the worker died before reporting one)."""
    tasks: list[TaskResult] = []
    result: dict[str, Any] = {}
    assert worker.stdout is not None
    for line in worker.stdout:
        event = json.loads(line)
        if event["event"] == "task":
            fields = event["task"]
            task = TaskResult(
                **{**fields, "state": RunState.parse(fields["state"]), "log_tail": tuple(fields["log_tail"])}
            )
            tasks.append(task)
            on_task(task)
        elif event["event"] == "done":
            result = event
    worker.wait()
    return tasks, result


def _kill_group(worker: subprocess.Popen[str], grace_s: float) -> None:
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(worker.pid, signum)
        except ProcessLookupError:
            return
        try:
            worker.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _worker_main(request_path: str) -> int:
    """Run one pipeline with kfp.local, writing JSON-line events to stdout (see :func:`run_local`)."""
    from kfp import components, local

    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    events = sys.stdout
    echo = sys.stderr if request["echo"] else None

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event, default=str) + "\n")
        events.flush()

    def on_task(task: TaskResult) -> None:
        emit({"event": "task", "task": dataclasses.asdict(task)})

    tracker = _TaskTracker(on_task, time.monotonic)
    done: dict[str, Any] = {"event": "done", "outputs": {}, "error": "", "failed_task": ""}
    with open(request["log_path"], "w", encoding="utf-8") as log, _observing(tracker):
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=request["pipeline_root"])
        component = components.load_component_from_text(request["package_yaml"])
        try:
            with contextlib.redirect_stdout(_CaptureStream(log, tracker, echo)), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                task = component(**request["arguments"])
            done["outputs"] = {k: _plain(v) for k, v in task.outputs.items()}
        except RuntimeError as exc:
            error = strip_ansi(str(exc))
            if "finished with status FAILURE" in error:
                done.update(error=error, failed_task=_failed_task(error, tracker.finished))
            else:
                done["unsupported"] = error
    emit(done)
    return 0


def _plain(value: object) -> object:
    uri = getattr(value, "uri", None)
    return uri if isinstance(uri, str) else value


@contextlib.contextmanager
def _observing(tracker: _TaskTracker) -> Any:
    root = logging.getLogger()
    root.addFilter(tracker)
    try:
        yield
    finally:
        root.removeFilter(tracker)


def _failed_task(error: str, finished: list[TaskResult]) -> str:
    if match := _INNER_RE.search(error):
        return match["task"]
    failed = [t.name for t in finished if t.state == RunState.FAILED]
    return failed[0] if failed else ""


def _run_dir(pipeline_root: Path) -> Path | None:
    dirs = sorted(p for p in pipeline_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return dirs[-1] if dirs else None


def local_pipeline_root(local_root: Path, job: str, now: datetime | None = None) -> Path:
    """A fresh pipeline root for one local run: ``<local_root>/<job>-<UTC timestamp>``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S-%f")
    return local_root / f"{job}-{stamp}"


def read_metrics(run_dir: Path, package_yaml: str) -> tuple[MetricValue, ...]:
    """Collect the values logged to ``Metrics`` artifacts under a kfp.local run directory.

    Args:
        run_dir: ``<pipeline_root>/<pipeline>-<timestamp>``.
        package_yaml: the pipeline package, to know which outputs are ``system.Metrics``.

    Returns:
        One :class:`MetricValue` per logged number, ordered by task directory and name.
    """
    metric_outputs = _metrics_output_names(package_yaml)
    values: list[MetricValue] = []
    for path in sorted(run_dir.rglob("executor_output.json")):
        task = path.parent.relative_to(run_dir).as_posix()
        try:
            artifacts = json.loads(path.read_text(encoding="utf-8")).get("artifacts", {})
        except (OSError, json.JSONDecodeError):
            continue
        for output_name, entry in sorted(artifacts.items()):
            if output_name not in metric_outputs:
                continue
            for artifact in entry.get("artifacts", []):
                for name, value in sorted((artifact.get("metadata") or {}).items()):
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        values.append(MetricValue(task=task, artifact=output_name, name=name, value=float(value)))
    return tuple(values)


def _metrics_output_names(package_yaml: str) -> set[str]:
    import yaml

    names: set[str] = set()
    for document in yaml.safe_load_all(package_yaml):
        for component in ((document or {}).get("components") or {}).values():
            artifacts = ((component.get("outputDefinitions") or {}).get("artifacts")) or {}
            for name, spec in artifacts.items():
                if (spec.get("artifactType") or {}).get("schemaTitle") == "system.Metrics":
                    names.add(name)
    return names


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1]))
