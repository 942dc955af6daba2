"""``run JOB --local``: run jobs on this machine with kfp.local (no cluster), one after the other.

Every job is compiled first (:func:`plan.plan_jobs`); each then runs in a kfp.local worker process
(``local_runner.py``), prints a line per task, its outputs and ``Metrics`` values, and writes the same
report files as a Kubeflow run. The exit code is the worst of the runs'.
"""

from __future__ import annotations

import json
import signal

from kfp_launch import interrupts
from kfp_launch.app import App
from kfp_launch.console import Console
from kfp_launch.errors import ExitCode, Interrupted, KfpLaunchError, LocalRunError, PipelineError, worst_exit_code
from kfp_launch.local_checks import check_optional_parameters, check_packages
from kfp_launch.models import LocalRunOutcome, RunOutcome, RunStatus, TaskResult
from kfp_launch.naming import experiment_for
from kfp_launch.plan import JobPlan, plan_jobs, print_plan
from kfp_launch.reporting import Reporting
from kfp_launch.states import OutcomeState, RunState, exit_code_for
from kfp_launch.status_gate import StatusGate


def run_local_jobs(app: App, jobs: list[str], all_jobs: bool) -> ExitCode:
    """Compile the jobs, then run each with kfp.local; the worst exit code.

    Returns:
        SUCCESS, or RUN_FAILED when a task of any run failed.

    Raises:
        KfpLaunchError: compile or parameter errors (nothing runs); the worker died (exit 6).
    """
    plans = plan_jobs(app, jobs, all_jobs)
    gate = StatusGate(app, plans, run_url_prefix="") if app.settings.report_status else None
    if gate is not None:  # the same pipelines, inside the exit handler that reports their final state
        plans = gate.wrapped(plans)
    for plan in plans:  # before anything runs: nothing kfp.local would install or choke on
        check_packages(plan.compiled)
        check_optional_parameters(plan.compiled, plan.params)
    if gate is not None:
        gate.open()
    ran: list[tuple[RunOutcome, LocalRunOutcome]] = []
    try:
        for plan in plans:
            ran.append(_run_gated(app, plan, gate) if gate is not None else run_locally(app, plan))
    except (KfpLaunchError, Interrupted, KeyboardInterrupt) as exc:
        if gate is not None:  # the jobs not reached: their pending status must not stay
            with interrupts.deferred():
                why = (
                    "an earlier job of this CI job could not run" if isinstance(exc, KfpLaunchError) else "interrupted"
                )
                gate.abandon(f"not run: {why}", runs_left_running=True, interrupted=True)
        raise
    finally:
        if ran:  # one set of report files for every run that ended, as on Kubeflow
            Reporting(app).finished([outcome for outcome, _ in ran])
    for _, local_outcome in ran:  # the outcome is the last thing said
        _print_final(local_outcome, app.console)
    code = worst_exit_code([outcome.exit_code for outcome, _ in ran])
    if len(ran) > 1:
        failed = sum(1 for outcome, _ in ran if outcome.exit_code != ExitCode.SUCCESS)
        summary = f"{len(ran) - failed} of {len(ran)} local runs succeeded (exit {int(code)})"
        if failed:
            app.console.error(summary)
        else:
            app.console.markup(f"[bold green]{summary}[/]")
    return code


def _run_gated(app: App, plan: JobPlan, gate: StatusGate) -> tuple[RunOutcome, LocalRunOutcome]:
    """A wrapped job: ``running`` now, its exit task alone gets ``GITLAB_TOKEN`` to post the final state; a
    run that could not finish (its exit task may not have run) is reported ``failed`` here."""
    from kfp_launch.status_wrapper import EXECUTOR, TOKEN_ENV

    gate.submitted(plan.job, RunStatus(run_id="", state=RunState.RUNNING), "", where="locally with kfp.local")
    try:
        return run_locally(app, plan, executor_env={EXECUTOR: {TOKEN_ENV: str(app.gitlab.token)}})
    except KfpLaunchError as exc:
        gate.final(plan.job, "failed", f"the local run did not finish: {exc.message}")
        raise
    except (Interrupted, KeyboardInterrupt):
        with interrupts.deferred():
            gate.final(plan.job, "canceled", "the local run was interrupted")
        raise


