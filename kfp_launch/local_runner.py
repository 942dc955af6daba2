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

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kfp_launch.models import CompiledPipeline, LocalRunOutcome, MetricValue, TaskResult
from kfp_launch.states import RunState

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class UnsupportedLocallyError(RuntimeError):
    """kfp.local cannot run this pipeline (e.g. container components); nothing ran."""


class LocalWorkerDiedError(RuntimeError):
    """The kfp.local worker process ended without a result.

    Attributes:
        signum: the signal that killed it (SIGKILL: usually the out-of-memory killer), or None.
    """

    def __init__(self, message: str, *, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class LocalCrashError(RuntimeError):
    """kfp.local raised an error of its own (not a task's failure).

    Attributes:
        task: the task running when it happened ('' when none was).
        after: the last task that had finished ('' when none had: kfp.local refused the pipeline or its
            arguments before running anything).
    """

    def __init__(self, message: str, *, task: str, after: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.after = after


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (kfp.local colours its messages even off a TTY)."""
    return ANSI_RE.sub("", text)


def run_local(
    pipeline: CompiledPipeline,
    arguments: Mapping[str, object],
    *,
    pipeline_root: Path,
    env: Mapping[str, str],
    secrets: Sequence[str] = (),
    on_task: Callable[[TaskResult], None] = lambda _task: None,
    echo: bool = False,
    clock: Callable[[], float] = time.monotonic,
    kill_grace_s: float = 5.0,
    executor_env: Mapping[str, Mapping[str, str]] | None = None,
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
        secrets: values masked in everything the run writes (its log; the request goes to the worker's
            standard input, never to a file).
        on_task: called each time a task finishes.
        echo: also copy kfp.local's own output (task logs) to this process's stderr, live.
        clock: monotonic clock in seconds, for the run's duration.
        kill_grace_s: seconds between SIGTERM and SIGKILL when the run is interrupted.
        executor_env: executor label (``exec-…``) -> variables only that executor's task gets: kfp.local
            passes a container's ``env`` to its task's process alone (kfp/local/task_dispatcher.py,
            ``_extract_container_env_vars``). Added to the package sent to the worker's standard input only.

    Returns:
        The outcome; a failed task is a result (state FAILED), not an exception.

    Raises:
        UnsupportedLocallyError: kfp.local cannot run this pipeline at all (e.g. container components);
            the message is kfp's, without ANSI codes.
        LocalCrashError: kfp.local raised an error of its own (before any task ran, or in one).
        LocalWorkerDiedError: the worker ended (e.g. killed) before reporting a result.
    """
    pipeline_root.mkdir(parents=True, exist_ok=True)
    log_path = pipeline_root / "kfp-local.log"
    request = {
        "package_yaml": with_executor_env(pipeline.package_yaml, executor_env or {}),
        "arguments": dict(arguments),
        "pipeline_root": str(pipeline_root),
        "log_path": str(log_path),
        "echo": echo,
        "secrets": list(secrets),
    }
    started = clock()
    worker = subprocess.Popen(
        [sys.executable, "-m", "kfp_launch.local_worker"],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        start_new_session=True,
        env=dict(env),
    )
    try:
        assert worker.stdin is not None
        with worker.stdin:
            worker.stdin.write(json.dumps(request))
        tasks, result = _read_events(worker, on_task)
    except BaseException:
        _kill_group(worker, kill_grace_s)
        raise
    if result.get("unsupported"):
        raise UnsupportedLocallyError(result["unsupported"])
    if result.get("crash"):
        raise LocalCrashError(result["crash"], task=result.get("crash_task", ""), after=result.get("crash_after", ""))
    if not result:
        if worker.returncode < 0:
            name = signal.Signals(-worker.returncode).name
            raise LocalWorkerDiedError(f"the kfp.local worker was killed by {name}", signum=-worker.returncode)
        raise LocalWorkerDiedError(f"the kfp.local worker ended with exit code {worker.returncode} and no result")
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


def with_executor_env(package_yaml: str, executor_env: Mapping[str, Mapping[str, str]]) -> str:
    """``package_yaml`` with ``executor_env``'s variables in those executors' container ``env``."""
    if not executor_env:
        return package_yaml
    import yaml

    documents = list(yaml.safe_load_all(package_yaml))
    executors = documents[0]["deploymentSpec"]["executors"]
    for label, variables in executor_env.items():
        container = executors[label]["container"]
        container["env"] = [*container.get("env", []), *({"name": k, "value": v} for k, v in variables.items())]
    return yaml.safe_dump_all(documents, sort_keys=False)


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
