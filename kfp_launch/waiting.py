"""Waiting for launched runs, one or many, with one poll loop: progress, the deadline, signals, the
outcome of each run, the explanation of a failure, and the reports.

Used by ``run`` (a single run is a list of one) and by ``watch``. Each tick reads every run with
:func:`polling.read_runs` (one request for up to 50 runs); a run deleted mid-wait answers 404 and ends
CANCELED (exit 7) whatever the number of runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kfp_launch import interrupts
from kfp_launch.app import App
from kfp_launch.console import Console
from kfp_launch.errors import ExitCode, InputError, Interrupted, KfpLaunchError, worst_exit_code
from kfp_launch.failure_logs import explain_failure
from kfp_launch.failures import while_waiting
from kfp_launch.kfp_api import KfpApi
from kfp_launch.live_logs import LiveLogs
from kfp_launch.models import RunOutcome, RunStatus
from kfp_launch.polling import WaitResult, read_runs, wait_for_runs
from kfp_launch.progress import progress_for
from kfp_launch.reporting import Reporting
from kfp_launch.state_file import mark_detached
from kfp_launch.states import OutcomeState, RunState, exit_code_for
from kfp_launch.status_gate import settle
from kfp_launch.termination import terminate_runs

DEADLINE_MARGIN_S = 300.0
"""Report this many seconds before GitLab's job timeout (``CI_JOB_STARTED_AT + CI_JOB_TIMEOUT``)."""
MIN_TIME_TO_WAIT_S = 60.0
"""Refuse to submit when the wait deadline leaves less than this: the run would be terminated at once."""


@dataclass(frozen=True, kw_only=True)
class Tracked:
    """A run being waited for.

    Attributes:
        base: what every outcome of this run shares (job, run id and link, experiment, parameters),
            in state RUNNING; each ending fills in state, exit code, tasks, duration and message.
        status: the run as last read before the wait.
    """

    base: RunOutcome
    status: RunStatus


def wait_deadline(app: App) -> tuple[float | None, str]:
    """The ``clock()`` value to stop waiting at, and where it comes from: ``--timeout``, else in CI
    ``CI_JOB_STARTED_AT + CI_JOB_TIMEOUT - 5m`` (so we report before GitLab kills the job)."""
    timeout, clock = app.settings.timeout, app.runtime.clock
    if timeout is not None:
        return clock() + timeout.total_seconds(), f"--timeout {timeout.total_seconds():g}s"
    deadline = app.ci.job_deadline
    if app.ci.in_ci and deadline is not None:
        left = (deadline - app.runtime.wall_clock()).total_seconds() - DEADLINE_MARGIN_S
        return clock() + max(left, 0.0), "the GitLab job timeout (CI_JOB_TIMEOUT) minus 5 minutes"
    return None, ""


def check_time_to_wait(app: App) -> None:
    """Refuse to submit when the wait deadline is (almost) past.

    Raises:
        InputError: less than :data:`MIN_TIME_TO_WAIT_S` left (e.g. a CI job timeout of 4 minutes).
    """
    deadline, source = wait_deadline(app)
    if not app.settings.wait or deadline is None or app.settings.timeout is not None:
        return  # an explicit --timeout is the user's choice, however short
    left = deadline - app.runtime.clock()
    if left < MIN_TIME_TO_WAIT_S:
        raise InputError(
            f"The wait deadline ({source}) leaves {max(left, 0):.0f}s, so the run would be terminated at once; "
            "nothing was submitted.",
            hint="raise the GitLab job timeout, set --timeout, or submit with --no-wait.",
        )


