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
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from kfp_launch import __version__, interrupts
from kfp_launch.errors import EXIT_CODE_MEANINGS, ExitCode, Interrupted, KfpLaunchError, UsageError
from kfp_launch.settings import SPECS, Settings, help_suffix, load_settings

if TYPE_CHECKING:
    from kfp_launch.console import Console

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


def make_console() -> Console:
    """Build the console for this process from the environment (GitLab job or not).

    rich is imported here, not at module level: ``kfp-launch --help`` does not need it."""
    from kfp_launch.console import Console

    # gitlab-ci-local sets GITLAB_CI=false (reference gitlab-ci.md §2.4) but renders sections like GitLab.
    in_gitlab = os.environ.get("GITLAB_CI", "") == "true" or bool(
        os.environ.get("CI_JOB_ID") and os.environ.get("CI_SERVER_URL")
    )
    console = Console(out=sys.stdout, err=sys.stderr, in_gitlab=in_gitlab)
    console.mask(*(os.environ.get(name) for name in ("KFP_TOKEN", "KFP_COOKIE", "GITLAB_TOKEN", "CI_JOB_TOKEN")))
    return console


def _guard(command: F) -> F:
    """The error boundary: run ``command``, translating errors and signals into exit codes."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        console = make_console()
        try:
            with interrupts.raising():
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
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one boundary: a bug must not print a raw traceback
            console.error(
                f"internal error (a bug in kfp-launch): {type(exc).__name__}: {exc}",
                "please report it with the command you ran; set KFP_LAUNCH_DEBUG=1 to see the traceback.",
            )
            if os.environ.get("KFP_LAUNCH_DEBUG"):
                traceback.print_exc()
            raise typer.Exit(int(ExitCode.INTERNAL)) from None

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
    typer.Option(
        "--pipelines-package",
        help="Package holding the job modules [default: pipelines] " + help_suffix("pipelines_package"),
    ),
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
    typer.Option(
        "--branch", help="The branch, when git or GitLab cannot tell (detached HEAD) " + help_suffix("branch")
    ),
]
TicketOpt = Annotated[
    str | None,
    typer.Option(
        "--ticket", help="The JIRA ticket (else found in branch, MR title, commit title) " + help_suffix("ticket")
    ),
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
    typer.Option(
        "--ticket-pattern",
        help="Regex of a JIRA issue key, matched case-insensitively " + help_suffix("ticket_pattern"),
    ),
]
VerboseOpt = Annotated[
    bool | None,
    typer.Option("--verbose/--quiet", "-v", help="Show kfp.local's own output live " + help_suffix("verbose")),
]


_METAVARS = {
    "local_root": "DIR",
    "host": "URL",
    "namespace": "NAME",
    "ui_url": "URL",
    "service_account": "NAME",
    "pipeline_root": "URI",
    "run_name_template": "TEMPLATE",
    "poll_interval": "DURATION",
    "max_outage": "DURATION",
    "timeout": "DURATION",
    "on_timeout": "terminate|detach",
    "on_cancel": "terminate|detach",
    "log_lines": "N",
    "state_file": "FILE",
}


def _opt(flags: list[str], name: str, text: str) -> Any:
    """A typer option for setting ``name``: its help ends with where else it can be set."""
    return typer.Option(*flags, help=f"{text} {help_suffix(name)}", metavar=_METAVARS.get(name))


LocalRootOpt = Annotated[
    str | None, _opt(["--local-root"], "local_root", "Where local runs keep artifacts [default: .kfp-launch/local]")
]
HostOpt = Annotated[str | None, _opt(["--host"], "host", "KFP API URL, e.g. https://kubeflow.example.com/pipeline")]
NamespaceOpt = Annotated[str | None, _opt(["--namespace"], "namespace", "Kubeflow profile namespace (multi-user)")]
UiUrlOpt = Annotated[str | None, _opt(["--ui-url"], "ui_url", "KFP UI base URL for links")]
WaitOpt = Annotated[bool | None, _opt(["--wait/--no-wait"], "wait", "Wait for the run to end [default: wait]")]
DryRunOpt = Annotated[
    bool | None,
    _opt(["--dry-run"], "dry_run", "Compile, resolve experiment and parameters, print the plan; change nothing"),
]
NoCacheOpt = Annotated[bool | None, _opt(["--no-cache"], "no_cache", "Turn execution caching off for this run")]
ServiceAccountOpt = Annotated[
    str | None, _opt(["--service-account"], "service_account", "Kubernetes service account of the run")
]
PipelineRootOpt = Annotated[
    str | None, _opt(["--pipeline-root"], "pipeline_root", "Where the run's artifacts go (e.g. s3://bucket/root)")
]
RunNameTemplateOpt = Annotated[
    str | None,
    _opt(
        ["--run-name-template"],
        "run_name_template",
        "Run name: {job} {commit} {pipeline} {branch} {ticket} {mr} [default: {job} {commit} {pipeline}]",
    ),
]
PollIntervalOpt = Annotated[
    str | None, _opt(["--poll-interval"], "poll_interval", "First poll interval, then it backs off [default: 2s]")
]
MaxOutageOpt = Annotated[
    str | None, _opt(["--max-outage"], "max_outage", "Give up (exit 5) after Kubeflow fails this long [default: 10m]")
]
TimeoutOpt = Annotated[
    str | None, _opt(["--timeout"], "timeout", "Wait deadline (90s, 45m, 6h) [default in CI: job timeout - 5m]")
]
OnTimeoutOpt = Annotated[
    str | None, _opt(["--on-timeout"], "on_timeout", "terminate|detach the run at the deadline [default: terminate]")
]
OnCancelOpt = Annotated[
    str | None,
    _opt(["--on-cancel"], "on_cancel", "terminate|detach the run on SIGTERM/SIGINT/SIGHUP [default: terminate]"),
]
LogLinesOpt = Annotated[
    int | None, _opt(["--log-lines"], "log_lines", "Log lines shown per failing task [default: 50]")
]
StateFileOpt = Annotated[
    str | None,
    _opt(["--state-file"], "state_file", "Where to record runs for `cancel` [default: .kfp-launch/state.json]"),
]


_KUBEFLOW_ONLY = (
    "host",
    "namespace",
    "ui_url",
    "wait",
    "dry_run",
    "no_cache",
    "service_account",
    "pipeline_root",
    "run_name_template",
    "poll_interval",
    "max_outage",
    "timeout",
    "on_timeout",
    "on_cancel",
    "log_lines",
    "state_file",
)


def _reject_kubeflow_options(values: dict[str, Any]) -> None:
    given = [SPECS[name].flag for name in _KUBEFLOW_ONLY if values.get(name) is not None]
    if given:
        raise UsageError(
            f"{', '.join(given)} only apply to runs on Kubeflow, not to --local runs.",
            hint="drop them, or drop --local to run on Kubeflow.",
        )


def _given(values: dict[str, Any]) -> dict[str, object]:
    """The command's options that are settings (same names), for :func:`load_settings`."""
    return {name: value for name, value in values.items() if name in SPECS}


