"""Settings: one frozen value built from flags, the environment and ``pyproject.toml``.

Naming rule: an option ``--foo-bar`` can also be set by the environment variable
``KFP_LAUNCH_FOO_BAR`` and by ``foo_bar`` under ``[tool.kfp-launch]`` in the project's
``./pyproject.toml``. Precedence: flag > environment > pyproject > built-in default. Exceptions
(e.g. ``JIRA_TICKET`` for ``--ticket``) are declared in :data:`SPECS`. Every resolved value
remembers where it came from, for the start-up summary. Secrets are never flags.

The environment is read once, by the CLI, and handed in as a mapping.
"""

from __future__ import annotations

import math
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from kfp_launch.errors import ConfigError, UsageError

DEFAULT_TICKET_PATTERN = r"(?<![^\W_])(?a:[A-Z][A-Z0-9]*-[0-9]+)(?![^\W_])"
"""A JIRA issue key: a letter, letters/digits, a dash, digits; not glued to other letters or digits.

Matched case-insensitively. ``[^\\W_]`` is any Unicode letter or digit, so ``ABC-12x``, ``1ABC-12`` and
``éABC-12`` do not match while ``feature/abc-12-x`` and ``abc_ABC-12`` do. The ``(?a:...)`` group keeps
the key itself ASCII: under IGNORECASE a Unicode ``[A-Z]`` would also match the Kelvin sign or a long s.
Known and accepted: any word-dash-number reads as a key, e.g. ``utf-8`` gives ``UTF-8`` and
``release-2024`` gives ``RELEASE-2024``; set ``ticket_pattern`` to your project keys (``(?:ABC|OPS)-\\d+``)
to avoid that.
"""

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _parse_str(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be a string, not {type(value).__name__}.", hint="quote the value.")


def _parse_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f'{where} must be a boolean, not "{value}".', hint="use true or false.")


def _parse_list(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ConfigError(f"{where} cannot be split into words: {exc}.", hint="check its quotes.") from None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where} must be a list of strings.", hint='e.g. param = ["steps=10"].')


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parse ``"0.5"`` (seconds), ``"90s"``, ``"45m"``, ``"6h"`` or a sum like ``"1h30m"``.

    Raises:
        ValueError: the text is not such a duration, or is negative.
    """
    raw = text.strip().lower().replace(" ", "")
    try:
        seconds = float(raw)
    except ValueError:
        parts = _DURATION_PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise ValueError(f'"{text}" is not a duration') from None
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f'"{text}" is not a duration')
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f'"{text}" is too long a duration') from None


def _parse_duration(value: object, where: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            pass
    raise ConfigError(
        f'{where} must be a duration, not "{value}".',
        hint="write plain seconds (0.5) or a number with a unit: 90s, 45m, 6h.",
    )


def _parse_poll_interval(value: object, where: str) -> timedelta:
    duration = _parse_duration(value, where)
    if not timedelta(0) < duration <= timedelta(hours=1):
        raise ConfigError(f"{where} must be more than zero and at most 1h.", hint="e.g. 2s (the default).")
    return duration


def _parse_count(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ConfigError(f'{where} must be a whole number of 0 or more, not "{value}".', hint="e.g. 50.")


def _choice(*options: str) -> Callable[[object, str], str]:
    def parse(value: object, where: str) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise ConfigError(f'{where} must be one of {", ".join(options)}, not "{value}".', hint="")

    return parse


@dataclass(frozen=True, kw_only=True)
class SettingSpec:
    """How one setting is named, parsed and defaulted.

    Attributes:
        name: the setting's name (``foo_bar``): the pyproject key; the flag is ``--foo-bar``.
        default: the built-in default.
        parse: ``(value, where) -> typed value``; raises ConfigError naming ``where``.
        env: the environment variable (``KFP_LAUNCH_FOO_BAR`` unless an exception).
        pyproject: whether ``[tool.kfp-launch]`` may set it.
    """

    name: str
    default: object
    parse: Callable[[object, str], object] = _parse_str
    env: str = ""
    pyproject: bool = True

    @property
    def env_var(self) -> str:
        """The environment variable that sets this setting."""
        return self.env or "KFP_LAUNCH_" + self.name.upper()

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--pipelines-package``."""
        return "--" + self.name.replace("_", "-")