def wait_and_report(
    app: App, api: KfpApi, tracked: Sequence[Tracked], *, reporting: Reporting | None, state_path: Path | None
) -> list[RunOutcome]:
    """Wait for every run with one poll loop; at the deadline or on a signal terminate what is still
    active (``--on-timeout``/``--on-cancel``); explain failures; print and report the outcomes.

    Args:
        app: settings, CI context (for the deadline), console and runtime.
        api: the KFP adapter.
        tracked: the runs, all in one experiment.
        reporting: where reports and the merge request note go (None: ``watch`` writes none).
        state_path: the state file, whose cancel policy becomes ``detach`` for runs left running on
            purpose (deadline with ``detach``) or for the CI job's retry (Kubeflow unreachable, exit 5).

    Returns:
        One outcome per run, in order.

    Raises:
        Interrupted / KeyboardInterrupt: after terminating the active runs (per ``--on-cancel``) and reporting.
        KfpLaunchError: credentials refused twice (4), TLS (3), a refusal (3); after reporting.
    """
    clock, settings = app.runtime.clock, app.settings
    deadline, deadline_source = wait_deadline(app)
    seen: dict[str, RunStatus] = {t.base.run_id: t.status for t in tracked}
    canceling: set[str] = set()  # runs seen CANCELING: KFP records no history of it (run_store.go, TerminateRun)
    started = clock()
    live = _live_logs(app, api, tracked, deadline)
    try:
        result = _poll(app, api, tracked, seen, canceling, deadline, live)
    except (Interrupted, KeyboardInterrupt) as exc:
        with interrupts.deferred():
            active = [run_id for run_id, status in seen.items() if not status.is_terminal]
            failed = terminate_runs(api, active, app.console, why="interrupted", policy=settings.on_cancel)
            code = ExitCode(128 + getattr(exc, "signum", 2))
            message = f"the CI job was interrupted; --on-cancel {settings.on_cancel}"
            _report(reporting, _stopped(tracked, seen, OutcomeState.INTERRUPTED, code, message, clock() - started))
            why = "the CI job was interrupted: the run was terminated"  # after the reports: time is short
            settle_terminated(app, tracked, active, failed, policy=settings.on_cancel, why=why, quick=True)
        raise
    except KfpLaunchError as exc:
        _report(reporting, _stopped(tracked, seen, OutcomeState.ERROR, exc.exit_code, exc.message, clock() - started))
        raise
    outcomes = [_outcome(t, result, waited_s=clock() - started, canceling=canceling) for t in tracked]

    def time_left() -> float | None:  # every request after the wait ends by the deadline too
        return None if deadline is None else deadline - clock()

    try:
        outcomes = [_terminated_elsewhere(api, o, time_left) if o.state == OutcomeState.FAILED else o for o in outcomes]
        if result.reason == "deadline":
            outcomes = _at_deadline(app, api, tracked, outcomes, deadline_source)
        if state_path is not None:
            mark_detached(state_path, [o.run_id for o in outcomes if _left_running(o, settings.on_timeout)])
        outcomes = [
            _explained(app, api, o, seen[o.run_id], time_left, live, several=len(outcomes) > 1) for o in outcomes
        ]
    except (Interrupted, KeyboardInterrupt):
        with interrupts.deferred():
            _report(reporting, outcomes)  # the runs ended: report how, even if the explanation was cut short
        raise
    _report(reporting, outcomes)
    _settle_unreported(app, tracked, seen)
    print_outcomes(outcomes, app.console)  # the outcome is the last thing said
    return outcomes


def _settle_unreported(app: App, tracked: Sequence[Tracked], seen: dict[str, RunStatus]) -> None:
    """``--report-status`` runs that ended while we waited (``run --wait``, ``watch``): a run ends after its exit
    handler, so a status still pending or running means the exit task could not report (no secret, say):
    post the run's end. Only where this job's GitLab and token are set: else there is nothing to say."""
    if not (app.gitlab.token and app.gitlab.url):
        return
    for t in tracked:
        status = seen.get(t.base.run_id, t.status)
        run = status if status.status_target is not None else replace(status, status_target=t.status.status_target)
        if run.status_target is not None and run.is_terminal:
            settle(app, run, t.base.run_url, f"the run ended {run.state} without its exit task reporting", quick=True)


