"""The Kubeflow use cases: run a job in the branch's experiment and wait; watch a run; cancel runs.

Read top to bottom, :func:`run_on_kubeflow` is the product: compile, resolve the experiment, submit
(or attach to this CI job's active run), print the URL and write the state file, wait, explain a
failure, and map the outcome to an exit code.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

from kfp_launch import interrupts
from kfp_launch.ci_context import CiContext
from kfp_launch.connection import Connection, connection_from
from kfp_launch.console import Console
from kfp_launch.errors import ExitCode, InputError, Interrupted, KfpApiError, KfpLaunchError, KfpUnavailableError
from kfp_launch.kfp_api import KfpApi
from kfp_launch.launch import (
    Reporting,
    compile_pipeline,
    experiment_for,
    job_to_run,
    print_run_summary,
    read_context,
    resolve_run_parameters,
)
from kfp_launch.models import CompiledPipeline, Experiment, ResolvedParameters, RunOutcome, RunStatus
from kfp_launch.progress import RunProgress
from kfp_launch.settings import Settings
from kfp_launch.submission import (
    StateEntry,
    attach_prefix,
    create_run_once,
    ensure_experiment,
    environ_experiment_overrides,
    experiment_description,
    find_active_attempt,
    find_by_key,
    new_run_key,
    read_state,
    run_description,
    run_key,
    run_name,
    write_state,
)
from kfp_launch.watch import PollPolicy, WaitResult, call_with_retry, wait_for_run

_T = TypeVar("_T")

DEADLINE_MARGIN = timedelta(minutes=5)
"""Report this long before GitLab's job timeout (``CI_JOB_STARTED_AT + CI_JOB_TIMEOUT``)."""
TERMINATE_TIMEOUT_S = 5.0
"""Per-request timeout when terminating on a signal: the runner's grace period can be ~10 s."""


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Injected time, and how to reach Kubeflow (tests pass fakes).

    Attributes:
        clock: monotonic seconds.
        sleep: sleeps that many seconds.
        wall_clock: the current aware UTC datetime.
        api_factory: builds the adapter for a connection.
    """

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    api_factory: Callable[[Connection], KfpApi] = KfpApi


def poll_policy(settings: Settings) -> PollPolicy:
    """The poll policy from ``--poll-interval`` and ``--max-outage``."""
    return PollPolicy(
        first_interval_s=settings.poll_interval.total_seconds(), max_outage_s=settings.max_outage.total_seconds()
    )


def run_on_kubeflow(
    job: str | None,
    settings: Settings,
    environ: Mapping[str, str],
    project_dir: Path,
    console: Console,
    runtime: Runtime | None = None,
) -> ExitCode:
    """Compile ``job``, run it in the branch's experiment, wait, and exit with the outcome's code.

    Raises:
        KfpLaunchError: invalid input (3), auth (4), Kubeflow unreachable (5); nothing is left running
            that we started, except where ``--on-cancel detach`` says so.
    """
    rt = runtime or Runtime()
    clear_previous_run_files(settings, project_dir)
    ci = read_context(settings, environ, project_dir)
    job = job_to_run(job, ci)
    console.section_start("kfp_launch_compile", f"Compiling job {job}", collapsed=True, announce=False)
    compiled = compile_pipeline(job, settings, project_dir)
    params = resolve_run_parameters(compiled, settings, project_dir)
    experiment_name = experiment_for(ci, settings)
    assert experiment_name is not None  # read_context(require_ref=True) guarantees a ref
    name = run_name(settings.run_name_template, job=compiled.job, ci=ci)
    console.section_end("kfp_launch_compile")
    print_run_summary(compiled, params, ci, experiment_name, console)
    connection = connection_from(settings, environ)
    print_connection(connection, console)
    for variable in environ_experiment_overrides(environ):
        console.warn(f"{variable} is ignored: kfp-launch resolves the experiment itself and passes its id")
    if settings.dry_run:
        return _dry_run(connection, experiment_name, name, compiled, params, settings, console, rt)
    check_time_to_wait(settings, ci, rt)
    api = rt.api_factory(connection)
    retry = retrier(poll_policy(settings), console, rt)
    jira_url = environ.get("JIRA_URL") or None
    console.section_start("kfp_launch_submit", f"Submitting {compiled.pipeline_name} to {connection.host}")
    experiment = preflight(settings, console, rt)(
        lambda: ensure_experiment(api, experiment_name, experiment_description(ci, jira_url=jira_url), say=console.line)
    )
    [(run, _attached)] = submit_recorded(
        api,
        experiment,
        [Planned(compiled=compiled, params=params, name=name, key=new_run_key(ci, compiled.job))],
        ci,
        settings,
        retry,
        jira_url,
        project_dir / settings.state_file,
        console,
    )
    console.section_end("kfp_launch_submit")
    reporting = Reporting(settings, environ, ci, project_dir, console, notes=True)
    started = RunOutcome(
        job=compiled.job,
        pipeline_name=compiled.pipeline_name,
        state="RUNNING",
        exit_code=0,
        run_id=run.run_id,
        run_url=connection.run_url(run.run_id),
        experiment_id=experiment.experiment_id,
        experiment=experiment.name,
        metrics_available=False,
        parameters=params.as_dict(),
    )
    try:
        reporting.started(started)
    except (Interrupted, KeyboardInterrupt):
        with interrupts.deferred():
            _on_interrupt(api, run.run_id, settings, console)
        raise
    if not settings.wait:
        console.line("not waiting (--no-wait): kfp-launch watch " + run.run_id)
        reporting.finished(replace(started, state="DETACHED", message="submitted without waiting (--no-wait)"))
        return ExitCode.SUCCESS
    outcome = wait_and_explain(
        api,
        run,
        experiment,
        compiled.job,
        compiled.pipeline_name,
        settings,
        ci,
        console,
        rt,
        parameters=params.as_dict(),
        state_path=project_dir / settings.state_file,
        reporting=reporting,
    )
    return ExitCode(outcome.exit_code)


PREFLIGHT_OUTAGE_S = 30.0
"""Before anything is submitted, give up on an unreachable Kubeflow after this long (a wrong KFP_HOST
should not take --max-outage to report; the CI template retries exit 5 anyway)."""
MIN_TIME_TO_WAIT_S = 60.0
"""Refuse to submit when the wait deadline leaves less than this: the run would be terminated at once."""


@dataclass(frozen=True, kw_only=True)
class Planned:
    """A run about to be submitted: what, under which name, with which key."""

    compiled: CompiledPipeline
    params: ResolvedParameters
    name: str
    key: str


def clear_previous_run_files(settings: Settings, project_dir: Path) -> None:
    """Remove the state file and reports an earlier run left (in CI: an earlier job's artifacts), so that
    nothing of another run is cancelled by the after_script or re-published as this job's reports."""
    for name in (settings.state_file, settings.dotenv_report, settings.junit_report, settings.metrics_report):
        try:
            (project_dir / name).unlink(missing_ok=True)
        except OSError:
            pass  # not removable (e.g. a path through a file): writing it later says so clearly


def preflight(settings: Settings, console: Console, rt: Runtime) -> Retry:
    """The retry rule for calls before anything is submitted: at most :data:`PREFLIGHT_OUTAGE_S`."""
    policy = poll_policy(settings)
    return retrier(replace(policy, max_outage_s=min(policy.max_outage_s, PREFLIGHT_OUTAGE_S)), console, rt)


def check_time_to_wait(settings: Settings, ci: CiContext, rt: Runtime) -> None:
    """Refuse to submit when the wait deadline is (almost) past.

    Raises:
        InputError: less than :data:`MIN_TIME_TO_WAIT_S` left (e.g. a CI job timeout of 4 minutes).
    """
    deadline, source = wait_deadline(settings, ci, rt)
    if not settings.wait or deadline is None or settings.timeout is not None:
        return  # an explicit --timeout is the user's choice, however short
    left = deadline - rt.clock()
    if left < MIN_TIME_TO_WAIT_S:
        raise InputError(
            f"The wait deadline ({source}) leaves {max(left, 0):.0f}s, so the run would be terminated at once; "
            "nothing was submitted.",
            hint="raise the GitLab job timeout, set --timeout, or submit with --no-wait.",
        )


def submit_recorded(
    api: KfpApi,
    experiment: Experiment,
    planned: list[Planned],
    ci: CiContext,
    settings: Settings,
    retry: Retry,
    jira_url: str | None,
    state_path: Path,
    console: Console,
) -> list[tuple[RunStatus, bool]]:
    """Submit (or attach) each planned run, keeping the state file true at every step.

    The state file is written before the first request, with each run's key: an unwritable path fails
    before anything is submitted, and a job killed mid-submission leaves what ``cancel --state-file``
    needs to find its run. A signal during submission terminates what was created (``--on-cancel``),
    including a run whose create call was cut short (found by its key).

    Returns:
        ``(run, attached)`` per planned run, in order.
    """
    url = api.connection.run_url
    entries = [
        StateEntry(
            run_id="",
            experiment_id=experiment.experiment_id,
            host=api.connection.host,
            namespace=api.connection.namespace,
            url="",
            job=p.compiled.job,
            cancel_policy=settings.on_cancel,
            run_key=p.key,
            run_name=p.name,
            ci_job_id=ci.job_id or "",
        )
        for p in planned
    ]
    write_state(state_path, entries)
    results: list[tuple[RunStatus, bool]] = []
    try:
        for i, p in enumerate(planned):
            run, attached = submit_or_attach(api, experiment, p, ci, settings, retry, jira_url)
            entries[i] = replace(
                entries[i], run_id=run.run_id, url=url(run.run_id), run_key=run_key(run.description) or p.key
            )
            write_state(state_path, entries)
            console.url(p.compiled.job if len(planned) > 1 else "run", url(run.run_id))
            console.line(("attached to the active run of this CI job: " if attached else "submitted run ") + run.run_id)
            results.append((run, attached))
    except (Interrupted, KeyboardInterrupt):
        _terminate_submitted(api, experiment, planned, results, settings, console)
        raise
    except KfpUnavailableError:
        # Exit 5: the CI template retries the job, whose attempt finds these runs by their keys; the
        # after_script in between must not terminate them.
        write_state(state_path, [replace(e, cancel_policy="detach") for e in entries])
        raise
    return results


def _terminate_submitted(
    api: KfpApi,
    experiment: Experiment,
    planned: list[Planned],
    results: list[tuple[RunStatus, bool]],
    settings: Settings,
    console: Console,
) -> None:
    if settings.on_cancel == "detach":
        console.warn("interrupted while submitting: what was submitted keeps running (--on-cancel detach)")
        return
    with interrupts.deferred():
        _terminate_each(api, experiment, planned, results, console)


def _terminate_each(
    api: KfpApi,
    experiment: Experiment,
    planned: list[Planned],
    results: list[tuple[RunStatus, bool]],
    console: Console,
) -> None:
    run_ids = [run.run_id for run, _ in results]
    if len(results) < len(planned):  # the create call in flight may have stored the run
        cut = planned[len(results)]
        try:
            found = find_by_key(api, experiment.experiment_id, cut.name, cut.key)
        except KfpLaunchError:
            found = None
        run_ids += [found.run_id] if found else []
    for run_id in run_ids:
        try:
            api.terminate_run(run_id, timeout_s=TERMINATE_TIMEOUT_S)
            console.warn(f"interrupted while submitting: asked Kubeflow to terminate run {run_id}")
        except KfpLaunchError as exc:
            console.warn(f"interrupted while submitting: could not terminate run {run_id}: {exc.message}")


def print_connection(connection: Connection, console: Console) -> None:
    console.table(["Kubeflow", "value", "from"], [list(row) for row in connection.summary_rows()])


class Retry(Protocol):
    """Runs one safe API call with the transient-retry rule (:func:`watch.call_with_retry`)."""

    def __call__(self, call: Callable[[], _T]) -> _T: ...


def retrier(policy: PollPolicy, console: Console, rt: Runtime) -> Retry:
    """A :class:`Retry` that warns on each transient failure."""

    def on_transient(exc: KfpUnavailableError, outage_s: float) -> None:
        console.warn(f"{exc.message} (retrying; failing for {outage_s:.0f}s of at most {policy.max_outage_s:.0f}s)")

    class _Retry:
        def __call__(self, call: Callable[[], _T]) -> _T:
            return call_with_retry(call, policy=policy, on_transient=on_transient, clock=rt.clock, sleep=rt.sleep)

    return _Retry()


def _dry_run(
    connection: Connection,
    experiment_name: str,
    name: str,
    compiled: CompiledPipeline,
    params: ResolvedParameters,
    settings: Settings,
    console: Console,
    rt: Runtime,
) -> ExitCode:
    api = rt.api_factory(connection)
    experiment = preflight(settings, console, rt)(lambda: api.find_experiment(experiment_name))
    state = (
        "does not exist yet: would be created"
        if experiment is None
        else (
            f"exists ({experiment.experiment_id}" + (", archived: would be unarchived)" if experiment.archived else ")")
        )
    )
    console.line(f'dry run: experiment "{experiment_name}" {state}')
    console.line(
        f'dry run: would submit run "{name}" of {compiled.pipeline_name} with {params.arguments() or "defaults"}'
    )
    console.line("dry run: nothing was changed")
    return ExitCode.SUCCESS


def submit_or_attach(
    api: KfpApi,
    experiment: Experiment,
    planned: Planned,
    ci: CiContext,
    settings: Settings,
    retry: Retry,
    jira_url: str | None,
) -> tuple[RunStatus, bool]:
    """Attach to this CI job's active run of the job, or create the run exactly once (by its key)."""
    compiled, params, name, key = planned.compiled, planned.params, planned.name, planned.key
    prefix = attach_prefix(ci, compiled.job)
    if prefix is not None:
        active = retry(lambda: find_active_attempt(api, experiment.experiment_id, name, prefix))
        if active is not None:
            return active, True
    description = run_description(compiled, ci, key, jira_url=jira_url)
    with tempfile.TemporaryDirectory(prefix="kfp-launch-") as tmp:
        package = Path(tmp) / "pipeline.yaml"
        package.write_text(compiled.package_yaml, encoding="utf-8")

        def create() -> RunStatus:
            return api.create_run(
                experiment_id=experiment.experiment_id,
                display_name=name,
                description=description,
                package_path=str(package),
                parameters=params.arguments(),
                pipeline_root=settings.pipeline_root,
                enable_caching=False if settings.no_cache else None,
                service_account=settings.service_account,
            )

        run = create_run_once(
            api, experiment_id=experiment.experiment_id, name=name, key=key, create=create, retry=retry
        )
    return run, False


def wait_deadline(settings: Settings, ci: CiContext, rt: Runtime) -> tuple[float | None, str]:
    """The ``clock()`` value to stop waiting at, and where it comes from: ``--timeout``, else in CI
    ``CI_JOB_STARTED_AT + CI_JOB_TIMEOUT - 5m`` (so we report before GitLab kills the job)."""
    if settings.timeout is not None:
        return rt.clock() + settings.timeout.total_seconds(), f"--timeout {settings.timeout.total_seconds():g}s"
    if ci.in_ci and ci.job_deadline is not None:
        left = (ci.job_deadline - DEADLINE_MARGIN - rt.wall_clock()).total_seconds()
        return rt.clock() + max(left, 0.0), "the GitLab job timeout (CI_JOB_TIMEOUT) minus 5 minutes"
    return None, ""


def wait_and_explain(
    api: KfpApi,
    run: RunStatus,
    experiment: Experiment,
    job: str,
    pipeline_name: str,
    settings: Settings,
    ci: CiContext,
    console: Console,
    rt: Runtime,
    *,
    parameters: Mapping[str, object],
    state_path: Path | None = None,
    reporting: Reporting | None = None,
) -> RunOutcome:
    """Wait for ``run``; on a signal or the deadline terminate it (per policy); explain; summarize.

    When the deadline passes with ``--on-timeout detach``, the state file's cancel policy becomes
    ``detach``, so the CI template's after_script leaves the run alone too.

    Raises:
        Interrupted / KeyboardInterrupt: after terminating the run (``--on-cancel``), for exit 128+N.
        KfpAuthError: credentials refused twice (exit 4).
    """
    deadline, deadline_source = wait_deadline(settings, ci, rt)
    policy = poll_policy(settings)
    started = rt.clock()
    age = (rt.wall_clock() - run.created_at).total_seconds() if run.created_at else 0.0
    url = api.connection.run_url(run.run_id)
    # What every outcome of this wait shares; each ending fills in state, code, duration and message.
    base = RunOutcome(
        job=job,
        pipeline_name=pipeline_name,
        state="RUNNING",
        exit_code=0,
        run_id=run.run_id,
        run_url=url,
        experiment_id=experiment.experiment_id,
        experiment=experiment.name,
        metrics_available=False,
        parameters=dict(parameters),
    )
    console.section_start("kfp_launch_wait", f"Waiting for run {run.run_id}")
    try:
        with RunProgress(console) as progress:
            result = wait_for_run(
                lambda: api.get_run(run.run_id),
                policy=policy,
                on_status=progress.update,
                on_transient=lambda exc, outage: progress.note(f"{exc.message}; retrying (outage {outage:.0f}s)"),
                deadline=deadline,
                age_at_start_s=max(age, 0.0),
                clock=rt.clock,
                sleep=rt.sleep,
            )
    except (Interrupted, KeyboardInterrupt) as exc:
        with interrupts.deferred():
            _on_interrupt(api, run.run_id, settings, console)
            if reporting is not None:
                reporting.finished(
                    replace(
                        base,
                        state="INTERRUPTED",
                        exit_code=128 + getattr(exc, "signum", 2),
                        duration_s=rt.clock() - started,
                        message=f"the CI job was interrupted; --on-cancel {settings.on_cancel}",
                    )
                )
        raise
    except KfpApiError as exc:
        if exc.status != 404:
            _report_error(reporting, replace(base, duration_s=rt.clock() - started), exc)
            raise
        # The run vanished mid-wait: someone deleted it. Like a run terminated by someone else: exit 7.
        result = WaitResult(
            statuses={run.run_id: replace(run, state="CANCELED", error="the run was deleted")},
            reason="terminal",
            polls=0,
        )
    except KfpLaunchError as exc:  # auth refused twice (4), TLS (3): still write the reports
        _report_error(reporting, replace(base, duration_s=rt.clock() - started), exc)
        raise
    finally:
        console.section_end("kfp_launch_wait")
    outcome = _outcome(
        result, api, run, base, settings, console, deadline_source=deadline_source, waited_s=rt.clock() - started
    )
    if state_path is not None and (
        (outcome.state == "TIMED_OUT" and settings.on_timeout == "detach") or outcome.state == "UNREACHABLE"
    ):
        # Unreachable: the run may be fine; the CI template retries exit 5 and the retry attaches to it.
        mark_detached(state_path, [run.run_id])
    if outcome.state == "FAILED" and result.status is not None:
        explain_failure(api, result.status, settings.log_lines, console)
    _print_final(outcome, console)
    if reporting is not None:
        reporting.finished(outcome)
    return outcome


def _report_error(reporting: Reporting | None, base: RunOutcome, exc: KfpLaunchError) -> None:
    if reporting is not None:
        reporting.finished(replace(base, state="ERROR", exit_code=int(exc.exit_code), message=exc.message))


def mark_detached(state_path: Path, run_ids: list[str]) -> None:
    """Set the cancel policy of these runs to ``detach`` in the state file (after_script leaves them)."""
    if not state_path.is_file():
        return
    entries = read_state(state_path)
    write_state(state_path, [replace(e, cancel_policy="detach") if e.run_id in run_ids else e for e in entries])


def _on_interrupt(api: KfpApi, run_id: str, settings: Settings, console: Console) -> None:
    if settings.on_cancel == "detach":
        console.warn(f"interrupted: run {run_id} keeps running (--on-cancel detach)")
        return
    try:
        api.terminate_run(run_id, timeout_s=TERMINATE_TIMEOUT_S)
        console.warn(f"interrupted: asked Kubeflow to terminate run {run_id}")
    except KfpApiError:
        console.warn(f"interrupted: run {run_id} had already finished")
    except KfpLaunchError as exc:
        console.warn(
            f"interrupted, and terminating run {run_id} failed: {exc.message}; "
            "the CI template's after_script retries with kfp-launch cancel --state-file"
        )


def _outcome(
    result: WaitResult,
    api: KfpApi,
    run: RunStatus,
    base: RunOutcome,
    settings: Settings,
    console: Console,
    *,
    deadline_source: str,
    waited_s: float,
) -> RunOutcome:
    status = result.status or run
    state, code, message = classify(result, status)
    if result.reason == "deadline":
        if settings.on_timeout == "terminate":
            _terminate_quietly(api, run.run_id, console)
            message = f"the wait deadline ({deadline_source}) passed: terminated the run"
        else:
            message = f"the wait deadline ({deadline_source}) passed: the run keeps running (--on-timeout detach)"
    duration = (
        (status.finished_at - status.created_at).total_seconds()
        if status.finished_at and status.created_at
        else waited_s
    )
    return replace(base, state=state, exit_code=int(code), tasks=status.tasks, duration_s=duration, message=message)


def classify(result: WaitResult, status: RunStatus) -> tuple[str, ExitCode, str]:
    if result.reason == "outage":
        return (
            "UNREACHABLE",
            ExitCode.UNREACHABLE,
            (f"Kubeflow failed for {result.outage_s:.0f}s (more than --max-outage): {result.last_error}"),
        )
    if result.reason == "deadline":
        return "TIMED_OUT", ExitCode.DEADLINE, ""
    if status.state == "SUCCEEDED":
        return "SUCCEEDED", ExitCode.SUCCESS, ""
    if status.state == "SKIPPED":
        return "SKIPPED", ExitCode.SUCCESS, "the run was SKIPPED"
    if status.state == "CANCELED":
        return "CANCELED", ExitCode.RUN_CANCELED, "the run was canceled"
    if status.was_canceling:
        # KFP 2.17 reports a run terminated in the UI as FAILED after CANCELING (reference §1.5).
        return "CANCELED", ExitCode.RUN_CANCELED, "the run was terminated by someone else (FAILED after CANCELING)"
    failed = [t.name for t in status.tasks if t.state == "FAILED"]
    return "FAILED", ExitCode.RUN_FAILED, ("failed tasks: " + ", ".join(failed)) if failed else "see the run's page"


def _terminate_quietly(api: KfpApi, run_id: str, console: Console) -> None:
    try:
        api.terminate_run(run_id, timeout_s=TERMINATE_TIMEOUT_S)
    except KfpLaunchError as exc:
        console.warn(f"could not terminate run {run_id}: {exc.message}")


def explain_failure(api: KfpApi, status: RunStatus, log_lines: int, console: Console) -> None:
    """Name the failing tasks with their errors and print the last ``log_lines`` lines of each one's
    log, fetched best-effort from the API server's log endpoint."""
    failing = [t for t in status.tasks if t.state == "FAILED"]
    errors = [e for _, e in status.state_history if e] + ([status.error] if status.error else [])
    if not failing:
        console.line("why it failed: " + (errors[-1] if errors else "Kubeflow gave no task details or error message"))
        return
    for task in failing:
        console.line(f"task {task.name} FAILED" + (f": {task.error}" if task.error else ""), style="red")
        for node in task.node_ids:
            try:
                text = api.task_log(status.run_id, node)
            except KfpLaunchError as exc:
                console.line(f"  (log of {node} not available: {exc.message})", style="dim")
                continue
            lines = text.rstrip("\n").splitlines()[-log_lines:] if log_lines > 0 else []
            if lines:
                console.line(f"  last {len(lines)} lines of {node}:")
                for line in lines:
                    console.line(f"  | {line}")
                break


def _print_final(outcome: RunOutcome, console: Console) -> None:
    took = f" in {outcome.duration_s:.0f}s" if outcome.duration_s is not None else ""
    if outcome.exit_code == ExitCode.SUCCESS:
        if outcome.state == "SKIPPED":
            console.warn("the run was SKIPPED (exit 0)")
        console.markup(f"[bold green]run {outcome.state}[/]{took}")
        console.url("run", outcome.run_url)
        return
    console.url("run", outcome.run_url)
    console.error(f"run {outcome.state}{took}: {outcome.message} (exit {outcome.exit_code})")


def watch_run(
    run_id: str,
    settings: Settings,
    environ: Mapping[str, str],
    project_dir: Path,
    console: Console,
    runtime: Runtime | None = None,
) -> ExitCode:
    """Attach to an existing run and wait for it like ``run`` does. Watching is not owning: unless
    ``--on-cancel``/``--on-timeout`` say otherwise, Ctrl-C and the deadline leave the run running."""
    rt = runtime or Runtime()
    if settings.sources.get("on_cancel", "default") == "default":
        settings = replace(settings, on_cancel="detach")
    if settings.sources.get("on_timeout", "default") == "default":
        settings = replace(settings, on_timeout="detach")
    connection = connection_from(settings, environ)
    api = rt.api_factory(connection)
    retry = retrier(poll_policy(settings), console, rt)
    run = retry(lambda: api.get_run(run_id))
    assert isinstance(run, RunStatus)
    console.url("run", connection.run_url(run.run_id))
    ci = read_context(settings, environ, project_dir, require_ref=False)
    experiment = Experiment(experiment_id=run.experiment_id, name="")
    outcome = wait_and_explain(
        api, run, experiment, run.name, run.name, settings, ci, console, rt, parameters=run.parameters
    )
    return ExitCode(outcome.exit_code)


def cancel_runs(
    run_id: str | None,
    state_file: str | None,
    settings: Settings,
    environ: Mapping[str, str],
    project_dir: Path,
    console: Console,
    runtime: Runtime | None = None,
) -> ExitCode:
    """Terminate a run, or every run recorded in a state file (honouring its cancel policy).

    Exits 0 when the runs are terminating or already finished.
    """
    rt = runtime or Runtime()
    if state_file:
        entries = read_state(project_dir / state_file)
    elif run_id:
        connection = connection_from(settings, environ)
        entries = [
            StateEntry(
                run_id=run_id,
                experiment_id="",
                host=connection.host,
                namespace=connection.namespace,
                url=connection.run_url(run_id),
                job="",
                cancel_policy="terminate",
            )
        ]
    else:
        from kfp_launch.errors import UsageError

        raise UsageError(
            "Say which run to cancel: a RUN_ID or --state-file FILE.",
            hint="e.g. kfp-launch cancel --state-file .kfp-launch/state.json",
        )
    codes = []
    for entry in entries:  # each on its own: one failure must not spare the others
        try:
            _cancel_one(entry, settings, environ, console, rt)
        except KfpLaunchError as exc:
            console.error(f"run {entry.run_id or entry.run_key}: {exc.message}", exc.hint)
            codes.append(int(exc.exit_code))
    return ExitCode(codes[0]) if codes else ExitCode.SUCCESS


def _cancel_one(
    entry: StateEntry, settings: Settings, environ: Mapping[str, str], console: Console, rt: Runtime
) -> None:
    if entry.cancel_policy == "detach":
        console.line(f"run {entry.run_id}: cancel policy is detach, leaving it running")
        return
    current_job = environ.get("CI_JOB_ID", "").strip()
    if entry.ci_job_id and current_job and entry.ci_job_id != current_job:
        # A state file from an earlier job's artifacts: its runs are not this job's to terminate.
        console.line(
            f"run {entry.run_id}: recorded by CI job {entry.ci_job_id}, not this one ({current_job}); leaving it"
        )
        return
    # The run lives where the state file says, whatever the current settings say.
    recorded = replace(settings, host=entry.host or settings.host, namespace=entry.namespace or settings.namespace)
    connection = connection_from(recorded, environ)
    api = rt.api_factory(connection)
    retry = preflight(settings, console, rt)  # after_script has 5 minutes for everything, not --max-outage each
    if not entry.run_id:  # recorded before its create call returned: find it by its key, if it exists
        found = retry(lambda: find_by_key(api, entry.experiment_id, entry.run_name, entry.run_key))
        if found is None:
            console.line(f"job {entry.job}: no run was created (key {entry.run_key})")
            return
        entry = replace(entry, run_id=found.run_id)
    run = retry(lambda: api.get_run(entry.run_id))
    if run.is_terminal:
        console.line(f"run {entry.run_id} already finished: {run.state}")
        return
    if run.state == "CANCELING":
        console.line(f"run {entry.run_id} is already being terminated (CANCELING)")
        return
    try:
        retry(lambda: api.terminate_run(entry.run_id))
    except KfpApiError:
        console.line(f"run {entry.run_id} finished before it could be terminated")
        return
    console.line(f"asked Kubeflow to terminate run {entry.run_id} ({run.state} -> CANCELING)")
    console.url("run", entry.url or connection.run_url(entry.run_id))
