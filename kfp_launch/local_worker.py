"""The local run's worker process (``python -m kfp_launch.local_worker``): runs one pipeline with kfp.local in
its own session and reports to ``local_runner.run_local`` as JSON lines on stdout.

It reads its request (the pipeline package, the arguments, the secrets to mask) from stdin, so no file holds
the arguments; it writes kfp.local's output to the run's log with every secret masked, and turns kfp.local's
log records into one event per finished task. kfp.local's process-global configuration and root-logger
changes stay in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import IO, Any

from kfp_launch.local_runner import strip_ansi
from kfp_launch.models import TaskResult
from kfp_launch.states import RunState

_EXECUTING_RE = re.compile(r"^Executing task '(?P<task>[^']+)'")
_FINISHED_RE = re.compile(r"^Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")
_INNER_RE = re.compile(r"Inner task failed: '(?P<task>[^']+)'")
_STATES = {"SUCCESS": RunState.SUCCEEDED, "FAILURE": RunState.FAILED}  # kfp.local's words
LOG_TAIL_LINES = 20


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

    @property
    def running(self) -> str:
        """A task running now ('' when none)."""
        with self._lock:
            return next(iter(self._current.values()), "")

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
    """A stdout replacement: writes to the run's log file, optionally echoes, feeds the tracker; every
    secret is masked first, so none reaches the log file (uploaded as a CI artifact) or the terminal."""

    def __init__(self, log: IO[str], tracker: _TaskTracker, echo: IO[str] | None, secrets: list[str]) -> None:
        self._log = log
        self._tracker = tracker
        self._echo = echo
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        length = len(text)
        text = self.mask(text)
        self._log.write(text)
        if self._echo is not None:
            self._echo.write(text)
        self._tracker.record_output(text)
        return length

    def mask(self, text: str) -> str:
        """TEXT with every secret replaced by ``[MASKED]``."""
        for secret in self._secrets:
            text = text.replace(secret, "[MASKED]")
        return text

    def flush(self) -> None:
        self._log.flush()
        if self._echo is not None:
            self._echo.flush()


def _worker_main() -> int:
    """Run one pipeline with kfp.local, reading the request from stdin and writing JSON-line events to
    stdout (see :func:`run_local`)."""
    from kfp import components, local

    request = json.loads(sys.stdin.read())
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
        stream = _CaptureStream(log, tracker, echo, request["secrets"])
        try:
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=request["pipeline_root"])
            component = components.load_component_from_text(request["package_yaml"])
            with contextlib.redirect_stdout(stream), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                task = component(**request["arguments"])
            done["outputs"] = {k: _plain(v) for k, v in task.outputs.items()}
        except RuntimeError as exc:
            error = strip_ansi(str(exc))
            if "finished with status FAILURE" in error:
                done.update(error=error, failed_task=_failed_task(error, tracker.finished))
            else:  # kfp.local's own refusal (e.g. a container component: lightweight components only)
                done["unsupported"] = error
        except Exception as exc:  # noqa: BLE001 - the worker's boundary: say what kfp.local raised, no traceback
            done.update(
                crash=f"{type(exc).__name__}: {strip_ansi(str(exc))}",
                crash_task=tracker.running,
                crash_after=tracker.finished[-1].name if tracker.finished else "",
            )
        for key in ("error", "crash", "unsupported"):
            if key in done:
                done[key] = stream.mask(done[key])
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


if __name__ == "__main__":
    sys.exit(_worker_main())
