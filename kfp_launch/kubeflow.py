"""``run`` on Kubeflow, for one job or many: the product, read top to bottom.

Plan the jobs (compile, parameters) -> the branch's experiment -> submit each run exactly once (or attach
to this CI job's earlier attempt) -> the merge request note -> one wait loop for all runs -> outcomes ->
reports -> the worst exit code. ``run JOB`` is a plan of one; ``run JOB JOB`` and ``run --all`` go the
same road.
"""

from __future__ import annotations

import json
from dataclasses import replace

from kfp_launch import interrupts
from kfp_launch.app import App
from kfp_launch.console import Console
from kfp_launch.descriptions import experiment_description
from kfp_launch.errors import ExitCode, Interrupted, KfpLaunchError, KfpUnavailableError, worst_exit_code
from kfp_launch.experiments import ExperimentNames, ensure_experiment, experiment_names, find_experiment
from kfp_launch.kfp_api import KfpApi
from kfp_launch.models import Experiment, RunOutcome
from kfp_launch.plan import plan_jobs, print_plan
from kfp_launch.polling import PREFLIGHT_OUTAGE_S
from kfp_launch.reporting import Reporting
from kfp_launch.state_file import recorded_by_this_job
from kfp_launch.states import OutcomeState, exit_code_for
from kfp_launch.status_gate import StatusGate
from kfp_launch.submission import (
    PlannedRun,
    SubmittedRun,
    environ_experiment_overrides,
    plan_runs,
    submit_recorded,
)
from kfp_launch.termination import terminate_runs
from kfp_launch.waiting import Tracked, check_time_to_wait, ended_outcome, settle_terminated, wait_and_report


def run_on_kubeflow(app: App, jobs: list[str], all_jobs: bool) -> ExitCode:
    """Compile the jobs, run them in the branch's experiment, wait for all, report; the worst exit code.

    Args:
        app: the wiring (settings, CI context, console, runtime).
        jobs: JOB arguments (none: the CI job's name).
        all_jobs: ``--all``.

    Raises:
        KfpLaunchError: invalid input (3, nothing submitted), auth (4), Kubeflow unreachable (5); nothing
            is left running that we started, except where ``--on-cancel detach`` says so.
    """
    console, settings = app.console, app.settings
    if app.ci.in_ci:  # the files are an earlier job's artifacts: never let after_script act on them
        clear_previous_run_files(app)
    ci = app.require_ref()
    plans = plan_jobs(app, jobs, all_jobs)  # the project's own mistakes (jobs, parameters) first
    connection = app.connection()  # then a missing or malformed host, before the plan is printed
    gate = StatusGate(app, plans, run_url_prefix=connection.run_url("")) if settings.report_status else None
    if gate is not None:  # the same pipelines, inside the exit handler that reports their final state
        plans = gate.wrapped(plans)
    names = experiment_names(ci, settings)
    assert names is not None  # require_ref: there is a branch or tag
    planned = plan_runs(app, plans)
    print_plan(plans, ci, names.written, console, local=False)
    console.table(["Kubeflow", "value", "from"], [list(row) for row in connection.summary_rows()])
    for variable in environ_experiment_overrides(app.environ):
        console.warn(f"{variable} is ignored: kfp-launch resolves the experiment itself and passes its id")
    if settings.dry_run:
        return _dry_run(app, app.kfp(connection), names, planned, gate)
    check_time_to_wait(app)
    if not app.ci.in_ci:  # on a laptop they are the user's own: kept by a dry run or a refused run
        clear_previous_run_files(app)
    api = app.kfp(connection)
    what = planned[0].plan.compiled.pipeline_name if len(planned) == 1 else f"{len(planned)} runs"
    if gate is not None:
        gate.check_backend(api)
        gate.open()  # GITLAB_TOKEN may post statuses, or exit 3 before anything is submitted
    console.section_start("kfp_launch_submit", f"Submitting {what} to {connection.host}")
    description = experiment_description(ci, jira_url=app.jira_url)
    try:
        experiment = app.retry(max_outage_s=PREFLIGHT_OUTAGE_S)(
            lambda: ensure_experiment(api, names, description, say=console.line)
        )
        on_submitted = (lambda s: gate.submitted(s.plan.job, s.run, s.url)) if gate is not None else (lambda _s: None)
        submitted = submit_recorded(app, api, experiment, planned, on_submitted)
    except (KfpLaunchError, Interrupted, KeyboardInterrupt) as exc:
        if gate is not None:
            with interrupts.deferred():
                interrupted = not isinstance(exc, KfpLaunchError)
                gate.abandon(
                    f"kfp-launch could not submit the run: {getattr(exc, 'message', 'interrupted')}",
                    # left for the CI job's retry to attach to, or by --on-cancel detach
                    runs_left_running=isinstance(exc, KfpUnavailableError)
                    or (interrupted and settings.on_cancel == "detach"),
                    interrupted=interrupted,
                )
        raise
    console.section_end("kfp_launch_submit")
    tracked = [_tracked(s, experiment) for s in submitted]
    reporting = Reporting(app, note_jobs=[t.base.job for t in tracked])
    try:
        reporting.started([t.base for t in tracked])
    except (Interrupted, KeyboardInterrupt):
        with interrupts.deferred():
            run_ids = [s.run.run_id for s in submitted]
            failed = terminate_runs(api, run_ids, console, why="interrupted", policy=settings.on_cancel)
            why = "the CI job was interrupted"
            settle_terminated(app, tracked, run_ids, failed, policy=settings.on_cancel, why=why, quick=True)
        raise
    if not settings.wait:
        outcomes = [_not_waited(t, console, gate, namespace=connection.namespace) for t in tracked]
        reporting.finished(outcomes)
        code = worst_exit_code([o.exit_code for o in outcomes])
        console.line("run " + ", ".join(f"{o.job} {o.state}" for o in outcomes) + f" (exit {int(code)})")
        return code
    state_path = app.project_dir / settings.state_file
    outcomes = wait_and_report(app, api, tracked, reporting=reporting, state_path=state_path)
    return worst_exit_code([o.exit_code for o in outcomes])


