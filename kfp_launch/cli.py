"""The ``kfp-launch`` command line: options -> settings -> one call -> exit code.

Imports neither ``kfp`` nor ``gitlab`` at module level (together over 1 s): commands import what
they need, so ``kfp-launch --help`` stays fast. The environment is read here, once, and passed on.
One error boundary (:func:`_guard`) turns :class:`KfpLaunchError` into ``error:``/``hint:`` lines
and the error's exit code; users never see a traceback for their mistakes.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeVar

import click
import typer

from kfp_launch import __version__
from kfp_launch.console import Console
from kfp_launch.errors import EXIT_CODE_MEANINGS, ExitCode, InputError, KfpLaunchError
from kfp_launch.settings import Settings, help_suffix, load_settings

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

F = TypeVar("F", bound=Callable[..., Any])


class Interrupted(Exception):
    """Raised in the main thread when SIGTERM or SIGHUP arrives (SIGINT raises KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def make_console() -> Console:
    """Build the console for this process from the environment (GitLab job or not)."""
    in_gitlab = os.environ.get("GITLAB_CI", "") == "true"
    return Console(out=sys.stdout, err=sys.stderr, in_gitlab=in_gitlab)


def _guard(command: F) -> F:
    """The error boundary: run ``command``, translating errors and signals into exit codes."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        console = make_console()
        previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
        try:
            return command(*args, **kwargs)
        except KfpLaunchError as exc:
            console.error(exc.message, exc.hint)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            console.error("interrupted by SIGINT")
            raise typer.Exit(int(ExitCode.SIGINT)) from None
        except Interrupted as exc:
            console.error(f"interrupted by {signal.Signals(exc.signum).name}")
            raise typer.Exit(128 + exc.signum) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the one boundary: a bug must not print a raw traceback
            console.error(
                f"internal error (a bug in kfp-launch): {type(exc).__name__}: {exc}",
                "please report it with the command you ran; set KFP_LAUNCH_DEBUG=1 to see the traceback.",
            )
            if os.environ.get("KFP_LAUNCH_DEBUG"):
                traceback.print_exc()
            raise typer.Exit(int(ExitCode.INTERNAL)) from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature typer reads


def _settings(**flags: object) -> Settings:
    return load_settings(flags, os.environ, Path.cwd())


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"kfp-launch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Launch Kubeflow Pipelines runs from GitLab CI or a laptop, and wait for their outcome."""


PackageOpt = Annotated[
    str | None,
    typer.Option("--pipelines-package", help="Package holding the job modules [default: pipelines] " + help_suffix("pipelines_package")),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Set a pipeline parameter, KEY=VALUE (repeatable) " + help_suffix("param")),
]
ParamsFileOpt = Annotated[
    str | None,
    typer.Option("--params-file", help="YAML or JSON file of parameter values " + help_suffix("params_file")),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="Use the job's PROFILES[NAME] values " + help_suffix("profile")),
]
BranchOpt = Annotated[
    str | None,
    typer.Option("--branch", help="The branch, when git or GitLab cannot tell (detached HEAD) " + help_suffix("branch")),
]
TicketOpt = Annotated[
    str | None,
    typer.Option("--ticket", help="The JIRA ticket (else found in branch, MR title, commit title) " + help_suffix("ticket")),
]
ExperimentTemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--experiment-template",
        help="Experiment name template: {branch} {ticket} {project} {ref} [default: {branch}] "
        + help_suffix("experiment_template"),
    ),
]
TicketPatternOpt = Annotated[
    str | None,
    typer.Option("--ticket-pattern", help="Regex of a JIRA issue key, matched case-insensitively " + help_suffix("ticket_pattern")),
]
VerboseOpt = Annotated[
    bool | None,
    typer.Option("--verbose/--quiet", "-v", help="Show kfp.local's own output live " + help_suffix("verbose")),
]


def _check_param_syntax(values: list[str] | None) -> list[str] | None:
    for item in values or []:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f'"{item}" is not KEY=VALUE (e.g. --param steps=100).')
    return values


