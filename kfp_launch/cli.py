"""The ``kfp-launch`` command line: options -> one :class:`App` -> one use case -> exit code.

Imports neither ``kfp`` nor ``gitlab`` at module level (together over 1 s): commands import what
they need, so ``kfp-launch --help`` stays fast. The environment is read here, once, into the
:class:`App` every use case receives. Each setting's option is derived from its one declaration in
``settings.py`` (flag, metavar, help, variable, the commands that take it). One error boundary
(:func:`_run_guarded`) turns :class:`KfpLaunchError` into ``error:``/``hint:`` lines and the error's
exit code; users never see a traceback for their mistakes.
"""

from __future__ import annotations

import inspect
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kfp_launch import __version__, interrupts
from kfp_launch.app import App
from kfp_launch.errors import EXIT_CODE_MEANINGS, ExitCode, Interrupted, KfpLaunchError, UsageError
from kfp_launch.settings import (
    COMPARE,
    COMPILE,
    CONTEXT,
    JOBS,
    PARAMS,
    RUN,
    RUNS,
    SPECS,
    WATCH,
    SettingSpec,
    help_suffix,
    load_settings,
    specs_for,
)

if TYPE_CHECKING:
    from kfp_launch.console import Console

_typer_make_metavar = typer.core.TyperArgument.make_metavar


def _plain_metavar(self: typer.core.TyperArgument, ctx: Any, *, usage: bool = False) -> str:
    """Usage lines as git and pip write them (``RUN_ID``, not typer's ``{RUN_ID}`` for a required argument)."""
    text = _typer_make_metavar(self, ctx, usage=usage)
    return text[1:-1] if text.startswith("{") and text.endswith("}") else text


typer.core.TyperArgument.make_metavar = _plain_metavar  # type: ignore[method-assign]

app = typer.Typer(
    name="kfp-launch",
    help="Launch Kubeflow Pipelines runs from GitLab CI or a laptop, and wait for their outcome.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

UseCase = Callable[..., ExitCode | None]


def _run_guarded(
    command: str, flags: dict[str, object], use_case: Callable[[App], ExitCode | None], *, json_result: bool = False
) -> ExitCode:
    """The error boundary: build the process's one :class:`App` and run the use case, translating errors
    and signals into exit codes. With ``json_result`` (``--json`` of run, watch, cancel) all human output goes
    to stderr and stdout gets exactly one JSON document, also on failure (see :func:`_print_result`)."""
    from kfp_launch.app import make_console

    environ = dict(os.environ)
    console = make_console(environ, human_to_stderr=json_result)
    results: list[dict[str, object]] = []
    errors: list[str] = []
    code = ExitCode.INTERNAL
    try:
        code = _guarded(command, flags, use_case, environ, console, results, errors)
        return code
    finally:
        if json_result:
            _print_result(results, code, errors)


def _print_result(results: list[dict[str, object]], code: ExitCode, errors: list[str]) -> None:
    """The ``--json`` document on stdout: an object for one run, a list for several, and without runs (an error
    before any) an object ``{"exit_code": N, "error": "..."}``."""
    import json

    document: object
    if len(results) == 1:
        document = results[0]
    elif results:
        document = results
    else:
        document = {"exit_code": int(code), "error": errors[-1] if errors else ""}
    sys.stdout.write(json.dumps(document, default=str) + "\n")
    sys.stdout.flush()


def _guarded(
    command: str,
    flags: dict[str, object],
    use_case: Callable[[App], ExitCode | None],
    environ: dict[str, str],
    console: Console,
    results: list[dict[str, object]],
    errors: list[str],
) -> ExitCode:
    try:
        with interrupts.raising():
            project_dir = Path.cwd()
            settings = load_settings(flags, environ, project_dir, command=command)
            wired = App(
                settings=settings,
                flags=flags,
                environ=environ,
                project_dir=project_dir,
                console=console,
                results=results,
            )
            return use_case(wired) or ExitCode.SUCCESS
    except KfpLaunchError as exc:
        console.error(exc.message, exc.hint)
        errors.append(console.redact(exc.message))
        return exc.exit_code
    except KeyboardInterrupt:
        console.error("interrupted by SIGINT")
        errors.append("interrupted by SIGINT")
        return ExitCode.SIGINT
    except Interrupted as exc:
        console.error(f"interrupted by {signal.Signals(exc.signum).name}")
        errors.append(f"interrupted by {signal.Signals(exc.signum).name}")
        return ExitCode(128 + exc.signum)
    except Exception as exc:  # noqa: BLE001 - the one boundary: a bug must not print a raw traceback
        console.error(
            f"internal error (a bug in kfp-launch): {type(exc).__name__}: {exc}",
            "please report it with the command you ran; set KFP_LAUNCH_DEBUG=1 to see the traceback.",
        )
        errors.append(console.redact(f"internal error (a bug in kfp-launch): {type(exc).__name__}: {exc}"))
        if environ.get("KFP_LAUNCH_DEBUG"):
            traceback.print_exc()
        return ExitCode.INTERNAL


def _setting_option(spec: SettingSpec, command: str) -> inspect.Parameter:
    """The typer option of a setting, all from its declaration: ``--name`` (or its declared spellings),
    metavar, help (with the command's own default) ending in where else it can be set."""
    declared = spec.flags if spec.flags and "/" in spec.flags[0] else (spec.flag, *spec.flags)
    text = spec.help.replace("{default}", str(spec.default_for(command)))
    option = typer.Option(*declared, help=f"{text} {help_suffix(spec.name)}", metavar=spec.metavar)
    return inspect.Parameter(
        spec.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[spec.option_type, option]
    )


def _command(name: str) -> Callable[[UseCase], UseCase]:
    """Register a command: its own parameters, then one option per setting it takes (declared once in
    ``settings.py``); the function receives the :class:`App` first and returns an exit code."""

    def register(function: UseCase) -> UseCase:
        own = list(inspect.signature(function, eval_str=True).parameters.values())[1:]  # after the App
        specs = specs_for(name)

        def command(**values: Any) -> None:
            flags = {spec.name: values.pop(spec.name) for spec in specs}
            json_result = bool(values.pop("json_result", False))
            code = _run_guarded(name, flags, lambda wired: function(wired, **values), json_result=json_result)
            raise typer.Exit(int(code))

        command.__signature__ = inspect.Signature([*own, *(_setting_option(spec, name) for spec in specs)])  # type: ignore[attr-defined]
        command.__doc__ = function.__doc__
        app.command(name)(command)
        return function

    return register


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"kfp-launch {__version__}")
        raise typer.Exit()