def _check_param_syntax(values: list[str] | None) -> list[str] | None:
    from kfp_launch.parameters import parse_param_assignments

    try:
        parse_param_assignments(values or [])
    except UsageError as exc:
        raise typer.BadParameter(f"{exc.message} {exc.hint}") from None
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
        str | None,
        typer.Option("--output", "-o", help="Where to write the YAML package ('-' for stdout) [default: JOB.yaml]."),
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
    jobs: Annotated[
        list[str] | None,
        typer.Argument(metavar="JOB...", help="Jobs to run: JOB or JOB:function (in CI: the GitLab job's name)."),
    ] = None,
    all_jobs: Annotated[
        bool, typer.Option("--all", help="Run every job of the project (e.g. with --profile toy).")
    ] = False,
    local: Annotated[bool, typer.Option("--local", help="Run on this machine with kfp.local (no cluster).")] = False,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            callback=_check_param_syntax,
            help="Set a pipeline parameter, KEY=VALUE (repeatable) " + help_suffix("param"),
        ),
    ] = None,
    params_file: ParamsFileOpt = None,
    profile: ProfileOpt = None,
    pipelines_package: PackageOpt = None,
    local_root: LocalRootOpt = None,
    branch: BranchOpt = None,
    ticket: TicketOpt = None,
    experiment_template: ExperimentTemplateOpt = None,
    ticket_pattern: TicketPatternOpt = None,
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
    ui_url: UiUrlOpt = None,
    wait: WaitOpt = None,
    dry_run: DryRunOpt = None,
    no_cache: NoCacheOpt = None,
    service_account: ServiceAccountOpt = None,
    pipeline_root: PipelineRootOpt = None,
    run_name_template: RunNameTemplateOpt = None,
    poll_interval: PollIntervalOpt = None,
    max_outage: MaxOutageOpt = None,
    timeout: TimeoutOpt = None,
    on_timeout: OnTimeoutOpt = None,
    on_cancel: OnCancelOpt = None,
    log_lines: LogLinesOpt = None,
    state_file: StateFileOpt = None,
    verbose: VerboseOpt = None,
) -> None:
    """Compile JOB and run it, then exit with a code that says how the run ended."""
    from kfp_launch import launch

    settings = _settings(**_given(locals()))
    jobs = list(jobs or [])
    if local:
        _reject_kubeflow_options(locals())
        raise typer.Exit(int(launch.run_local_jobs(jobs, all_jobs, settings, os.environ, Path.cwd(), make_console())))
    if all_jobs or len(jobs) > 1:
        from kfp_launch import fanout

        raise typer.Exit(
            int(fanout.run_many_on_kubeflow(jobs, all_jobs, settings, os.environ, Path.cwd(), make_console()))
        )
    from kfp_launch import remote

    raise typer.Exit(
        int(remote.run_on_kubeflow(jobs[0] if jobs else None, settings, os.environ, Path.cwd(), make_console()))
    )


