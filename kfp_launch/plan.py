"""What a ``run`` runs: the jobs named (or ``--all``, or the CI job's name), each compiled, with its
parameters resolved; and the summary printed before anything runs.

A single ``run JOB`` is a plan of one: every job is compiled and parameterized first, and one problem
anywhere means nothing runs (nothing is submitted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kfp_launch.app import App
from kfp_launch.ci_context import CiContext
from kfp_launch.console import Console
from kfp_launch.errors import InputError, JobNotFoundError, ParameterError, UsageError
from kfp_launch.models import CompiledPipeline, ResolvedParameters
from kfp_launch.parameters import ParameterLayer, load_params_file, parse_param_assignments, resolve_parameters
from kfp_launch.settings import Settings

MAX_RUNS = 200
"""At most this many runs from one command (four list requests per poll tick; split larger sets by job)."""


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """One job ready to run: its compiled pipeline and the parameters it gets.

    Attributes:
        compiled: the compiled pipeline.
        params: the resolved parameters (every value, with where it came from).
    """

    compiled: CompiledPipeline
    params: ResolvedParameters

    @property
    def job(self) -> str:
        """The job's name."""
        return self.compiled.job


def plan_jobs(app: App, jobs: list[str], all_jobs: bool) -> list[JobPlan]:
    """Compile the jobs a ``run`` means and resolve their parameters; report every problem together.

    Args:
        app: settings (profile, params file, ``--param`` apply to every job), project and console.
        jobs: JOB arguments (``JOB`` or ``JOB:function``); none means the CI job's name.
        all_jobs: ``--all``: every module of the pipelines package (helper modules without a pipeline
            are skipped).

    Raises:
        UsageError: ``--all`` with JOB arguments, or no JOB outside CI.
        InputError: a job cannot be compiled or parameterized (one job: its own error; several: all of
            them listed); more than :data:`MAX_RUNS` runs.
    """
    names = jobs_to_run(app, jobs, all_jobs)
    label = f"job {names[0]}" if len(names) == 1 else f"{len(names)} jobs"
    app.console.section_start("kfp_launch_compile", f"Compiling {label}", collapsed=True, announce=False)
    try:
        plans = compile_jobs(app, names, skip_non_jobs=all_jobs)
    except JobNotFoundError as exc:  # one job: say where its name came from and how to name another
        raise JobNotFoundError(f"{exc.message} {job_name_origin(app, jobs)}", hint=_JOB_NAME_WAYS) from None
    app.console.section_end("kfp_launch_compile")
    if len(plans) > MAX_RUNS:
        raise InputError(
            f"{len(plans)} runs at once is more than {MAX_RUNS}; nothing was submitted.",
            hint="split them into several CI jobs by naming the jobs to run.",
        )
    return plans


def jobs_to_run(app: App, jobs: list[str], all_jobs: bool) -> list[str]:
    """The jobs a ``run`` means: the JOB arguments (a job named twice runs once), every job with ``--all``,
    or in CI the GitLab job's name without its parallel/matrix suffix.

    Raises:
        UsageError: ``--all`` together with JOB arguments, or no JOB outside CI.
        InputError: ``--all`` in a project without jobs.
    """
    if all_jobs and jobs:
        raise UsageError("Give JOB arguments or --all, not both.", hint="kfp-launch run --all --profile toy")
    if jobs:
        return list(dict.fromkeys(jobs))
    if not all_jobs:
        return [job_from_ci(app.ci)]
    from kfp_launch.pipeline_package import list_job_modules

    found = list_job_modules(app.project_dir, app.settings.pipelines_package)
    if not found:
        raise InputError(
            f"--all found no jobs in {app.project_dir / app.settings.pipelines_package}.",
            hint="add modules pipelines/<job>.py that define a @dsl.pipeline.",
        )
    return found


_JOB_NAME_WAYS = (
    "name the job with its module's name: as the argument (kfp-launch run train), as the KFP_JOB variable of "
    "the GitLab job, or as the GitLab job's own name (train:); kfp-launch jobs lists them."
)