def _poll(
    app: App,
    api: KfpApi,
    tracked: Sequence[Tracked],
    seen: dict[str, RunStatus],
    canceling: set[str],
    deadline: float | None,
    live: LiveLogs | None,
) -> WaitResult:
    """The poll loop of a wait, in its own log section, with the progress display and the live task logs
    (read after each successful status read, so never more often than the runs are polled); ``seen`` is
    kept up to date with every run's last status, ``canceling`` with the runs ever seen CANCELING."""
    console, ids = app.console, [t.base.run_id for t in tracked]
    now = app.runtime.wall_clock()
    age = max(((now - t.status.created_at).total_seconds() for t in tracked if t.status.created_at), default=0.0)
    label = f"run {ids[0]}" if len(ids) == 1 else f"{len(ids)} runs"
    console.section_start("kfp_launch_wait", f"Waiting for {label}")
    try:
        with progress_for(console, {t.base.run_id: t.base.job for t in tracked}) as progress:

            def fetch() -> dict[str, RunStatus]:
                def left() -> float | None:
                    return None if deadline is None else deadline - app.runtime.clock()

                try:  # every request ends by the deadline; the run exists: see failures.while_waiting
                    statuses = read_runs(api, tracked[0].base.experiment_id, ids, time_left=left)
                except KfpLaunchError as exc:
                    raise while_waiting(exc) from exc
                seen.update(statuses)
                canceling.update(run_id for run_id, status in statuses.items() if status.state == RunState.CANCELING)
                if live is not None:  # an ended task's last lines before the line saying it ended
                    live.ended_first(statuses)
                progress.update(statuses)
                if live is not None:
                    live.running()
                return statuses

            result = wait_for_runs(
                fetch,
                policy=app.poll_policy,
                on_transient=lambda exc, outage: progress.note(f"{exc.message}; retrying (outage {outage:.0f}s)"),
                deadline=deadline,
                age_at_start_s=max(age, 0.0),
                clock=app.runtime.clock,
                sleep=app.runtime.sleep,
            )
            if live is not None and result.reason == "terminal":  # not after an outage or at the deadline
                live.finish()
            return result
    finally:
        console.section_end("kfp_launch_wait")


def _live_logs(app: App, api: KfpApi, tracked: Sequence[Tracked], deadline: float | None) -> LiveLogs | None:
    """The live task logs of this wait (``--logs live``), or None."""
    if app.log_mode != "live":
        return None

    def left() -> float | None:
        return None if deadline is None else deadline - app.runtime.clock()

    return LiveLogs(
        api=api,
        console=app.console,
        runs={t.base.run_id: (t.base.job, t.base.run_url) for t in tracked},
        time_left=left,
        before={t.base.run_id: t.status for t in tracked},
        clock=app.runtime.clock,
    )


def _left_running(outcome: RunOutcome, on_timeout: str) -> bool:
    # Unreachable: the run may be fine; the CI template retries exit 5 and the retry attaches to it.
    return outcome.state == OutcomeState.UNREACHABLE or (
        outcome.state == OutcomeState.TIMED_OUT and on_timeout == "detach"
    )


def _report(reporting: Reporting | None, outcomes: list[RunOutcome]) -> None:
    if reporting is not None:
        reporting.finished(outcomes)


def _stopped(
    tracked: Sequence[Tracked],
    seen: dict[str, RunStatus],
    state: OutcomeState,
    cause: ExitCode,
    message: str,
    waited_s: float,
) -> list[RunOutcome]:
    """The outcomes when the wait stopped early (a signal, an error): a run already ended keeps its own
    outcome, the others get ``state`` with the exit code of its ``cause``."""
    outcomes = []
    for t in tracked:
        status = seen[t.base.run_id]
        if status.is_terminal:
            outcomes.append(ended_outcome(t.base, status, waited_s))
        else:
            code = exit_code_for(state, cause=cause)
            outcomes.append(replace(t.base, state=state, exit_code=code, duration_s=waited_s, message=message))
    return outcomes


