"""Looking at the project without running anything: ``context``, ``jobs``, ``compile`` and ``params``."""

from __future__ import annotations

import json
from pathlib import Path

from kfp_launch.app import App
from kfp_launch.errors import ExitCode, InputError, ParameterError
from kfp_launch.models import CompiledPipeline
from kfp_launch.naming import experiment_for
from kfp_launch.plan import compile_pipeline, warn_if_large


def show_context(app: App, *, as_json: bool) -> None:
    """Print the CI context and the experiment name it gives (a table, or a JSON object).

    Raises:
        ContextError: no branch can be determined. ConfigError: a bad template or ticket pattern.
    """
    console, ci = app.console, app.require_ref()
    experiment = experiment_for(ci, app.settings)
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


def list_jobs(app: App, *, as_json: bool) -> ExitCode:
    """Print every job with its parameters; a module that fails to import is listed with its error.

    Returns:
        SUCCESS, or INVALID_INPUT when there are no jobs or a module is broken.
    """
    from kfp_launch.pipeline_package import compile_job_pipelines, list_job_modules

    console, project_dir, package = app.console, app.project_dir, app.settings.pipelines_package
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
    broken = [str(r["job"]) for r in rows if "error" in r]
    if broken:
        console.error(
            f"{len(broken)} of {len(rows)} job modules cannot be imported or compiled: {', '.join(broken)}.",
            f"kfp-launch compile {broken[0]} shows the whole error.",
        )
        return ExitCode.INVALID_INPUT
    return ExitCode.SUCCESS


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


def compile_to_file(app: App, job: str, output: str | None) -> None:
    """Compile ``job`` and write its YAML package to ``output`` (``-`` for stdout; default ``JOB.yaml``).

    Raises:
        InputError: the output path cannot be written.
    """
    console, project_dir = app.console, app.project_dir
    compiled = compile_pipeline(job, app.settings, project_dir)
    warn_if_large(compiled, console)
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


def show_params(app: App, job: str, *, as_dataclass: bool) -> None:
    """Print each parameter of ``job`` (name, type, default, value per profile), or a typed dataclass."""
    from kfp_launch.dataclass_gen import generate_dataclass
    from kfp_launch.parameters import profile_problems

    console = app.console
    compiled = compile_pipeline(job, app.settings, app.project_dir)
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