def job_name_origin(app: App, jobs: list[str]) -> str:
    """Where the one job name of a ``run`` came from, said for an error: the JOB argument, the ``KFP_JOB``
    variable (the CI template passes it as the argument), or ``CI_JOB_NAME`` without its parallel/matrix suffix."""
    if not jobs:
        return f'The name is the GitLab job\'s name (CI_JOB_NAME "{app.ci.job_name or ""}").'
    if app.environ.get("KFP_JOB", "").strip() == jobs[0]:
        return "The name comes from the KFP_JOB variable."
    return "The name is the JOB argument."


def job_from_ci(ci: CiContext) -> str:
    """In CI, the GitLab job's name (without its parallel/matrix suffix) is the job.

    Raises:
        UsageError: no JOB argument outside CI.
    """
    if ci.in_ci and ci.job:
        return ci.job
    raise UsageError(
        "Missing the JOB argument: which pipelines.<job> module to run.",
        hint="e.g. kfp-launch run train --local (in a GitLab job it defaults to the job's name); "
        "kfp-launch jobs lists them.",
    )


def compile_jobs(app: App, jobs: list[str], *, skip_non_jobs: bool = False) -> list[JobPlan]:
    """Compile every job and resolve its parameters; report every problem together.

    Args:
        app: the settings and the project.
        jobs: job specs.
        skip_non_jobs: skip modules that define no pipeline (``--all``: helper modules are not jobs).

    Raises:
        InputError: one job's own error; or, for several, all of them listed (nothing ran).
    """
    from kfp_launch.pipeline_package import compile_job_pipelines

    compiled_jobs: list[CompiledPipeline] = []
    problems: list[tuple[str, InputError]] = []
    for job in jobs:
        try:
            if skip_non_jobs and ":" not in job:
                variants = compile_job_pipelines(
                    job, project_dir=app.project_dir, package=app.settings.pipelines_package
                )
            else:
                variants = [compile_pipeline(job, app.settings, app.project_dir)]
            for compiled in variants:
                warn_if_large(compiled, app.console)
            compiled_jobs += variants
        except InputError as exc:
            problems.append((job, exc))
    shared = len(jobs) > 1 or len(compiled_jobs) > 1
    declared = {param.name for compiled in compiled_jobs for param in compiled.parameters}
    if problems:  # a job that did not compile may declare any given name: say its own error, not "unknown"
        declared |= _given_names(app.settings, app.project_dir)
    ready: list[JobPlan] = []
    for compiled in compiled_jobs:
        try:
            params = resolve_run_parameters(
                compiled, app.settings, app.project_dir, shared_by=declared if shared else None
            )
            ready.append(JobPlan(compiled=compiled, params=params))
        except InputError as exc:
            problems.append((compiled.job, exc))
    if len(jobs) == 1 and problems:
        raise problems[0][1]
    if problems:
        listed = [f"{job}: " + exc.message.replace("\n", "\n    ") for job, exc in problems]
        raise InputError(
            f"{len(problems)} of {len(jobs)} jobs cannot run, so nothing was submitted:\n"
            + "\n".join(f"  - {p}" for p in listed),
            hint="fix them, or run the other jobs by name.",
        )
    if not ready:
        raise InputError("None of the modules defines a @dsl.pipeline.", hint="kfp-launch jobs lists the jobs.")
    return ready


LARGE_SPEC_BYTES = 200_000
"""Warn above this compiled size: backends before kubeflow/pipelines#10979 (KFP 2.0-2.2) keep component
specs in the Argo Workflow's annotations, which Kubernetes limits to 262,144 bytes in all
(k8s.io/apimachinery ``pkg/api/validation/objectmeta.go``, ``TotalAnnotationSizeLimitB``); later ones are
bounded by etcd's ~1.5 MiB per object, about 3x the spec (kubeflow/pipelines#13738). Not enforced here: the
server's answer is (a refusal is permanent, exit 3)."""


def warn_if_large(compiled: CompiledPipeline, console: Console) -> None:
    """Say when a compiled pipeline is large enough for older backends to refuse it."""
    size = len(compiled.package_yaml.encode("utf-8"))
    if size > LARGE_SPEC_BYTES:
        console.warn(
            f"job {compiled.job} compiles to {size / 1000:.0f} KB: KFP 2.0-2.2 refuse pipelines over about "
            "260 KB (Workflow annotations), later backends about 3x more; large inline code or data in "
            "components is the usual cause"
        )


