"""The use cases behind the CLI commands, readable top to bottom.

Each function takes resolved :class:`Settings`, the project directory and a :class:`Console`, and
returns an :class:`ExitCode` (or raises a :class:`KfpLaunchError`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from kfp_launch.ci_context import CiContext
from kfp_launch.console import Console
from kfp_launch.errors import (
    ConfigError,
    ExitCode,
    InputError,
    LocalRunError,
    ParameterError,
    PipelineError,
    UsageError,
)
from kfp_launch.models import CompiledPipeline, LocalRunOutcome, ResolvedParameters, RunOutcome, TaskResult
from kfp_launch.parameters import ParameterLayer, load_params_file, parse_param_assignments, resolve_parameters
from kfp_launch.settings import Settings


def read_context(
    settings: Settings, environ: Mapping[str, str], project_dir: Path, *, require_ref: bool = True
) -> CiContext:
    """Read the CI context (GitLab variables, or git on a laptop) with the ``--branch``/``--ticket``
    overrides and the ``ticket_pattern`` setting.

    Raises:
        ContextError: no branch can be determined and ``require_ref`` (the hint says to pass --branch).
        ConfigError: ``ticket_pattern`` is invalid.
    """
    return CiContext.from_environ(
        environ,
        cwd=project_dir,
        branch_override=settings.branch,
        # JIRA_TICKET is also the `ticket` setting's variable; from_environ reads it itself and labels it.
        ticket_override=settings.ticket if settings.sources.get("ticket") == "--ticket" else None,
        ticket_pattern=settings.ticket_pattern,
        require_ref=require_ref,
    )


def experiment_for(ci: CiContext, settings: Settings) -> str | None:
    """The experiment name for this context (``experiment_template``), or None without a ref.

    Raises:
        ConfigError: the template is invalid or renders empty.
    """
    from kfp_launch.naming import experiment_name_for, validate_experiment_template

    validate_experiment_template(settings.experiment_template)
    if ci.ref_kind == "none":
        return None
    return experiment_name_for(ci, settings.experiment_template)


def show_context(
    settings: Settings, environ: Mapping[str, str], project_dir: Path, console: Console, *, as_json: bool
) -> None:
    """Print the CI context and the experiment name it gives (a table, or a JSON object)."""
    ci = read_context(settings, environ, project_dir)
    experiment = experiment_for(ci, settings)
    data = {**ci.to_json_dict(), "experiment": experiment}
    if as_json:
        console.data(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if ci.ticket is None:
        console.warn("no JIRA ticket found (branch, merge request title, commit title); set --ticket or JIRA_TICKET")
    keys = [
        "in_ci",
        "pipeline_source",
        "ref_kind",
        "branch",
        "ref",
        "commit_sha",
        "commit_title",
        "merge_request_iid",
        "merge_request_title",
        "ticket",
        "ticket_source",
        "experiment",
        "job",
        "project_path",
        "pipeline_url",
        "job_url",
        "user_login",
    ]
    rows = [[k, "" if data.get(k) is None else str(data[k])] for k in keys]
    console.table(["", "value"], rows)


class Reporting:
    """What every run reports: the report files (always) and the merge request note (in CI, or when
    ``GITLAB_TOKEN`` is set). A failure to report is a warning; it never changes the exit code.

    Args:
        settings: the report paths.
        environ: for the GitLab note's configuration (``CI_SERVER_URL``, ``GITLAB_TOKEN``, ...).
        ci: the CI context.
        project_dir: relative report paths are relative to it.
        console: where warnings go.
        notes: whether to keep a merge request note (Kubeflow runs).
    """

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        ci: CiContext,
        project_dir: Path,
        console: Console,
        *,
        notes: bool,
    ) -> None:
        from kfp_launch.reports import ReportPaths

        self._paths = ReportPaths(
            dotenv=project_dir / settings.dotenv_report,
            junit=project_dir / settings.junit_report,
            metrics=project_dir / settings.metrics_report,
        )
        self._console = console
        self._notes = None
        if notes and (ci.in_ci or environ.get("GITLAB_TOKEN", "").strip()):
            from kfp_launch.gitlab_report import GitLabReportConfig, MergeRequestNotes

            self._notes = MergeRequestNotes(GitLabReportConfig.from_environ(environ), ci, console)

    def started(self, outcome: RunOutcome) -> None:
        """The run exists: create the merge request note."""
        if self._notes is not None:
            self._notes.run_started(self._masked(outcome))

    def _masked(self, outcome: RunOutcome) -> RunOutcome:
        # Server messages and task logs can echo a token: reports and notes get the console's masking.
        redact = self._console.redact
        tasks = tuple(
            replace(t, error=redact(t.error), log_tail=tuple(redact(line) for line in t.log_tail))
            for t in outcome.tasks
        )
        return replace(outcome, message=redact(outcome.message), tasks=tasks)

    def finished(self, outcome: RunOutcome) -> None:
        """The run ended (or the wait stopped): write the report files, update the note."""
        self.finished_many([outcome])

    def finished_many(self, outcomes: list[RunOutcome]) -> None:
        """Several runs ended: one set of report files for all; the note of each job."""
        from kfp_launch.reports import write_reports_many

        outcomes = [self._masked(o) for o in outcomes]
        try:
            written = write_reports_many(outcomes, self._paths)
            self._console.line("reports: " + ", ".join(str(p) for p in written))
        except OSError as exc:
            self._console.warn(f"could not write the reports: {exc}; the exit code is not affected")
        if self._notes is not None:
            for outcome in outcomes:
                self._notes.run_finished(outcome)


def compile_pipeline(job: str, settings: Settings, project_dir: Path) -> CompiledPipeline:
    """Import and compile ``<pipelines_package>.<job>`` (see :func:`pipeline_package.compile_job`)."""
    from kfp_launch.pipeline_package import compile_job

    return compile_job(job, project_dir=project_dir, package=settings.pipelines_package)


def list_jobs(settings: Settings, project_dir: Path, console: Console, *, as_json: bool) -> ExitCode:
    """Print every job with its parameters; a module that fails to import is listed with its error.

    Returns:
        SUCCESS, or INVALID_INPUT when there are no jobs or a module is broken.
    """
    from kfp_launch.pipeline_package import compile_job_pipelines, list_job_modules

    package = settings.pipelines_package
    rows: list[dict[str, object]] = []
    for name in list_job_modules(project_dir, package):
        try:
            compiled = compile_job_pipelines(name, project_dir=project_dir, package=package)
        except InputError as exc:
            rows.append({"job": name, "error": exc.message.splitlines()[0]})
            continue
        rows.extend(_job_row(c) for c in compiled)
    if as_json:
        console.data(json.dumps(rows, indent=2, default=str))
    elif rows:
        console.table(["job", "pipeline", "parameters", "profiles"], [_job_cells(r) for r in rows])
    if not rows:
        raise InputError(
            f"No jobs found in {project_dir / package}.",
            hint=f"add a module {package}/<job>.py that defines a @dsl.pipeline, or run from your project's root.",
        )
    return ExitCode.INVALID_INPUT if any("error" in r for r in rows) else ExitCode.SUCCESS


def _job_row(compiled: CompiledPipeline) -> dict[str, object]:
    return {
        "job": compiled.job,
        "pipeline": compiled.pipeline_name,
        "function": compiled.function,
        "parameters": [
            {"name": p.name, "type": p.type.label, "default": p.default, "required": p.is_required}
            for p in compiled.parameters
        ],
        "profiles": sorted(compiled.profiles),
    }


def _job_cells(row: dict[str, object]) -> list[str]:
    if "error" in row:
        return [str(row["job"]), "(broken)", str(row["error"]), ""]
    params = row["parameters"]
    assert isinstance(params, list)
    text = ", ".join(
        f"{p['name']}: {p['type']}" + ("" if p["required"] else f" = {json.dumps(p['default'])}") for p in params
    )
    profiles = row["profiles"]
    assert isinstance(profiles, list)
    return [str(row["job"]), str(row["pipeline"]), text or "(none)", ", ".join(profiles)]


def compile_to_file(job: str, output: str | None, settings: Settings, project_dir: Path, console: Console) -> None:
    """Compile ``job`` and write its YAML package to ``output`` (``-`` for stdout; default ``JOB.yaml``).

    Raises:
        InputError: the output path cannot be written.
    """
    compiled = compile_pipeline(job, settings, project_dir)
    if output == "-":
        console.data(compiled.package_yaml)
        return
    path = Path(output) if output else project_dir / f"{compiled.job}.yaml"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(compiled.package_yaml, encoding="utf-8")
    except OSError as exc:
        raise InputError(
            f"Cannot write the pipeline package to {path}: {exc.strerror or exc}.", hint="choose another --output path."
        ) from None
    console.line(f"wrote {path} (pipeline {compiled.pipeline_name}, {len(compiled.parameters)} parameters)")


def resolve_run_parameters(compiled: CompiledPipeline, settings: Settings, project_dir: Path) -> ResolvedParameters:
    """Resolve the run's parameters, lowest precedence first: pipeline defaults < ``param`` in
    pyproject.toml < profile < params file < ``KFP_LAUNCH_PARAM`` < ``--param``.

    Raises:
        ParameterError: unknown profile, unreadable params file, or invalid parameters.
        UsageError / ConfigError: a ``--param`` (or its env/pyproject equivalent) is not KEY=VALUE.
    """
    assignments = {source: _assignments(source, values) for source, values in settings.param_layers}
    layers = [ParameterLayer(source=s, values=v, raw=True) for s, v in assignments.items() if s == "pyproject.toml"]
    if settings.profile:
        layers.append(ParameterLayer(source=f"profile {settings.profile}", values=_profile(compiled, settings.profile)))
    if settings.params_file:
        path = project_dir / settings.params_file
        layers.append(ParameterLayer(source=f"params file {settings.params_file}", values=load_params_file(path)))
    layers += [ParameterLayer(source=s, values=v, raw=True) for s, v in assignments.items() if s != "pyproject.toml"]
    return resolve_parameters(compiled.parameters, layers, job=compiled.job)


def _assignments(source: str, values: tuple[str, ...]) -> dict[str, str]:
    try:
        return parse_param_assignments(values, origin=source)
    except UsageError as exc:
        if source == "--param":
            raise
        raise ConfigError(exc.message, hint=exc.hint) from None


def _profile(compiled: CompiledPipeline, name: str) -> dict[str, object]:
    if name in compiled.profiles:
        return dict(compiled.profiles[name])
    known = ", ".join(sorted(compiled.profiles)) or "none"
    raise ParameterError(
        f'Job {compiled.job} has no profile "{name}".',
        hint=f"profiles of {compiled.module}: {known} (defined in its PROFILES dict).",
    )


def jobs_to_run(jobs: list[str], all_jobs: bool, ci: CiContext, settings: Settings, project_dir: Path) -> list[str]:
    """The jobs a ``run`` means: the JOB arguments, every job with ``--all``, or in CI the job's name.

    Raises:
        UsageError: ``--all`` together with JOB arguments, or no JOB outside CI.
        InputError: ``--all`` in a project without jobs.
    """
    if all_jobs and jobs:
        raise UsageError("Give JOB arguments or --all, not both.", hint="kfp-launch run --all --profile toy")
    if not all_jobs:
        return list(dict.fromkeys(jobs)) if jobs else [job_to_run(None, ci)]  # a job named twice runs once
    from kfp_launch.pipeline_package import list_job_modules

    found = list_job_modules(project_dir, settings.pipelines_package)
    if not found:
        raise InputError(
            f"--all found no jobs in {project_dir / settings.pipelines_package}.",
            hint="add modules pipelines/<job>.py that define a @dsl.pipeline.",
        )
    return found


def compile_jobs(
    jobs: list[str], settings: Settings, project_dir: Path, *, skip_non_jobs: bool = False
) -> list[tuple[CompiledPipeline, ResolvedParameters]]:
    """Compile every job and resolve its parameters; report every problem together.

    Args:
        jobs: job specs.
        settings: the profile, params file and ``--param`` values apply to every job.
        project_dir: the project.
        skip_non_jobs: skip modules that define no pipeline (``--all``: helper modules are not jobs).

    Raises:
        InputError: one or more jobs cannot be compiled or parameterized; all are listed, nothing ran.
    """
    from kfp_launch.pipeline_package import compile_job_pipelines

    ready: list[tuple[CompiledPipeline, ResolvedParameters]] = []
    problems: list[str] = []
    for job in jobs:
        try:
            if skip_non_jobs and ":" not in job:
                variants = compile_job_pipelines(job, project_dir=project_dir, package=settings.pipelines_package)
            else:
                variants = [compile_pipeline(job, settings, project_dir)]
            ready += [(compiled, resolve_run_parameters(compiled, settings, project_dir)) for compiled in variants]
        except InputError as exc:
            problems.append(f"{job}: " + exc.message.replace("\n", "\n    "))
    if problems:
        raise InputError(
            f"{len(problems)} of {len(jobs)} jobs cannot run, so nothing was submitted:\n"
            + "\n".join(f"  - {p}" for p in problems),
            hint="fix them, or run the other jobs by name.",
        )
    if not ready:
        raise InputError("None of the modules defines a @dsl.pipeline.", hint="kfp-launch jobs lists the jobs.")
    return ready


def run_local_jobs(
    jobs: list[str],
    all_jobs: bool,
    settings: Settings,
    environ: Mapping[str, str],
    project_dir: Path,
    console: Console,
) -> ExitCode:
    """Run one job locally, or several one after the other (all compiled first); the worst exit code."""
    from kfp_launch.errors import worst_exit_code

    if not all_jobs and len(jobs) <= 1:
        return run_local_job(jobs[0] if jobs else None, settings, environ, project_dir, console)
    ci = read_context(settings, environ, project_dir, require_ref=False)
    ready = compile_jobs(
        jobs_to_run(jobs, all_jobs, ci, settings, project_dir), settings, project_dir, skip_non_jobs=all_jobs
    )
    codes = [run_compiled_locally(c, p, ci, settings, environ, project_dir, console) for c, p in ready]
    return worst_exit_code([int(c) for c in codes])


def run_local_job(
    job: str | None, settings: Settings, environ: Mapping[str, str], project_dir: Path, console: Console
) -> ExitCode:
    """Compile ``job``, run it with kfp.local, print tasks, outputs and metrics.

    Returns:
        SUCCESS, or RUN_FAILED when a task failed.

    Raises:
        KfpLaunchError: compile or parameter errors (nothing runs).
    """
    ci = read_context(settings, environ, project_dir, require_ref=False)
    job = job_to_run(job, ci)
    console.section_start("kfp_launch_compile", f"Compiling job {job}", collapsed=True, announce=False)
    compiled = compile_pipeline(job, settings, project_dir)
    params = resolve_run_parameters(compiled, settings, project_dir)
    console.section_end("kfp_launch_compile")
    return run_compiled_locally(compiled, params, ci, settings, environ, project_dir, console)


def run_compiled_locally(
    compiled: CompiledPipeline,
    params: ResolvedParameters,
    ci: CiContext,
    settings: Settings,
    environ: Mapping[str, str],
    project_dir: Path,
    console: Console,
) -> ExitCode:
    """Run an already compiled job with kfp.local; print and report how it went (see :func:`run_local_job`)."""
    from kfp_launch.local_runner import LocalWorkerDiedError, UnsupportedLocallyError, local_pipeline_root, run_local

    experiment = experiment_for(ci, settings)
    print_run_summary(compiled, params, ci, experiment, console, local=True)
    root = local_pipeline_root(project_dir / settings.local_root, compiled.job)
    console.line(f"pipeline root: {root}")
    console.section_start("kfp_launch_run", f"Running {compiled.pipeline_name} locally with kfp.local")
    try:
        outcome = run_local(
            compiled,
            params.arguments(),
            pipeline_root=root,
            on_task=lambda task: _print_task(task, console),
            echo=settings.verbose,
        )
    except UnsupportedLocallyError as exc:
        raise PipelineError(
            f"kfp.local cannot run job {compiled.job}: {exc}",
            hint="kfp.local runs lightweight Python components only; run this job on Kubeflow.",
        ) from None
    except LocalWorkerDiedError as exc:
        raise LocalRunError(
            f"The local run of job {compiled.job} did not finish: {exc}.",
            hint=f"a killed worker is often out of memory; the log so far is in {root / 'kfp-local.log'}.",
        ) from None
    finally:
        console.section_end("kfp_launch_run")
    _print_outcome(outcome, console)
    code = ExitCode.SUCCESS if outcome.succeeded else ExitCode.RUN_FAILED
    Reporting(settings, environ, ci, project_dir, console, notes=False).finished(
        RunOutcome(
            job=compiled.job,
            pipeline_name=compiled.pipeline_name,
            state=outcome.state,
            exit_code=int(code),
            experiment=experiment or "",
            tasks=outcome.tasks,
            metrics=outcome.metrics,
            metrics_available=True,
            parameters=params.as_dict(),
            duration_s=outcome.duration_s,
            message=outcome.error,
            local=True,
        )
    )
    return code


def job_to_run(job: str | None, ci: CiContext) -> str:
    """The JOB argument, or in CI the GitLab job's name without its parallel/matrix suffix.

    Raises:
        UsageError: no JOB argument outside CI.
    """
    if job:
        return job
    if ci.in_ci and ci.job:
        return ci.job
    raise UsageError(
        "Missing the JOB argument: which pipelines.<job> module to run.",
        hint="e.g. kfp-launch run train --local (in a GitLab job it defaults to the job's name); "
        "kfp-launch jobs lists them.",
    )


def print_run_summary(
    compiled: CompiledPipeline,
    params: ResolvedParameters,
    ci: CiContext,
    experiment: str | None,
    console: Console,
    *,
    local: bool = False,
) -> None:
    """Print, before anything runs: job, experiment, ticket, and each parameter with its source."""
    console.line(f"job: {compiled.job} ({compiled.module}:{compiled.function}, pipeline {compiled.pipeline_name})")
    where = f"{ci.ref_kind} {ci.ref}" if ci.ref else "no branch (not a git checkout; --branch sets one)"
    console.line(f"experiment{' (on Kubeflow)' if local else ''}: {experiment or '(none)'}  [{where}]")
    if ci.ticket:
        console.line(f"ticket: {ci.ticket} (from {ci.ticket_source})")
    else:
        console.line("ticket: none found (set --ticket or JIRA_TICKET to tag the experiment)")
    if params.values:
        console.table(
            ["parameter", "value", "from"],
            [[v.name, json.dumps(v.value), v.source] for v in params.values],
        )


def _print_task(task: TaskResult, console: Console) -> None:
    mark, style = ("✓", "green") if task.state == "SUCCEEDED" else ("✗", "red")
    took = f"  {task.duration_s:.1f}s" if task.duration_s is not None else ""
    console.line(f"  {mark} {task.name}  {task.state}{took}", style=style)
    if task.state == "FAILED":
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
    if outcome.succeeded:
        console.markup(f"[bold green]run SUCCEEDED[/] in {outcome.duration_s:.1f}s")
        return
    task = outcome.failed_task or "(unknown task)"
    failing = next((t for t in outcome.tasks if t.name == outcome.failed_task), None)
    reason = f": {failing.error}" if failing and failing.error else ""
    raise_message = f"run FAILED in {outcome.duration_s:.1f}s: task {task} failed{reason}"
    console.error(raise_message, f"see the task's log above and the full log in {outcome.log_path}")


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    if hasattr(value, "uri"):
        return str(value.uri)
    return json.dumps(value, default=str)


def show_params(job: str, settings: Settings, project_dir: Path, console: Console, *, as_dataclass: bool) -> None:
    """Print each parameter of ``job`` (name, type, default, value per profile), or a typed dataclass."""
    from kfp_launch.dataclass_gen import generate_dataclass
    from kfp_launch.parameters import profile_problems

    compiled = compile_pipeline(job, settings, project_dir)
    problems = profile_problems(compiled.parameters, compiled.profiles)
    if problems:
        raise ParameterError(
            f"PROFILES of {compiled.module} do not fit the pipeline's parameters:\n"
            + "\n".join(f"  - {p}" for p in problems),
            hint="fix PROFILES; the pipeline accepts: "
            + ", ".join(f"{p.name}: {p.type.label}" for p in compiled.parameters),
        )
    if as_dataclass:
        console.data(generate_dataclass(compiled))
        return
    profiles = sorted(compiled.profiles)
    rows = []
    for p in compiled.parameters:
        default = "(required)" if p.is_required else ("(none)" if not p.has_default else json.dumps(p.default))
        cells = [p.name, p.type.label, default]
        cells += [
            json.dumps(compiled.profiles[name][p.name]) if p.name in compiled.profiles[name] else ""
            for name in profiles
        ]
        rows.append(cells)
    console.line(f"job {compiled.job}: {compiled.module}:{compiled.function}, pipeline {compiled.pipeline_name}")
    console.table(["parameter", "type", "default", *(f"profile {n}" for n in profiles)], rows)