@app.command("watch")
@_guard
def watch_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The KFP run id.")],
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
    ui_url: UiUrlOpt = None,
    poll_interval: PollIntervalOpt = None,
    max_outage: MaxOutageOpt = None,
    timeout: TimeoutOpt = None,
    on_timeout: OnTimeoutOpt = None,
    on_cancel: OnCancelOpt = None,
    log_lines: LogLinesOpt = None,
) -> None:
    """Attach to a run and wait for it, exiting with its outcome's code."""
    from kfp_launch import remote

    settings = _settings(**_given(locals()))
    raise typer.Exit(int(remote.watch_run(run_id, settings, os.environ, Path.cwd(), make_console())))


@app.command("cancel")
@_guard
def cancel_command(
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN_ID]", help="The KFP run id.")] = None,
    state_file: Annotated[
        str | None,
        typer.Option("--state-file", help="Cancel the runs recorded in this file (honours their cancel policy)."),
    ] = None,
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Terminate a run (or the runs of a state file); exits 0 if already finished."""
    from kfp_launch import remote

    settings = _settings(host=host, namespace=namespace)
    raise typer.Exit(int(remote.cancel_runs(run_id, state_file, settings, os.environ, Path.cwd(), make_console())))


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


@app.command("runs")
@_guard
def runs_command(
    branch: BranchOpt = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="An experiment by name (instead of the branch's).")
    ] = None,
    job: Annotated[str | None, typer.Option("--job", help="Only runs of this job.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many runs, newest first (1-200).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
    experiment_template: ExperimentTemplateOpt = None,
) -> None:
    """List the runs of this branch's experiment: state, start, duration, commit, parameters."""
    from kfp_launch import history

    if branch and experiment:
        raise UsageError("Give --branch or --experiment, not both.", hint="kfp-launch runs --branch feature/x")
    settings = _settings(branch=branch, host=host, namespace=namespace, experiment_template=experiment_template)
    history.list_runs(
        settings, os.environ, Path.cwd(), make_console(), experiment=experiment, job=job, limit=limit, as_json=as_json
    )


@app.command("compare")
@_guard
def compare_command(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="A run id.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="Another run id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    host: HostOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """Show two runs' parameters side by side, differences first."""
    from kfp_launch import history

    settings = _settings(host=host, namespace=namespace)
    history.compare_runs(run_a, run_b, settings, os.environ, make_console(), as_json=as_json)


@app.command("exit-codes")
def exit_codes_command() -> None:
    """Print the table of exit codes (for allow_failure / retry: exit_codes)."""
    for code, meaning in EXIT_CODE_MEANINGS.items():
        typer.echo(f"{int(code):>3}  {meaning}")


def main() -> None:
    """Console-script entry point."""
    app()