def _tracked(submitted: SubmittedRun, experiment: Experiment) -> Tracked:
    compiled = submitted.plan.compiled
    base = RunOutcome(
        job=compiled.job,
        pipeline_name=compiled.pipeline_name,
        state=OutcomeState.RUNNING,
        exit_code=ExitCode.SUCCESS,
        run_id=submitted.run.run_id,
        run_url=submitted.url,
        experiment_id=experiment.experiment_id,
        experiment=experiment.name,
        metrics_available=False,
        parameters=submitted.plan.params.as_dict(),
    )
    return Tracked(base=base, status=submitted.run)


def _not_waited(tracked: Tracked, console: Console, gate: StatusGate | None, *, namespace: str) -> RunOutcome:
    """``--no-wait``: DETACHED, unless the run (this CI job's earlier one) has already ended: then how. With
    ``--report-status`` the message says where the run's end will show."""
    if tracked.status.is_terminal:
        return ended_outcome(tracked.base, tracked.status, 0.0)
    state = OutcomeState.DETACHED
    if gate is None:
        console.line("not waiting (--no-wait): kfp-launch watch " + tracked.base.run_id)
        message = "submitted without waiting (--no-wait)"
    else:
        target = gate.targets[tracked.base.job]
        message = f"submitted; the run reports its end to GitLab as the commit status '{target.name}' (--report-status)"
        where = f"namespace {namespace}" if namespace else "the run's namespace"
        console.line(
            f"not waiting: the run's exit task reports its end as '{target.name}', with the GitLab token of the "
            f"Kubernetes secret '{target.secret}' (key token) in {where}"
        )
    return replace(tracked.base, state=state, exit_code=exit_code_for(state), message=message)


def clear_previous_run_files(app: App) -> None:
    """Remove the state file and reports an earlier run left (in CI: an earlier job's artifacts), so that
    nothing of another run is cancelled by the after_script or re-published as this job's reports. A state
    file this same CI job wrote (several ``run`` commands in one job) is kept: its runs are added to."""
    settings = app.settings
    names = [settings.dotenv_report, settings.junit_report, settings.metrics_report]
    if not recorded_by_this_job(app.project_dir / settings.state_file, app.ci.job_id):
        names.append(settings.state_file)
    for name in names:
        try:
            (app.project_dir / name).unlink(missing_ok=True)
        except OSError:
            pass  # not removable (e.g. a path through a file): writing it later says so clearly


def _dry_run(
    app: App, api: KfpApi, names: ExperimentNames, planned: list[PlannedRun], gate: StatusGate | None
) -> ExitCode:
    console = app.console
    if gate is not None:
        gate.check_backend(api)
        for target in gate.targets.values():
            console.line(
                f"dry run: would post the commit status '{target.name}' for {target.sha[:12]}; the run's exit task "
                f"would report its end with the token of the Kubernetes secret '{target.secret}' (key token)"
            )
    experiment, name = app.retry(max_outage_s=PREFLIGHT_OUTAGE_S)(lambda: find_experiment(api, names))
    if experiment is None:
        state = "does not exist yet: would be created"
    else:
        archived = ", archived: would be unarchived" if experiment.archived else ""
        state = f"exists ({experiment.experiment_id}{archived})"
    console.line(f'dry run: experiment "{name}" {state}')
    for p in planned:
        given = p.plan.params.arguments()
        arguments = ", ".join(f"{k}={json.dumps(v)}" for k, v in given.items()) if given else "the defaults"
        console.line(f'dry run: would submit run "{p.name}" of {p.plan.compiled.pipeline_name} with {arguments}')
    console.line("dry run: nothing was changed")
    return ExitCode.SUCCESS