def compile_pipeline(job: str, settings: Settings, project_dir: Path) -> CompiledPipeline:
    """Import and compile ``<pipelines_package>.<job>`` (see :func:`pipeline_package.compile_job`)."""
    from kfp_launch.pipeline_package import compile_job

    return compile_job(job, project_dir=project_dir, package=settings.pipelines_package)


def resolve_run_parameters(
    compiled: CompiledPipeline, settings: Settings, project_dir: Path, *, shared_by: set[str] | None = None
) -> ResolvedParameters:
    """Resolve the run's parameters, lowest precedence first: pipeline defaults < ``param`` in
    pyproject.toml < profile < params file < ``KFP_LAUNCH_PARAM`` < ``--param``.

    Args:
        shared_by: when one command runs several jobs (``--all``), the parameter names any of them declares:
            a ``param`` value (pyproject, env, ``--param``) or params-file value goes to the jobs that declare
            its name, and only a name no job declares is an unknown parameter. The job's own profile stays
            strict.

    Raises:
        ParameterError: unknown profile, unreadable params file, or invalid parameters.
        (KEY=VALUE syntax is checked when the settings are loaded: see ``settings.load_settings``.)
    """
    # Every layer was checked as KEY=VALUE words when the settings were loaded (flags exit 2, others 3).
    assignments = {source: parse_param_assignments(values, origin=source) for source, values in settings.param_layers}
    own = {param.name for param in compiled.parameters}

    def for_this_job(values: Mapping[str, object]) -> dict[str, object]:
        if shared_by is None:
            return dict(values)
        return {name: value for name, value in values.items() if name in own or name not in shared_by}

    layers = [
        ParameterLayer(source=s, values=for_this_job(v), raw=True)
        for s, v in assignments.items()
        if s == "pyproject.toml"
    ]
    if settings.profile:
        layers.append(ParameterLayer(source=f"profile {settings.profile}", values=_profile(compiled, settings.profile)))
    if settings.params_file:
        path = project_dir / settings.params_file
        source = f"params file {settings.params_file}"
        layers.append(ParameterLayer(source=source, values=for_this_job(load_params_file(path))))
    layers += [
        ParameterLayer(source=s, values=for_this_job(v), raw=True)
        for s, v in assignments.items()
        if s != "pyproject.toml"
    ]
    return resolve_parameters(compiled.parameters, layers, job=compiled.job)


def _given_names(settings: Settings, project_dir: Path) -> set[str]:
    """Every parameter name a ``param`` layer or the params file gives (an unreadable params file gives none here:
    it is reported when each job resolves its parameters)."""
    names: set[str] = set()
    for source, values in settings.param_layers:
        names |= set(parse_param_assignments(values, origin=source))
    if settings.params_file:
        try:
            names |= set(load_params_file(project_dir / settings.params_file))
        except InputError:
            pass
    return names


def _profile(compiled: CompiledPipeline, name: str) -> dict[str, object]:
    if name in compiled.profiles:
        return dict(compiled.profiles[name])
    known = ", ".join(sorted(compiled.profiles)) or "none"
    raise ParameterError(
        f'Job {compiled.job} has no profile "{name}".',
        hint=f"profiles of {compiled.module}: {known} (defined in its PROFILES dict).",
    )


def print_plan(plans: list[JobPlan], ci: CiContext, experiment: str | None, console: Console, *, local: bool) -> None:
    """Print, before anything runs: the job(s), the experiment, the ticket, and (for one job) each
    parameter with its source."""
    where = f"{ci.ref_kind} {ci.ref}" if ci.ref else "no branch (not a git checkout; --branch sets one)"
    if len(plans) > 1:
        console.line(f"jobs: {', '.join(p.job for p in plans)}")
    else:
        c = plans[0].compiled
        console.line(f"job: {c.job} ({c.module}:{c.function}, pipeline {c.pipeline_name})")
    if local:  # no Kubeflow, no experiment: only where the code comes from
        console.line(f"ref: {where}")
    else:
        console.line(f"experiment: {experiment or '(none)'}  [{where}]")
    if ci.ticket:
        console.line(f"ticket: {ci.ticket} (from {ci.ticket_source})")
    else:
        console.line("ticket: none found" + ("" if local else " (set --ticket or JIRA_TICKET to tag the experiment)"))
    if len(plans) == 1 and plans[0].params.values:
        rows = [[v.name, json.dumps(v.value), v.source] for v in plans[0].params.values]
        console.table(["parameter", "value", "from"], rows)