@app.command("context")
@_guard
def context_command(
    branch: BranchOpt = None,
    ticket: TicketOpt = None,
    experiment_template: ExperimentTemplateOpt = None,
    ticket_pattern: TicketPatternOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Show the CI context (branch, commit, merge request, ticket) and the experiment it gives."""
    from kfp_launch import launch

    settings = _settings(
        branch=branch, ticket=ticket, experiment_template=experiment_template, ticket_pattern=ticket_pattern
    )
    launch.show_context(settings, os.environ, Path.cwd(), make_console(), as_json=as_json)


@app.command("jobs")
@_guard
def jobs_command(
    pipelines_package: PackageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the jobs of this project (modules PACKAGE.<job> defining a @dsl.pipeline) and their parameters."""
    from kfp_launch import launch

    settings = _settings(pipelines_package=pipelines_package)
    raise typer.Exit(int(launch.list_jobs(settings, Path.cwd(), make_console(), as_json=as_json)))


@app.command("compile")
@_guard
def compile_command(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job to compile: JOB or JOB:function.")],
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Where to write the YAML package ('-' for stdout) [default: JOB.yaml].")
    ] = None,
    pipelines_package: PackageOpt = None,
) -> None:
    """Compile a job's pipeline to a KFP pipeline package (YAML)."""
    from kfp_launch import launch

    settings = _settings(pipelines_package=pipelines_package)
    launch.compile_to_file(job, output, settings, Path.cwd(), make_console())


@app.command("run")
@_guard
def run_command(
    job: Annotated[
        str | None,
        typer.Argument(metavar="[JOB]", help="The job to run: JOB or JOB:function (in CI: the GitLab job's name)."),
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Run on this machine with kfp.local (no cluster).")] = False,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", callback=_check_param_syntax, help="Set a pipeline parameter, KEY=VALUE (repeatable) " + help_suffix("param")),
    ] = None,
    params_file: ParamsFileOpt = None,
    profile: ProfileOpt = None,
    pipelines_package: PackageOpt = None,
    local_root: Annotated[
        str | None,
        typer.Option("--local-root", help="Where local runs keep artifacts [default: .kfp-launch/local] " + help_suffix("local_root")),
    ] = None,
    branch: BranchOpt = None,
    ticket: TicketOpt = None,
    experiment_template: ExperimentTemplateOpt = None,
    ticket_pattern: TicketPatternOpt = None,
    verbose: VerboseOpt = None,
) -> None:
    """Compile JOB and run it, then exit with a code that says how the run ended."""
    from kfp_launch import launch

    settings = _settings(
        param=tuple(param or ()),
        params_file=params_file,
        profile=profile,
        pipelines_package=pipelines_package,
        local_root=local_root,
        branch=branch,
        ticket=ticket,
        experiment_template=experiment_template,
        ticket_pattern=ticket_pattern,
        verbose=verbose,
    )
    if not local:
        raise InputError(
            "Only local runs are available in this version: Kubeflow submission is not built yet.",
            hint=f"run it with kfp.local: kfp-launch run {job or 'JOB'} --local",
        )
    raise typer.Exit(int(launch.run_local_job(job, settings, os.environ, Path.cwd(), make_console())))


@app.command("params")
@_guard
def params_command(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job: JOB or JOB:function.")],
    as_dataclass: Annotated[
        bool, typer.Option("--dataclass", help="Print a typed Python dataclass of the parameters and profiles.")
    ] = False,
    pipelines_package: PackageOpt = None,
) -> None:
    """Show a job's parameters: name, type, default and the value in each profile."""
    from kfp_launch import launch

    settings = _settings(pipelines_package=pipelines_package)
    launch.show_params(job, settings, Path.cwd(), make_console(), as_dataclass=as_dataclass)


@app.command("exit-codes")
def exit_codes_command() -> None:
    """Print the table of exit codes (for allow_failure / retry: exit_codes)."""
    for code, meaning in EXIT_CODE_MEANINGS.items():
        typer.echo(f"{int(code):>3}  {meaning}")


def main() -> None:
    """Console-script entry point."""
    app()