def _outcome(t: Tracked, result: WaitResult, *, waited_s: float, canceling: set[str]) -> RunOutcome:
    status = result.statuses.get(t.base.run_id, t.status)
    if status.is_terminal:
        return ended_outcome(t.base, status, waited_s, canceling_seen=t.base.run_id in canceling)
    if result.reason == "outage":
        state = OutcomeState.UNREACHABLE
        message = f"Kubeflow failed for {result.outage_s:.0f}s (more than --max-outage): {result.last_error}"
    else:
        state, message = OutcomeState.TIMED_OUT, ""
    return replace(
        t.base, state=state, exit_code=exit_code_for(state), tasks=status.tasks, duration_s=waited_s, message=message
    )


def ended_outcome(base: RunOutcome, status: RunStatus, waited_s: float, *, canceling_seen: bool = False) -> RunOutcome:
    """The outcome of a run that reached a terminal state; its duration from KFP's times when known (else
    ``waited_s``); ``canceling_seen``: a poll saw it CANCELING (so FAILED means terminated)."""
    state, message = _final_state(status, canceling_seen=canceling_seen)
    known = status.finished_at is not None and status.created_at is not None
    duration = (status.finished_at - status.created_at).total_seconds() if known else waited_s  # type: ignore[operator]
    return replace(
        base, state=state, exit_code=exit_code_for(state), tasks=status.tasks, duration_s=duration, message=message
    )


def _final_state(status: RunStatus, *, canceling_seen: bool = False) -> tuple[OutcomeState, str]:
    if status.state == RunState.SUCCEEDED:
        return OutcomeState.SUCCEEDED, ""
    if status.state == RunState.SKIPPED:
        return OutcomeState.SKIPPED, "the run was SKIPPED"
    if status.state == RunState.CANCELED:
        return OutcomeState.CANCELED, status.error or "the run was canceled"
    if status.was_canceling or canceling_seen:
        # KFP 2.x reports a run terminated in the UI as FAILED after CANCELING (run_store.go, TerminateRun).
        return OutcomeState.CANCELED, "the run was terminated by someone else (FAILED after CANCELING)"
    failed = [t.name for t in status.tasks if t.state == RunState.FAILED]
    return OutcomeState.FAILED, ("failed tasks: " + ", ".join(failed)) if failed else "see the run's page"


def _terminated_elsewhere(api: KfpApi, outcome: RunOutcome, time_left: Callable[[], float | None]) -> RunOutcome:
    """A FAILED run whose CANCELING was never seen may still have been terminated from outside: KFP's
    terminate leaves the run's Workflow with ``activeDeadlineSeconds: 0`` (``KfpApi.workflow_terminated``).
    Canceled (7) when that says so; FAILED (6) otherwise, saying so when nothing could tell."""
    left = time_left()
    terminated = None if left is not None and left <= 0 else api.workflow_terminated(outcome.run_id, timeout_s=left)
    if terminated:
        state = OutcomeState.CANCELED
        message = "the run was terminated by someone else (its workflow's deadline was set to 0)"
        return replace(outcome, state=state, exit_code=exit_code_for(state), message=message)
    if terminated is None:
        return replace(outcome, message=f"FAILED (possibly terminated: CANCELING was not observed); {outcome.message}")
    return outcome


