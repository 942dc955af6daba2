"""Many runs from one command (``run JOB JOB ...``, ``run --all --profile toy``): continuous learning.

Every job is compiled and parameterized first; one problem anywhere means nothing is submitted. Then all
runs go into the branch's experiment, and **one** poll loop waits for all of them: each tick is a single
``list runs`` request filtered to our run ids (``kfp_api.KfpApi.list_runs_by_id``), so the request rate does
not grow with the number of runs. The exit code is the worst outcome by :data:`errors.SEVERITY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kfp_launch import interrupts
from kfp_launch.ci_context import CiContext
from kfp_launch.connection import connection_from
from kfp_launch.console import Console
from kfp_launch.errors import ExitCode, InputError, Interrupted, KfpLaunchError, worst_exit_code
from kfp_launch.kfp_api import KfpApi
from kfp_launch.launch import Reporting, compile_jobs, experiment_for, jobs_to_run, read_context
from kfp_launch.models import CompiledPipeline, Experiment, ResolvedParameters, RunOutcome, RunStatus
from kfp_launch.progress import RunsProgress
from kfp_launch.remote import (
    Planned,
    Runtime,
    check_time_to_wait,
    classify,
    clear_previous_run_files,
    explain_failure,
    mark_detached,
    poll_policy,
    preflight,
    print_connection,
    retrier,
    submit_recorded,
    wait_deadline,
)
from kfp_launch.settings import Settings
from kfp_launch.submission import ensure_experiment, experiment_description, new_run_key, run_name
from kfp_launch.watch import WaitResult, wait_for_runs

IDS_PER_REQUEST = 50
"""Run ids per list request: 50 UUIDs keep the filtered URL under ~3 KB (ingress header buffers are
often 8 KB), so up to 50 runs cost one request per poll tick, 200 runs four."""
VANISHED_AFTER_POLLS = 3
"""A run missing from this many list responses in a row was deleted: it counts as CANCELED (exit 7)."""

MAX_RUNS = 200
"""At most this many runs from one command (four list requests per poll tick; split larger sets by job)."""


@dataclass(frozen=True, kw_only=True)
class Launched:
    """One submitted run of the fan-out."""

    compiled: CompiledPipeline
    params: ResolvedParameters
    run: RunStatus


def run_many_on_kubeflow(
    jobs: list[str],
    all_jobs: bool,
    settings: Settings,
    environ: Mapping[str, str],
    project_dir: Path,
    console: Console,
    runtime: Runtime | None = None,
) -> ExitCode:
    """Compile every job, submit them all to the branch's experiment, wait for all with one loop.

    Raises:
        KfpLaunchError: a job cannot be compiled (3, nothing submitted), auth (4), unreachable (5).
    """
    rt = runtime or Runtime()
    clear_previous_run_files(settings, project_dir)
    ci = read_context(settings, environ, project_dir)
    names = jobs_to_run(jobs, all_jobs, ci, settings, project_dir)
    console.section_start("kfp_launch_compile", f"Compiling {len(names)} jobs", collapsed=True, announce=False)
    ready = compile_jobs(names, settings, project_dir, skip_non_jobs=all_jobs)
    console.section_end("kfp_launch_compile")
    if len(ready) > MAX_RUNS:
        raise InputError(
            f"{len(ready)} runs at once is more than {MAX_RUNS}; nothing was submitted.",
            hint="split them into several CI jobs by naming the jobs to run.",
        )
    experiment_name = experiment_for(ci, settings)
    assert experiment_name is not None
    console.line(f"jobs: {', '.join(c.job for c, _ in ready)}")
    console.line(
        f"experiment: {experiment_name}  [{ci.ref_kind} {ci.ref}]" + (f"  ticket {ci.ticket}" if ci.ticket else "")
    )
    connection = connection_from(settings, environ)
    print_connection(connection, console)
    if settings.dry_run:
        for compiled, params in ready:
            console.line(f"dry run: would submit {compiled.job} with {params.arguments() or 'defaults'}")
        console.line("dry run: nothing was changed")
        return ExitCode.SUCCESS
    check_time_to_wait(settings, ci, rt)
    api = rt.api_factory(connection)
    retry = retrier(poll_policy(settings), console, rt)
    jira_url = environ.get("JIRA_URL") or None
    console.section_start("kfp_launch_submit", f"Submitting {len(ready)} runs to {connection.host}")
    experiment = preflight(settings, console, rt)(
        lambda: ensure_experiment(api, experiment_name, experiment_description(ci, jira_url=jira_url), say=console.line)
    )
    planned = [
        Planned(
            compiled=c,
            params=p,
            name=run_name(settings.run_name_template, job=c.job, ci=ci),
            key=new_run_key(ci, c.job),
        )
        for c, p in ready
    ]
    state_path = project_dir / settings.state_file
    submitted = submit_recorded(api, experiment, planned, ci, settings, retry, jira_url, state_path, console)
    launched = [
        Launched(compiled=p.compiled, params=p.params, run=run) for p, (run, _) in zip(planned, submitted, strict=True)
    ]
    console.section_end("kfp_launch_submit")
    reporting = Reporting(settings, environ, ci, project_dir, console, notes=True)
    if not settings.wait:
        reporting.finished_many(
            [
                _outcome(
                    item,
                    None,
                    "DETACHED",
                    ExitCode.SUCCESS,
                    "not waited for",
                    experiment,
                    connection.run_url(item.run.run_id),
                )
                for item in launched
            ]
        )
        return ExitCode.SUCCESS
    return _wait_all(api, launched, experiment, settings, ci, console, rt, reporting, state_path)


def _wait_all(
    api: KfpApi,
    launched: list[Launched],
    experiment: Experiment,
    settings: Settings,
    ci: CiContext,
    console: Console,
    rt: Runtime,
    reporting: Reporting,
    state_path: Path,
) -> ExitCode:
    ids = list(dict.fromkeys(item.run.run_id for item in launched))
    deadline, deadline_source = wait_deadline(settings, ci, rt)
    jobs = {item.run.run_id: item.compiled.job for item in launched}
    console.section_start("kfp_launch_wait", f"Waiting for {len(ids)} runs")
    last: dict[str, RunStatus] = {}
    missing: dict[str, int] = {}
    try:
        with RunsProgress(console, jobs) as progress:

            def fetch() -> dict[str, RunStatus]:
                statuses = {}
                for start in range(0, len(ids), IDS_PER_REQUEST):
                    chunk = ids[start : start + IDS_PER_REQUEST]
                    statuses.update({s.run_id: s for s in api.list_runs_by_id(experiment.experiment_id, chunk)})
                for run_id in ids:  # a run no longer listed (deleted) must not keep the wait going forever
                    missing[run_id] = 0 if run_id in statuses else missing.get(run_id, 0) + 1
                    if missing[run_id] >= VANISHED_AFTER_POLLS:
                        statuses[run_id] = RunStatus(
                            run_id=run_id, state="CANCELED", error="the run is no longer listed"
                        )
                progress.update(statuses)
                last.update(statuses)
                return statuses

            result = wait_for_runs(
                fetch,
                policy=poll_policy(settings),
                expected=len(ids),
                deadline=deadline,
                on_transient=lambda exc, outage: console.warn(f"{exc.message}; retrying"),
                clock=rt.clock,
                sleep=rt.sleep,
            )
    except (Interrupted, KeyboardInterrupt):
        active = [run_id for run_id in ids if run_id not in last or not last[run_id].is_terminal]
        with interrupts.deferred():
            _terminate_active(api, active, settings.on_cancel, console)
        raise
    finally:
        console.section_end("kfp_launch_wait")
    outcomes = _outcomes(api, launched, result, experiment, settings, deadline_source, console)
    left = [
        o.run_id
        for o in outcomes
        if o.state == "UNREACHABLE" or (o.state == "TIMED_OUT" and settings.on_timeout == "detach")
    ]
    mark_detached(state_path, left)  # after_script leaves them: the retry of exit 5 attaches, detach means detach
    console.table(
        ["job", "state", "duration", "run"],
        [[o.job, o.state, f"{o.duration_s:.0f}s" if o.duration_s is not None else "", o.run_url] for o in outcomes],
    )
    reporting.finished_many(outcomes)
    code = worst_exit_code([o.exit_code for o in outcomes])
    if code != ExitCode.SUCCESS:
        console.error(
            f"{sum(1 for o in outcomes if o.exit_code)} of {len(outcomes)} runs did not succeed (exit {int(code)})"
        )
    return code


def _outcomes(
    api: KfpApi,
    launched: list[Launched],
    result: WaitResult,
    experiment: Experiment,
    settings: Settings,
    deadline_source: str,
    console: Console,
) -> list[RunOutcome]:
    outcomes = []
    for item in launched:
        status = result.statuses.get(item.run.run_id)
        url = api.connection.run_url(item.run.run_id)
        if status is not None and status.is_terminal:
            state, code, message = classify(
                WaitResult(statuses={status.run_id: status}, reason="terminal", polls=1), status
            )
            if state == "FAILED":
                try:
                    explain_failure(api, api.get_run(status.run_id), settings.log_lines, console)
                except KfpLaunchError as exc:
                    console.warn(f"could not read why {item.compiled.job} failed: {exc.message}")
        else:
            state, code, message = classify(result, status or item.run)
            if result.reason == "deadline" and settings.on_timeout == "terminate":
                _terminate_active(api, [item.run.run_id], "terminate", console)
                message = f"the wait deadline ({deadline_source}) passed: terminated the run"
        outcomes.append(_outcome(item, status, state, code, message, experiment, url))
    return outcomes


def _outcome(
    item: Launched, status: RunStatus | None, state: str, code: int, message: str, experiment: Experiment, url: str
) -> RunOutcome:
    run = status or item.run
    duration = (run.finished_at - run.created_at).total_seconds() if run.finished_at and run.created_at else None
    return RunOutcome(
        job=item.compiled.job,
        pipeline_name=item.compiled.pipeline_name,
        state=state,
        exit_code=int(code),
        run_id=item.run.run_id,
        run_url=url,
        experiment_id=experiment.experiment_id,
        experiment=experiment.name,
        tasks=run.tasks,
        metrics_available=False,
        parameters=item.params.as_dict(),
        duration_s=duration,
        message=message,
    )


def _terminate_active(api: KfpApi, run_ids: list[str], policy: str, console: Console) -> None:
    if policy == "detach":
        console.warn(f"interrupted: {len(run_ids)} runs keep running (--on-cancel detach)")
        return
    from kfp_launch.remote import TERMINATE_TIMEOUT_S

    for run_id in run_ids:
        try:
            api.terminate_run(run_id, timeout_s=TERMINATE_TIMEOUT_S)
            console.warn(f"asked Kubeflow to terminate run {run_id}")
        except KfpLaunchError as exc:
            console.warn(f"run {run_id}: {exc.message}")
