"""The one way kfp-launch terminates runs: on a signal (while submitting or waiting), at the deadline,
and for ``kfp-launch cancel`` (the CI template's after_script).

``POST /apis/v2beta1/runs/{id}:terminate`` moves an active run to CANCELING; KFP answers 400 "Row not
found" when the run is no longer PENDING, RUNNING, PAUSED or unspecified (kubeflow/pipelines
``backend/src/apiserver/storage/run_store.go``, ``TerminateRun``), which means it had already finished.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from kfp_launch.console import Console
from kfp_launch.errors import ExitCode, KfpApiError, KfpLaunchError
from kfp_launch.polling import Retry

TERMINATE_TIMEOUT_S = 5.0
"""Per-request timeout of a terminate without retries (on a signal: GitLab's runner gives a canceled job's
processes a short grace period before SIGKILL; the after_script retries what this misses)."""


class Terminator(Protocol):
    """What termination needs from the KFP adapter (``kfp_api.KfpApi``)."""

    def terminate_run(self, run_id: str, *, timeout_s: float | None = None) -> None: ...


def terminate_runs(
    api: Terminator,
    run_ids: Iterable[str],
    console: Console,
    *,
    why: str,
    policy: str = "terminate",
    retry: Retry | None = None,
) -> dict[str, ExitCode]:
    """Ask Kubeflow to terminate each run, each on its own: one failure does not spare the others.

    Args:
        api: the KFP adapter.
        run_ids: the runs (an empty id is skipped).
        console: where each result is said (``warning:`` lines unless ``retry`` is given).
        why: the reason, leading each line (``"interrupted"``, ``"the wait deadline passed"``).
        policy: ``"detach"`` (``--on-cancel``/``--on-timeout detach``) leaves the runs running and says so.
        retry: retry transient failures (``cancel``); without it one attempt of at most
            :data:`TERMINATE_TIMEOUT_S` seconds each (a signal leaves little time).

    Returns:
        The runs that could not be terminated (Kubeflow unreachable or refusing), with the exit code
        of why not.
    """
    say = console.line if retry is not None else console.warn
    ids = [run_id for run_id in run_ids if run_id]
    if policy == "detach":
        say(f"{why}: {', '.join(ids) or 'no run'} keeps running (detach)")
        return {}
    failed: dict[str, ExitCode] = {}
    for run_id in ids:
        try:
            if retry is None:
                api.terminate_run(run_id, timeout_s=TERMINATE_TIMEOUT_S)
            else:
                retry(lambda run_id=run_id: api.terminate_run(run_id))  # type: ignore[misc]  # bound per run
        except KfpApiError as exc:
            if exc.status not in (400, 404):
                failed[run_id] = exc.exit_code
                console.warn(f"{why}: could not terminate run {run_id}: {exc.message}")
                continue
            say(f"{why}: run {run_id} had already finished")
        except KfpLaunchError as exc:
            failed[run_id] = exc.exit_code
            console.warn(
                f"{why}: could not terminate run {run_id}: {exc.message}; "
                "the CI template's after_script retries with kfp-launch cancel --state-file"
            )
        else:
            say(f"{why}: asked Kubeflow to terminate run {run_id}")
    return failed