SPECS: dict[str, SettingSpec] = {
    s.name: s
    for s in (
        SettingSpec(name="pipelines_package", default="pipelines"),
        SettingSpec(name="local_root", default=".kfp-launch/local"),
        SettingSpec(name="param", default=(), parse=_parse_list),
        SettingSpec(name="params_file", default=None),
        SettingSpec(name="profile", default=None),
        SettingSpec(name="experiment_template", default="{branch}"),
        SettingSpec(name="ticket_pattern", default=DEFAULT_TICKET_PATTERN),
        SettingSpec(name="branch", default=None, pyproject=False),
        SettingSpec(name="ticket", default=None, env="JIRA_TICKET", pyproject=False),
        SettingSpec(name="verbose", default=False, parse=_parse_bool),
        # Kubeflow connection (reference kfp-api.md §3); secrets are environment-only, see connection.py.
        SettingSpec(name="host", default=None, env="KFP_HOST"),
        SettingSpec(name="namespace", default=None, env="KFP_NAMESPACE"),
        SettingSpec(name="ui_url", default=None, env="KFP_UI_URL"),
        # Submitting and waiting.
        SettingSpec(name="wait", default=True, parse=_parse_bool),
        SettingSpec(name="dry_run", default=False, parse=_parse_bool, pyproject=False),
        SettingSpec(name="no_cache", default=False, parse=_parse_bool),
        SettingSpec(name="service_account", default=None),
        SettingSpec(name="pipeline_root", default=None),
        SettingSpec(name="run_name_template", default="{job} {commit} {pipeline}"),
        SettingSpec(name="poll_interval", default=timedelta(seconds=2), parse=_parse_poll_interval),
        SettingSpec(name="max_outage", default=timedelta(minutes=10), parse=_parse_duration),
        SettingSpec(name="timeout", default=None, parse=_parse_duration),
        SettingSpec(name="on_timeout", default="terminate", parse=_choice("terminate", "detach")),
        SettingSpec(name="on_cancel", default="terminate", parse=_choice("terminate", "detach")),
        SettingSpec(name="log_lines", default=50, parse=_parse_count),
        SettingSpec(name="state_file", default=".kfp-launch/state.json"),
        # Report files for GitLab's artifacts:reports (reference gitlab-ci.md §1.5).
        SettingSpec(name="dotenv_report", default=".kfp-launch/run.env"),
        SettingSpec(name="junit_report", default=".kfp-launch/junit.xml"),
        SettingSpec(name="metrics_report", default=".kfp-launch/metrics.txt"),
    )
}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Resolved settings. ``sources[name]`` says where each value came from
    (``"--flag"``, ``"env KFP_LAUNCH_X"``, ``"pyproject.toml"`` or ``"default"``)."""

    pipelines_package: str = "pipelines"
    local_root: str = ".kfp-launch/local"
    param: tuple[str, ...] = ()
    params_file: str | None = None
    profile: str | None = None
    experiment_template: str = "{branch}"
    ticket_pattern: str = DEFAULT_TICKET_PATTERN
    branch: str | None = None
    ticket: str | None = None
    verbose: bool = False
    host: str | None = None
    namespace: str | None = None
    ui_url: str | None = None
    wait: bool = True
    dry_run: bool = False
    no_cache: bool = False
    service_account: str | None = None
    pipeline_root: str | None = None
    run_name_template: str = "{job} {commit} {pipeline}"
    poll_interval: timedelta = timedelta(seconds=2)
    max_outage: timedelta = timedelta(minutes=10)
    timeout: timedelta | None = None
    on_timeout: str = "terminate"
    on_cancel: str = "terminate"
    log_lines: int = 50
    state_file: str = ".kfp-launch/state.json"
    dotenv_report: str = ".kfp-launch/run.env"
    junit_report: str = ".kfp-launch/junit.xml"
    metrics_report: str = ".kfp-launch/metrics.txt"
    param_layers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)


def help_suffix(name: str) -> str:
    """The ``[env: …; pyproject: …]`` text appended to an option's help."""
    spec = SPECS[name]
    where = f"env: {spec.env_var}" + (" or KF_PIPELINES_ENDPOINT" if name == "host" else "")
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


def load_settings(flags: Mapping[str, object], environ: Mapping[str, str], project_dir: Path) -> Settings:
    """Resolve every setting: flag > environment > pyproject > default.

    Args:
        flags: setting name -> value given on the command line; ``None`` (or absent) means not given.
        environ: the process environment (empty values count as unset).
        project_dir: where ``pyproject.toml`` is read from.

    Raises:
        ConfigError: a value from the environment or pyproject does not parse.
    """
    table = read_pyproject_table(project_dir)
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for name, spec in SPECS.items():
        values[name], sources[name] = _resolve_one(spec, flags.get(name), environ, table)
    return Settings(**values, param_layers=_param_layers(flags, environ, table), sources=sources)  # type: ignore[arg-type]  # values typed per SPECS


def _param_layers(
    flags: Mapping[str, object], environ: Mapping[str, str], table: Mapping[str, object]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every source of ``param`` values, lowest precedence first: they add up instead of replacing each
    other (pyproject gives project defaults, ``KFP_LAUNCH_PARAM`` a CI variable's, ``--param`` the user's)."""
    spec = SPECS["param"]
    layers: list[tuple[str, tuple[str, ...]]] = []
    if "param" in table:
        layers.append(("pyproject.toml", _parse_list(table["param"], "param in [tool.kfp-launch] of pyproject.toml")))
    if environ.get(spec.env_var, "") != "":
        layers.append(
            (f"env {spec.env_var}", _parse_list(environ[spec.env_var], f"environment variable {spec.env_var}"))
        )
    if flags.get("param"):
        layers.append((spec.flag, _parse_list(flags["param"], spec.flag)))
    return tuple(layers)


def _resolve_one(
    spec: SettingSpec, flag: object, environ: Mapping[str, str], table: Mapping[str, object]
) -> tuple[object, str]:
    if flag is not None and flag != ():
        try:
            return spec.parse(flag, spec.flag), spec.flag
        except ConfigError as exc:  # a flag's value is rejected like the argument parser rejects: exit 2
            raise UsageError(exc.message, hint=exc.hint) from None
    env_value = environ.get(spec.env_var, "")
    if env_value != "":
        return spec.parse(env_value, f"environment variable {spec.env_var}"), f"env {spec.env_var}"
    if spec.pyproject and spec.name in table:
        where = f"{spec.name} in [tool.kfp-launch] of pyproject.toml"
        return spec.parse(table[spec.name], where), "pyproject.toml"
    return spec.default, "default"