def _change_directory(directory: str | None) -> str | None:
    """``-C DIR``: work as if started in DIR (like ``git -C``): pyproject.toml, pipelines/, .kfp-launch/ and
    relative paths are all DIR's. A missing directory is a usage error (exit 2) before anything runs."""
    if directory is None:
        return None
    try:
        os.chdir(directory)
    except OSError as exc:
        raise typer.BadParameter(f"cannot work in {directory!r}: {exc.strerror or exc}.") from None
    return directory


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
    directory: Annotated[
        str | None,
        typer.Option(
            "-C",
            metavar="DIR",
            callback=_change_directory,
            help="Run as if kfp-launch was started in DIR (a project in a monorepo), like git -C.",
        ),
    ] = None,
) -> None:
    """Launch Kubeflow Pipelines runs from GitLab CI or a laptop, and wait for their outcome."""


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JsonResultOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the result as one JSON document on stdout (an object per run: job, run_id, url, state, "
        "exit_code, duration_s, experiment, parameters; a list for several), also on failure; the log goes to stderr.",
    ),
]
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="The job: JOB or JOB:function.")]


@_command(CONTEXT)
def context_command(wired: App, as_json: JsonOpt = False) -> None:
    """Show the CI context (branch, commit, merge request, ticket) and the experiment it gives."""
    from kfp_launch.project import show_context

    show_context(wired, as_json=as_json)


@_command(JOBS)
def jobs_command(wired: App, as_json: JsonOpt = False) -> ExitCode:
    """List the jobs of this project (modules PACKAGE.<job> defining a @dsl.pipeline) and their parameters."""
    from kfp_launch.project import list_jobs

    return list_jobs(wired, as_json=as_json)


@_command(COMPILE)
def compile_command(
    wired: App,
    job: JobArg,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Where to write the YAML package ('-' for stdout) [default: JOB.yaml].",
        ),
    ] = None,
) -> None:
    """Compile a job's pipeline to a KFP pipeline package (YAML)."""
    from kfp_launch.project import compile_to_file

    compile_to_file(wired, job, output)


@_command(RUN)
def run_command(
    wired: App,
    jobs: Annotated[
        list[str] | None,
        typer.Argument(metavar="JOB...", help="Jobs to run: JOB or JOB:function (in CI: the GitLab job's name)."),
    ] = None,
    all_jobs: Annotated[
        bool, typer.Option("--all", help="Run every job of the project (e.g. with --profile toy).")
    ] = False,
    local: Annotated[bool, typer.Option("--local", help="Run on this machine with kfp.local (no cluster).")] = False,
    json_result: JsonResultOpt = False,
) -> ExitCode:
    """Compile JOB and run it, then exit with a code that says how the run ended.

    Kubeflow is KFP_HOST (and KFP_NAMESPACE); credentials: KFP_TOKEN (a bearer token), else
    KF_PIPELINES_SA_TOKEN_PATH (a service-account token file); KFP_COOKIE (a logged-in browser's session
    cookie) behind Dex or oauth2-proxy. In GitLab, set them as masked CI/CD variables. kfp-launch exit-codes
    lists the exit codes.
    """
    if local:
        from kfp_launch.local import run_local_jobs

        _reject_kubeflow_flags(wired)
        return run_local_jobs(wired, jobs or [], all_jobs)
    from kfp_launch.kubeflow import run_on_kubeflow

    return run_on_kubeflow(wired, jobs or [], all_jobs)


