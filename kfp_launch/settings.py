"""Settings: one frozen value built from flags, the environment and ``pyproject.toml``.

Naming rule: an option ``--foo-bar`` can also be set by the environment variable
``KFP_LAUNCH_FOO_BAR`` and by ``foo_bar`` under ``[tool.kfp-launch]`` in the project's
``./pyproject.toml``. Precedence: flag > environment > pyproject > built-in default. Exceptions
(e.g. ``JIRA_TICKET`` for ``--ticket``) are declared in :data:`SPECS`. Every resolved value
remembers where it came from, for the start-up summary. Secrets are never flags.

The environment is read once, by the CLI, and handed in as a mapping.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from kfp_launch.errors import ConfigError, UsageError
from kfp_launch.setting_values import (
    choice,
    parse_assignments,
    parse_bool,
    parse_count,
    parse_duration_value,
    parse_experiment_template,
    parse_list,
    parse_poll_interval,
    parse_run_name_template,
    parse_str,
    parse_ticket_pattern,
    parse_ticket_projects,
    parse_timeout,
)

RUN, WATCH, CANCEL, CONTEXT, JOBS, COMPILE, PARAMS, RUNS, COMPARE = (
    "run",
    "watch",
    "cancel",
    "context",
    "jobs",
    "compile",
    "params",
    "runs",
    "compare",
)
_CONNECT = frozenset({RUN, WATCH, CANCEL, RUNS, COMPARE})
_WAIT = frozenset({RUN, WATCH})
_PIPELINES = frozenset({RUN, JOBS, COMPILE, PARAMS})
_NAMING = frozenset({RUN, CONTEXT, RUNS})


@dataclass(frozen=True, kw_only=True)
class SettingSpec:
    """How one setting is named, parsed, defaulted and offered on the command line.

    Declared once, as the metadata of its :class:`Settings` field (:func:`setting`); the flag, the
    environment variable, the pyproject key, the metavar, the help text and the commands that take it
    are all derived from here.

    Attributes:
        name: the setting's name (``foo_bar``): the pyproject key; the flag is ``--foo-bar``.
        default: the built-in default.
        parse: ``(value, where) -> typed value``; raises ConfigError naming ``where``.
        help: the option's help text (without the ``[env: …]`` suffix, which is derived).
        metavar: the placeholder in ``--help`` (``URL``, ``DURATION``…), or None for typer's own.
        commands: the commands that take it as a flag (empty: environment and pyproject only).
        env: the environment variables that set it, first wins (``KFP_LAUNCH_FOO_BAR`` unless declared).
        fallback_env: variables read after pyproject (``KF_PIPELINES_ENDPOINT``, the SDK's own, for ``host``).
        reads_env: False when another module reads ``env`` itself (``JIRA_TICKET`` is one of the CI
            context's ticket sources, ``ci_context.py``); the help still names it.
        pyproject: whether ``[tool.kfp-launch]`` may set it.
        flags: extra flag spellings (``-p``) or a boolean pair (``--wait/--no-wait``).
        kubeflow_only: meaningless for ``run --local`` (given there, it is a usage error).
        command_defaults: a different default for some commands (``watch`` detaches by default).
    """

    name: str
    default: object
    parse: Callable[[object, str], object]
    help: str
    metavar: str | None = None
    commands: frozenset[str] = frozenset()
    env: tuple[str, ...] = ()
    reads_env: bool = True
    fallback_env: tuple[str, ...] = ()
    pyproject: bool = True
    flags: tuple[str, ...] = ()
    kubeflow_only: bool = False
    command_defaults: Mapping[str, object] = field(default_factory=dict)

    @property
    def env_var(self) -> str:
        """The (first) environment variable that sets this setting."""
        return self.env_vars[0]

    @property
    def env_vars(self) -> tuple[str, ...]:
        """Every environment variable that sets this setting, first wins."""
        return self.env or ("KFP_LAUNCH_" + self.name.upper(),)

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--pipelines-package``."""
        return "--" + self.name.replace("_", "-")

    @property
    def option_type(self) -> object:
        """The Python type typer parses the flag as (``None`` means "not given")."""
        return _OPTION_TYPES.get(self.parse, str) | None

    def default_for(self, command: str | None) -> object:
        """The default for ``command`` (see ``command_defaults``)."""
        return self.command_defaults.get(command or "", self.default)


_OPTION_TYPES: dict[Callable[[object, str], object], type] = {
    parse_bool: bool,
    parse_list: list[str],
    parse_assignments: list[str],
    parse_count: int,
}


def setting(default: object, help: str, **declared: Any) -> Any:
    """Declare a :class:`Settings` field and its :class:`SettingSpec` (every keyword but ``name``)."""
    declared.setdefault("parse", parse_str)
    return field(default=default, metadata={"spec": (default, help, declared)})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Resolved settings, each declared once here with its flag, variable, help and commands.

    ``sources[name]`` says where each value came from (``"--flag"``, ``"env KFP_LAUNCH_X"``,
    ``"pyproject.toml"`` or ``"default"``), for the start-up summary.
    """

    pipelines_package: str = setting(
        "pipelines", "Package holding the job modules [default: pipelines]", metavar="PACKAGE", commands=_PIPELINES
    )
    local_root: str = setting(
        ".kfp-launch/local",
        "Where local runs keep artifacts [default: .kfp-launch/local]",
        metavar="DIR",
        commands={RUN},
    )
    param: tuple[str, ...] = setting(
        (),
        "Set a pipeline parameter, KEY=VALUE (repeatable)",
        parse=parse_assignments,
        commands={RUN},
        flags=("-p",),
        metavar="KEY=VALUE",
    )
    params_file: str | None = setting(None, "YAML or JSON file of parameter values", metavar="FILE", commands={RUN})
    profile: str | None = setting(None, "Use the job's PROFILES[NAME] values", metavar="NAME", commands={RUN})
    experiment_template: str = setting(
        "{branch}",
        "Experiment name template: {branch} {ticket} {project} {ref} [default: {branch}]",
        parse=parse_experiment_template,
        metavar="TEMPLATE",
        commands=_NAMING,
    )
    ticket_pattern: str | None = setting(
        None,
        "Regex of a JIRA issue key, matched in any case anywhere; wins over --ticket-projects and the "
        "default (a key in JIRA's format in the branch, or opening a merge request or commit title)",
        parse=parse_ticket_pattern,
        metavar="REGEX",
        commands={RUN, CONTEXT},
    )
    ticket_projects: tuple[str, ...] = setting(
        (),
        "JIRA project keys (e.g. ML OPS): their issue keys count in any case, anywhere",
        parse=parse_ticket_projects,
        metavar="KEYS",
        commands={RUN, CONTEXT},
    )
    branch: str | None = setting(
        None,
        "The branch, when git or GitLab cannot tell (detached HEAD)",
        metavar="BRANCH",
        commands=_NAMING | {CONTEXT},
        pyproject=False,
    )
    ticket: str | None = setting(
        None,
        "The JIRA ticket (else found in branch, MR title, commit title)",
        metavar="KEY",
        commands={RUN, CONTEXT},
        env=("JIRA_TICKET",),
        reads_env=False,
        pyproject=False,
    )
    verbose: bool = setting(
        False, "Show kfp.local's own output live", parse=parse_bool, commands={RUN}, flags=("--verbose/--quiet", "-v")
    )
    # Kubeflow connection (kfp.Client's own variable KF_PIPELINES_ENDPOINT too: kfp/client/client.py, _load_config).
    host: str | None = setting(
        None,
        "KFP API URL, e.g. https://kubeflow.example.com/pipeline",
        metavar="URL",
        commands=_CONNECT,
        env=("KFP_HOST",),
        fallback_env=("KF_PIPELINES_ENDPOINT",),
        kubeflow_only=True,
    )
    namespace: str | None = setting(
        None,
        "Kubeflow profile namespace (multi-user)",
        metavar="NAME",
        commands=_CONNECT,
        env=("KFP_NAMESPACE",),
        kubeflow_only=True,
    )
    ui_url: str | None = setting(
        None, "KFP UI base URL for links", metavar="URL", commands=_WAIT, env=("KFP_UI_URL",), kubeflow_only=True
    )
    # Submitting and waiting.
    wait: bool = setting(
        True,
        "Wait for the run to end [default: wait]",
        parse=parse_bool,
        commands={RUN},
        flags=("--wait/--no-wait",),
        kubeflow_only=True,
    )
    dry_run: bool = setting(
        False,
        "Compile, resolve experiment and parameters, print the plan; change nothing",
        parse=parse_bool,
        commands={RUN},
        pyproject=False,
        kubeflow_only=True,
    )
    report_status: bool = setting(
        False,
        "Gate the merge request on the run: a GitLab commit status `kfp: JOB`, running now, set to the run's "
        "final state by its exit task; implies --no-wait unless --wait is given (needs GITLAB_TOKEN)",
        parse=parse_bool,
        commands={RUN},
    )
    status_secret: str = setting(
        "kfp-launch-gitlab",
        "Kubernetes secret (key `token`) giving --report-status's exit task its GitLab token "
        "[default: kfp-launch-gitlab]",
        metavar="NAME",
        commands={RUN},
        kubeflow_only=True,
    )
    status_image: str = setting(
        "python:3.11",
        "Container image of --report-status's exit task (Python 3 with pip: KFP installs its runtime there, as for "
        "any lightweight component) [default: python:3.11]",
        metavar="IMAGE",
        commands={RUN},
        kubeflow_only=True,
    )
    no_cache: bool = setting(
        False, "Turn execution caching off for this run", parse=parse_bool, commands={RUN}, kubeflow_only=True
    )
    service_account: str | None = setting(
        None, "Kubernetes service account of the run", metavar="NAME", commands={RUN}, kubeflow_only=True
    )
    pipeline_root: str | None = setting(
        None,
        "Where the run's artifacts go (e.g. s3://bucket/root)",
        metavar="URI",
        commands={RUN},
        kubeflow_only=True,
    )
    run_name_template: str = setting(
        "{job} {commit} {pipeline}",
        "Run name: {job} {commit} {pipeline} (the GitLab pipeline id) {branch} {ticket} {mr} "
        "[default: {job} {commit} {pipeline}]",
        parse=parse_run_name_template,
        metavar="TEMPLATE",
        commands={RUN},
        kubeflow_only=True,
    )
    poll_interval: timedelta = setting(
        timedelta(seconds=2),
        "First poll interval, then it backs off [default: 2s]",
        parse=parse_poll_interval,
        metavar="DURATION",
        commands=_WAIT,
        kubeflow_only=True,
    )
    max_outage: timedelta = setting(
        timedelta(minutes=10),
        "Give up (exit 5) after Kubeflow fails this long [default: 10m]",
        parse=parse_duration_value,
        metavar="DURATION",
        commands=_WAIT,
        kubeflow_only=True,
    )
    timeout: timedelta | None = setting(
        None,
        "Wait deadline (90s, 45m, 6h) [default: until the run ends; in CI: job timeout - 5m]",
        parse=parse_timeout,
        metavar="DURATION",
        commands=_WAIT,
        kubeflow_only=True,
    )
    on_timeout: str = setting(
        "terminate",
        "terminate|detach the run at the deadline [default: {default}]",
        parse=choice("terminate", "detach"),
        metavar="terminate|detach",
        commands=_WAIT,
        kubeflow_only=True,
        command_defaults={WATCH: "detach"},  # watching is not owning
    )
    on_cancel: str = setting(
        "terminate",
        "terminate|detach the run on SIGTERM/SIGINT/SIGHUP [default: {default}]",
        parse=choice("terminate", "detach"),
        metavar="terminate|detach",
        commands=_WAIT,
        kubeflow_only=True,
        command_defaults={WATCH: "detach"},
    )
    logs: str | None = setting(
        None,
        "live|failed|none: print the running tasks' new log lines as they come, or only the failing tasks' "
        "last lines, or no log at all [default: live in CI and on a terminal, else failed]",
        parse=choice("live", "failed", "none"),
        metavar="live|failed|none",
        commands=_WAIT,
        kubeflow_only=True,
    )
    log_lines: int = setting(
        50,
        "Log lines shown per failing task [default: 50]",
        parse=parse_count,
        metavar="N",
        commands=_WAIT,
        kubeflow_only=True,
    )
    state_file: str = setting(
        ".kfp-launch/state.json",
        "Where to record runs for `cancel` [default: .kfp-launch/state.json]",
        metavar="FILE",
        commands={RUN},
        kubeflow_only=True,
    )
    # Report files for GitLab's artifacts:reports (docs.gitlab.com/ci/yaml/artifacts_reports): env and pyproject only.
    dotenv_report: str = setting(".kfp-launch/run.env", "The dotenv report")
    junit_report: str = setting(".kfp-launch/junit.xml", "The JUnit XML report")
    metrics_report: str = setting(".kfp-launch/metrics.txt", "The metrics report (GitLab metrics format)")
    param_layers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)


def _specs() -> dict[str, SettingSpec]:
    specs = {}
    for item in fields(Settings):
        if "spec" in item.metadata:
            default, help_text, declared = item.metadata["spec"]
            declared = dict(declared)
            commands = frozenset(declared.pop("commands", frozenset()))
            specs[item.name] = SettingSpec(
                name=item.name, default=default, help=help_text, commands=commands, **declared
            )
    return specs


SPECS: dict[str, SettingSpec] = _specs()
"""Every setting's declaration, by name, in declaration order."""


def specs_for(command: str) -> list[SettingSpec]:
    """The settings ``command`` takes as flags, in declaration order."""
    return [spec for spec in SPECS.values() if command in spec.commands]


def help_suffix(name: str) -> str:
    """The ``[env: …; pyproject: …]`` text appended to an option's help."""
    spec = SPECS[name]
    where = "env: " + " or ".join(spec.env_vars + spec.fallback_env)
    if spec.pyproject:
        where += f"; pyproject: {spec.name}"
    return f"[{where}]"


def read_pyproject_table(project_dir: Path) -> dict[str, object]:
    """Return ``[tool.kfp-launch]`` of ``project_dir/pyproject.toml`` ({} if absent).

    Raises:
        ConfigError: the file is not valid TOML, the table is not a table, or it has unknown keys.
    """
    path = project_dir / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}.", hint="fix the TOML syntax.") from None
    table = data.get("tool", {}).get("kfp-launch", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.kfp-launch] in {path} must be a table.", hint="see README, Settings.")
    allowed = sorted(n for n, s in SPECS.items() if s.pyproject)
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(
            f"Unknown key(s) under [tool.kfp-launch] in {path}: {', '.join(unknown)}.",
            hint="valid keys: " + ", ".join(allowed) + ".",
        )
    return table


def load_settings(
    flags: Mapping[str, object], environ: Mapping[str, str], project_dir: Path, *, command: str | None = None
) -> Settings:
    """Resolve every setting: flag > environment > pyproject > default.

    Args:
        flags: setting name -> value given on the command line; ``None`` (or absent) means not given.
        environ: the process environment (empty values count as unset).
        project_dir: where ``pyproject.toml`` is read from.
        command: the command being run, for its own defaults (``SettingSpec.command_defaults``).

    Raises:
        ConfigError: a value from the environment or pyproject does not parse.
    """
    table = read_pyproject_table(project_dir)
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, spec in SPECS.items():
        values[name], sources[name] = _resolve_one(spec, flags.get(name), environ, table, command)
    if command == RUN and values["report_status"] and sources["wait"] == "default":
        # The mode exists so that no runner waits: the run's exit task reports its end. --wait still waits.
        values["wait"], sources["wait"] = False, "--report-status"
    return Settings(**values, param_layers=_param_layers(flags, environ, table), sources=sources)  # type: ignore[arg-type]  # values typed per SPECS


def _param_layers(
    flags: Mapping[str, object], environ: Mapping[str, str], table: Mapping[str, object]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every source of ``param`` values, lowest precedence first: they add up instead of replacing each
    other (pyproject gives project defaults, ``KFP_LAUNCH_PARAM`` a CI variable's, ``--param`` the user's)."""
    spec = SPECS["param"]
    layers: list[tuple[str, tuple[str, ...]]] = []
    if "param" in table:
        where = "param in [tool.kfp-launch] of pyproject.toml"
        layers.append(("pyproject.toml", parse_assignments(table["param"], where)))
    if environ.get(spec.env_var, "") != "":
        where = f"environment variable {spec.env_var}"
        layers.append((f"env {spec.env_var}", parse_assignments(environ[spec.env_var], where)))
    if flags.get("param"):
        try:
            layers.append((spec.flag, parse_assignments(flags["param"], spec.flag)))
        except ConfigError as exc:  # a flag's value is rejected like the argument parser rejects: exit 2
            raise UsageError(exc.message, hint=exc.hint) from None
    return tuple(layers)


def _resolve_one(
    spec: SettingSpec, flag: object, environ: Mapping[str, str], table: Mapping[str, object], command: str | None
) -> tuple[object, str]:
    if flag is not None and flag != ():
        try:
            return spec.parse(flag, spec.flag), spec.flag
        except ConfigError as exc:  # a flag's value is rejected like the argument parser rejects: exit 2
            raise UsageError(exc.message, hint=exc.hint) from None
    for variable in spec.env_vars if spec.reads_env else ():
        env_value = environ.get(variable, "")
        if env_value.strip() != "":
            return spec.parse(env_value.strip(), f"environment variable {variable}"), f"env {variable}"
    if spec.pyproject and spec.name in table:
        where = f"{spec.name} in [tool.kfp-launch] of pyproject.toml"
        return spec.parse(table[spec.name], where), "pyproject.toml"
    for variable in spec.fallback_env:
        env_value = environ.get(variable, "").strip()
        if env_value:
            return spec.parse(env_value, f"environment variable {variable}"), f"env {variable}"
    return spec.default_for(command), "default"
