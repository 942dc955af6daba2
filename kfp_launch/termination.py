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
from kfp_launch.errors import KfpApiError, KfpLaunchError
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
    policy_flag: str = "--on-cancel",
    retry: Retry | None = None,
) -> dict[str, KfpLaunchError]:
    """Ask Kubeflow to terminate each run, each on its own: one failure does not spare the others.

    Args:
        api: the KFP adapter.
        run_ids: the runs (an empty id is skipped).
        console: where each result is said.
        why: the reason, leading each line (``"interrupted"``, ``"the wait deadline passed"``, ``"cancel"``).
        policy: ``"detach"`` leaves the runs running and says so, naming ``policy_flag``.
        policy_flag: the option that set ``policy`` (``--on-cancel`` or ``--on-timeout``).
        retry: ``cancel``'s retry of transient failures; the caller reports what still failed (with its
            hint). Without it: one attempt of at most :data:`TERMINATE_TIMEOUT_S` seconds each (a signal
            leaves little time), and a failure is a warning pointing at the after_script.

    Returns:
        The runs that could not be terminated (Kubeflow unreachable or refusing the credentials), with why.
        A run KFP refuses to terminate (HTTP 4xx: no longer active, or gone) had already finished.
    """
    say = console.line if retry is not None else console.warn
    ids = [run_id for run_id in run_ids if run_id]
    if policy == "detach":
        if ids:
            say(f"{why}: {_runs(ids)} {'keeps' if len(ids) == 1 else 'keep'} running ({policy_flag} detach)")
        return {}
    failed: dict[str, KfpLaunchError] = {}
    for run_id in ids:
        try:
            if retry is None:
                api.terminate_run(run_id, timeout_s=TERMINATE_TIMEOUT_S)
            else:
                retry(lambda run_id=run_id: api.terminate_run(run_id))  # type: ignore[misc]  # bound per run
        except KfpApiError:
            say(f"{why}: run {run_id} had already finished")
        except KfpLaunchError as exc:
            failed[run_id] = exc
            if retry is None:
                console.warn(
                    f"{why}: could not terminate run {run_id}: {exc.message}; "
                    "the CI template's after_script retries with kfp-launch cancel --state-file"
                )
        else:
            say(f"{why}: asked Kubeflow to terminate run {run_id}")
    return failed


def _runs(ids: list[str]) -> str:
    return f"run {ids[0]}" if len(ids) == 1 else "runs " + ", ".join(ids)