def settle_terminated(
    app: App,
    tracked: Sequence[Tracked],
    asked: Sequence[str],
    failed: Mapping[str, object],
    *,
    policy: str,
    why: str,
    quick: bool = False,
) -> None:
    """``--report-status``: the runs kfp-launch asked Kubeflow to terminate (``asked``, as
    :func:`~kfp_launch.termination.terminate_runs` did under ``policy``; ``failed``: the ones it could not)
    get ``canceled``, since their exit task may not run. ``quick`` on a signal (see ``status_gate.settle``)."""
    if policy != "terminate":
        return
    for t in tracked:
        run_id = t.base.run_id
        if run_id in asked and run_id not in failed and t.status.status_target is not None:
            settle(app, t.status, t.base.run_url, why, state="canceled", quick=quick)


def _at_deadline(
    app: App, api: KfpApi, tracked: Sequence[Tracked], outcomes: list[RunOutcome], source: str
) -> list[RunOutcome]:
    late = [o.run_id for o in outcomes if o.state == OutcomeState.TIMED_OUT]
    policy = app.settings.on_timeout
    failed = terminate_runs(
        api, late, app.console, why="the wait deadline passed", policy=policy, policy_flag="--on-timeout"
    )
    why = f"the wait deadline ({source}) passed: the run was terminated"
    settle_terminated(app, tracked, late, failed, policy=policy, why=why)
    left = "terminated the run" if policy == "terminate" else "the run keeps running (--on-timeout detach)"
    message = f"the wait deadline ({source}) passed: {left}"
    return [replace(o, message=message) if o.run_id in late else o for o in outcomes]


def _explained(
    app: App,
    api: KfpApi,
    outcome: RunOutcome,
    status: RunStatus,
    time_left: Callable[[], float | None],
    live: LiveLogs | None,
    *,
    several: bool,
) -> RunOutcome:
    """A FAILED outcome with its failing tasks' log tails (printed now unless the live log showed them
    whole, carried to JUnit and the note); none with ``--logs none``."""
    if outcome.state != OutcomeState.FAILED:
        return outcome
    job = outcome.job if several else ""
    log_lines = app.settings.log_lines
    refused = live is not None and live.refused  # said once already: reading again would only warn again
    explained = explain_failure(
        api,
        status,
        app.console,
        log_lines=0 if app.log_mode == "none" or refused else log_lines,
        job=job,
        time_left=time_left,
        shown_live=(lambda run_id, pod: live.tail_shown(run_id, pod, log_lines)) if live is not None else None,
    )
    return replace(outcome, tasks=explained.tasks or outcome.tasks)


def print_outcomes(outcomes: Sequence[RunOutcome], console: Console) -> None:
    """The end of a wait: one run's state, duration and link; several runs' table and how many failed."""
    if len(outcomes) == 1:
        _print_one(outcomes[0], console)
        return
    console.table(
        ["job", "state", "duration", "run"],
        [[o.job, o.state, f"{o.duration_s:.0f}s" if o.duration_s is not None else "", o.run_url] for o in outcomes],
        whole=["run"],
    )
    for o in outcomes:
        if o.message:
            console.line(f"{o.job}: {o.state}: {o.message}")
    code = worst_exit_code([o.exit_code for o in outcomes])
    if code != ExitCode.SUCCESS:
        failed = sum(1 for o in outcomes if o.exit_code != ExitCode.SUCCESS)
        console.error(f"{failed} of {len(outcomes)} runs did not succeed (exit {int(code)})")
    else:
        console.markup(f"[bold green]{len(outcomes)} runs ended well[/] (exit 0)")


def _print_one(outcome: RunOutcome, console: Console) -> None:
    took = f" in {outcome.duration_s:.0f}s" if outcome.duration_s is not None else ""
    if outcome.exit_code == ExitCode.SUCCESS:
        if outcome.state == OutcomeState.SKIPPED:
            console.warn("the run was SKIPPED (exit 0)")
        console.url("run", outcome.run_url)
        console.markup(f"[bold green]run {outcome.state}[/]{took} (exit 0)")
        return
    console.url("run", outcome.run_url)
    console.error(f"run {outcome.state}{took}: {outcome.message} (exit {int(outcome.exit_code)})")
