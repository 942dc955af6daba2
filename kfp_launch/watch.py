"""Following up a run: ``watch`` waits for an existing run like ``run`` does; ``cancel`` terminates a run,
or every run of a state file (the CI template's after_script).

Watching is not owning: ``watch`` detaches on a signal or at the deadline unless ``--on-cancel`` /
``--on-timeout`` say otherwise (the settings' ``watch`` defaults).
"""

from __future__ import annotations

from dataclasses import replace

from kfp_launch.app import App
from kfp_launch.errors import ExitCode, KfpLaunchError, UsageError
from kfp_launch.history import resolve_run_id
from kfp_launch.models import RunOutcome
from kfp_launch.polling import PREFLIGHT_OUTAGE_S
from kfp_launch.reporting import outcome_document
from kfp_launch.state_file import StateEntry, read_state
from kfp_launch.states import OutcomeState, RunState
from kfp_launch.status_gate import settle
from kfp_launch.submission import find_by_key
from kfp_launch.termination import terminate_runs
from kfp_launch.waiting import Tracked, wait_and_report


def watch_run(app: App, run_id: str) -> ExitCode:
    """Attach to an existing run and wait for it like ``run`` does (no reports, no note).

    Raises:
        KfpApiError: no such run (404). KfpAuthError, KfpUnavailableError: as the API raises them.
    """
    connection = app.connection()
    api = app.kfp(connection)
    run = app.retry()(lambda: api.get_run(resolve_run_id(api, run_id)))
    url = connection.run_url(run.run_id)
    app.console.url("run", url)
    base = RunOutcome(
        job=run.name,
        pipeline_name=run.name,
        state=OutcomeState.RUNNING,
        exit_code=ExitCode.SUCCESS,
        run_id=run.run_id,
        run_url=url,
        experiment_id=run.experiment_id,
        metrics_available=False,
        parameters=run.parameters,
    )
    [outcome] = wait_and_report(app, api, [Tracked(base=base, status=run)], reporting=None, state_path=None)
    app.results.append(outcome_document(outcome))
    return outcome.exit_code


def cancel_runs(app: App, run_id: str | None, state_file: str | None) -> ExitCode:
    """Terminate a run, or every run recorded in a state file (honouring its cancel policy).

    Returns:
        SUCCESS when the runs are terminating or already finished; else the first failure's code.

    Raises:
        UsageError: neither a RUN_ID nor a state file. InputError: an unreadable state file.
    """
    if state_file:
        entries = read_state(app.project_dir / state_file)
    elif run_id:
        connection = app.connection()
        given = run_id
        resolved = app.retry()(lambda: resolve_run_id(app.kfp(connection), given))
        entries = [
            StateEntry(
                run_id=resolved,
                experiment_id="",
                host=connection.host,
                namespace=connection.namespace,
                url=connection.run_url(resolved),
                job="",
                cancel_policy="terminate",
            )
        ]
    else:
        raise UsageError(
            "Say which run to cancel: a RUN_ID or --state-file FILE.",
            hint="e.g. kfp-launch cancel --state-file .kfp-launch/state.json",
        )
    codes = []
    for entry in entries:  # each on its own: one failure must not spare the others
        try:
            code, result = _cancel_one(app, entry)
        except KfpLaunchError as exc:
            app.console.error(f"run {entry.run_id or entry.run_key}: {exc.message}", exc.hint)
            code, result = exc.exit_code, f"error: {exc.message}"
        codes.append(code)
        app.results.append(
            {"job": entry.job, "run_id": entry.run_id, "url": entry.url, "result": result, "exit_code": int(code)}
        )
    return next((code for code in codes if code != ExitCode.SUCCESS), ExitCode.SUCCESS)


def _cancel_one(app: App, entry: StateEntry) -> tuple[ExitCode, str]:
    """Cancel one recorded run: its exit code and what happened (``terminating``, ``already finished: STATE``,
    ``already CANCELING``, ``detached``, ``another job's``, ``not created``)."""
    console = app.console
    if entry.cancel_policy == "detach":
        console.line(f"run {entry.run_id}: cancel policy is detach, leaving it running")
        return ExitCode.SUCCESS, "detached"
    current_job = app.environ.get("CI_JOB_ID", "").strip()
    if entry.ci_job_id and current_job and entry.ci_job_id != current_job:
        # A state file from an earlier job's artifacts: its runs are not this job's to terminate.
        console.line(
            f"run {entry.run_id}: recorded by CI job {entry.ci_job_id}, not this one ({current_job}); leaving it"
        )
        return ExitCode.SUCCESS, "another job's"
    # The run lives where the state file says, whatever the current settings say.
    settings = app.settings
    connection = app.connection(
        replace(settings, host=entry.host or settings.host, namespace=entry.namespace or settings.namespace)
    )
    api = app.kfp(connection)
    retry = app.retry(max_outage_s=PREFLIGHT_OUTAGE_S)
    if not entry.run_id:  # recorded before its create call returned: find it by its key, if it exists
        found = retry(lambda: find_by_key(api, entry.experiment_id, entry.run_name, entry.run_key))
        if found is None:
            console.line(f"job {entry.job}: no run was created (key {entry.run_key})")
            return ExitCode.SUCCESS, "not created"
        entry = replace(entry, run_id=found.run_id)
    run = retry(lambda: api.get_run(entry.run_id))
    url = entry.url or connection.run_url(entry.run_id)
    if run.is_terminal:
        console.line(f"run {entry.run_id} already finished: {run.state}")
        result = f"already finished: {run.state}"
    elif run.state == RunState.CANCELING:
        console.line(f"run {entry.run_id} is already being terminated (CANCELING)")
        result = "already CANCELING"
    else:
        failed = terminate_runs(api, [entry.run_id], console, why=f"cancel ({run.state} -> CANCELING)", retry=retry)
        if entry.run_id in failed:
            raise failed[entry.run_id]  # reported by cancel_runs with its hint
        console.url("run", url)
        result = "terminating"
    if run.status_target is not None:  # --report-status: its exit task may not run once KFP ends the workflow
        if result == "terminating":
            settle(app, run, url, "terminated with kfp-launch cancel", state="canceled")
        else:
            settle(app, run, url, f"the run ended {run.state} without its exit task reporting")
    return ExitCode.SUCCESS, result