def run_locally(
    app: App, plan: JobPlan, *, executor_env: dict[str, dict[str, str]] | None = None
) -> tuple[RunOutcome, LocalRunOutcome]:
    """Run one compiled job with kfp.local; print how it went (``executor_env``: see
    :func:`local_runner.run_local`).

    Raises:
        PipelineError: kfp.local cannot run it (exit 3). LocalRunError: the worker died (exit 6).
    """
    from kfp_launch.local_runner import (
        LocalCrashError,
        LocalWorkerDiedError,
        UnsupportedLocallyError,
        local_pipeline_root,
        run_local,
    )

    console, compiled = app.console, plan.compiled
    experiment = experiment_for(app.ci, app.settings)
    print_plan([plan], app.ci, experiment, console, local=True)
    root = local_pipeline_root(app.project_dir / app.settings.local_root, compiled.job)
    console.line(f"pipeline root: {root}")
    console.section_start("kfp_launch_run", f"Running {compiled.pipeline_name} locally with kfp.local")
    try:
        outcome = run_local(
            compiled,
            plan.params.arguments(),
            pipeline_root=root,
            env=app.subprocess_environ,
            secrets=console.secrets,
            on_task=lambda task: _print_task(task, console),
            echo=app.settings.verbose,
            executor_env=executor_env,
        )
    except UnsupportedLocallyError as exc:
        raise PipelineError(
            f"kfp.local cannot run job {compiled.job}: {exc}",
            hint="kfp.local runs lightweight Python components only; run this job on Kubeflow.",
        ) from None
    except LocalCrashError as exc:
        log = root / "kfp-local.log"
        if not exc.task and not exc.after:  # refused before any task ran: the pipeline or its arguments
            raise PipelineError(
                f"kfp.local refused job {compiled.job} before running it: {exc}",
                hint=f"fix the pipeline or its parameters, or run the job on Kubeflow; the log is in {log}.",
            ) from None
        where = f"in task {exc.task}" if exc.task else f"after task {exc.after} finished"
        raise LocalRunError(
            f"The local run of job {compiled.job} failed {where}: {exc}",
            hint=f"see the task's output in {log}.",
        ) from None
    except LocalWorkerDiedError as exc:
        memory = "SIGKILL usually means the machine ran out of memory; " if exc.signum == signal.SIGKILL else ""
        raise LocalRunError(
            f"The local run of job {compiled.job} did not finish: {exc}.",
            hint=f"{memory}the log so far is in {root / 'kfp-local.log'}.",
        ) from None
    finally:
        console.section_end("kfp_launch_run")
    _print_outcome(outcome, console)
    state = OutcomeState.SUCCEEDED if outcome.succeeded else OutcomeState.FAILED
    reported = RunOutcome(
        job=compiled.job,
        pipeline_name=compiled.pipeline_name,
        state=state,
        exit_code=exit_code_for(state),
        experiment=experiment or "",
        tasks=outcome.tasks,
        metrics=outcome.metrics,
        metrics_available=True,
        parameters=plan.params.as_dict(),
        duration_s=outcome.duration_s,
        message=outcome.error,
        local=True,
    )
    return reported, outcome


def _print_task(task: TaskResult, console: Console) -> None:
    mark, style = ("✓", "green") if task.state == RunState.SUCCEEDED else ("✗", "red")
    took = f"  {task.duration_s:.1f}s" if task.duration_s is not None else ""
    console.line(f"  {mark} {task.name}  {task.state}{took}", style=style)
    if task.state == RunState.FAILED:
        if task.error:
            console.line(f"      {task.error}", style="red")
        for line in task.log_tail:
            console.line(f"      | {line}")


def _print_outcome(outcome: LocalRunOutcome, console: Console) -> None:
    if outcome.outputs:
        console.line("outputs:")
        for name, value in outcome.outputs.items():
            console.line(f"  {name} = {_format_value(value)}")
    if outcome.metrics:
        console.line("metrics:")
        for metric in outcome.metrics:
            console.line(f"  {metric.task}/{metric.artifact}  {metric.name} = {metric.value:g}")
    console.line(f"artifacts: {outcome.run_dir}")
    console.line(f"log: {outcome.log_path}")


def _print_final(outcome: LocalRunOutcome, console: Console) -> None:
    if outcome.succeeded:
        console.markup(f"[bold green]run {outcome.job} SUCCEEDED[/] in {outcome.duration_s:.1f}s (exit 0)")
        return
    task = outcome.failed_task or "(unknown task)"
    failing = next((t for t in outcome.tasks if t.name == outcome.failed_task), None)
    reason = f": {failing.error}" if failing and failing.error else ""
    message = f"run {outcome.job} FAILED in {outcome.duration_s:.1f}s: task {task} failed{reason} (exit 6)"
    console.error(message, f"see the task's log above and the full log in {outcome.log_path}")


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    if hasattr(value, "uri"):
        return str(value.uri)
    return json.dumps(value, default=str)