def _reject_kubeflow_flags(wired: App) -> None:
    given = [
        _as_given(spec, wired.flags[spec.name])
        for spec in SPECS.values()
        if spec.kubeflow_only and wired.flags.get(spec.name) is not None
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to runs on Kubeflow, not to --local runs.",
            hint=f"drop {'them' if len(given) > 1 else 'it'}, or drop --local to run on Kubeflow.",
        )


def _as_given(spec: SettingSpec, value: object) -> str:
    """The flag as the user typed it: ``--no-wait`` for a ``--wait/--no-wait`` switch given False."""
    if spec.flags and "/" in spec.flags[0] and value is False:
        return spec.flags[0].split("/", 1)[1]
    return spec.flag


@_command(WATCH)
def watch_command(
    wired: App,
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="The KFP run id, or a unique prefix of at least 8 characters.")
    ],
    json_result: JsonResultOpt = False,
) -> ExitCode:
    """Attach to a run and wait for it, exiting with its outcome's code."""
    from kfp_launch.watch import watch_run

    return watch_run(wired, run_id)


@_command("cancel")
def cancel_command(
    wired: App,
    run_id: Annotated[
        str | None,
        typer.Argument(metavar="[RUN_ID]", help="The KFP run id, or a unique prefix of at least 8 characters."),
    ] = None,
    state_file: Annotated[
        str | None,
        typer.Option(
            "--state-file", metavar="FILE", help="Cancel the runs recorded in this file (honours their cancel policy)."
        ),
    ] = None,
    json_result: JsonResultOpt = False,
) -> ExitCode:
    """Terminate a run (or the runs of a state file); exits 0 if already finished."""
    from kfp_launch.watch import cancel_runs

    return cancel_runs(wired, run_id, state_file)


@_command(PARAMS)
def params_command(
    wired: App,
    job: JobArg,
    as_dataclass: Annotated[
        bool, typer.Option("--dataclass", help="Print a typed Python dataclass of the parameters and profiles.")
    ] = False,
) -> None:
    """Show a job's parameters: name, type, default and the value in each profile."""
    from kfp_launch.project import show_params

    show_params(wired, job, as_dataclass=as_dataclass)


@_command(RUNS)
def runs_command(
    wired: App,
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", metavar="NAME", help="An experiment by name (instead of the branch's)."),
    ] = None,
    job: Annotated[str | None, typer.Option("--job", metavar="JOB", help="Only runs of this job.")] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="How many runs, newest first (1-200).")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List the runs of this branch's experiment: state, start, duration, commit, parameters."""
    from kfp_launch.history import list_runs

    if wired.flags.get("branch") and experiment:
        raise UsageError("Give --branch or --experiment, not both.", hint="kfp-launch runs --branch feature/x")
    list_runs(wired, experiment=experiment, job=job, limit=limit, as_json=as_json)


@_command(COMPARE)
def compare_command(
    wired: App,
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="A run id (or a unique 8+ character prefix).")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="Another run id (or prefix).")],
    as_json: JsonOpt = False,
) -> None:
    """Show two runs' parameters side by side, differences first."""
    from kfp_launch.history import compare_runs

    compare_runs(wired, run_a, run_b, as_json=as_json)


@app.command("exit-codes")
def exit_codes_command() -> None:
    """Print the table of exit codes (for allow_failure / retry: exit_codes)."""
    for code, meaning in EXIT_CODE_MEANINGS.items():
        typer.echo(f"{int(code):>3}  {meaning}")


ARGS_VARIABLE = "KFP_LAUNCH_ARGS"
"""Extra arguments of ``kfp-launch run``, split like a shell does (quotes kept): the CI template never expands
them itself, so ``-p 'source=data/my iris.csv'`` stays one argument."""


def with_extra_run_args(argv: list[str], environ: Mapping[str, str]) -> list[str]:
    """ARGV with ``KFP_LAUNCH_ARGS`` appended when the command is ``run`` (other commands, such as the
    after_script's ``cancel``, never take run's options).

    Raises:
        UsageError: the variable's quotes do not match.
    """
    extra = environ.get(ARGS_VARIABLE, "").strip()
    words = iter(argv)
    command = None
    for word in words:
        if word == "-C":
            next(words, None)  # its DIR
        elif not word.startswith("-"):
            command = word
            break
    if not extra or command != RUN:
        return argv
    try:
        return [*argv, *shlex.split(extra)]
    except ValueError as exc:
        raise UsageError(f"{ARGS_VARIABLE} cannot be split into arguments: {exc}.", hint="check its quotes.") from None


def main() -> None:
    """Console-script entry point: ``KFP_LAUNCH_ARGS`` joins the command line of ``run``."""
    try:
        argv = with_extra_run_args(sys.argv[1:], os.environ)
    except UsageError as exc:
        from kfp_launch.app import make_console

        make_console(os.environ).error(exc.message, exc.hint)
        raise SystemExit(int(exc.exit_code)) from None
    app(args=argv, prog_name="kfp-launch")
