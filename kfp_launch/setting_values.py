"""Parsing setting values from flags, environment variables and ``pyproject.toml``: strings, booleans,
shell-split lists, durations, counts and choices. Each parser takes ``(value, where)`` and raises a
:class:`ConfigError` that names ``where`` (the flag, the variable or the pyproject key).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable
from datetime import timedelta

from kfp_launch.errors import ConfigError

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_str(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be a string, not {type(value).__name__}.", hint="quote the value.")


def parse_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f'{where} must be a boolean, not "{value}".', hint="use true or false.")


def parse_list(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ConfigError(f"{where} cannot be split into words: {exc}.", hint="check its quotes.") from None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where} must be a list of strings.", hint='e.g. param = ["steps=10"].')


def parse_assignments(value: object, where: str) -> tuple[str, ...]:
    """A list (as :func:`parse_list`) of ``KEY=VALUE`` words (the value may contain ``=``).

    Raises:
        ConfigError: a word has no ``=`` or an empty key (given as a flag, the caller makes it exit 2).
    """
    words = parse_list(value, where)
    for word in words:
        key, sep, _ = word.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f'{where} "{word}" is not KEY=VALUE.',
                hint='write it as --param steps=100 (quote values with spaces: --param "name=a b").',
            )
    return words


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


def parse_duration_value(value: object, where: str) -> timedelta:
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


def parse_poll_interval(value: object, where: str) -> timedelta:
    duration = parse_duration_value(value, where)
    if not timedelta(0) < duration <= timedelta(hours=1):
        raise ConfigError(f"{where} must be more than zero and at most 1h.", hint="e.g. 2s (the default).")
    return duration


def parse_timeout(value: object, where: str) -> timedelta:
    """A wait deadline: a duration above zero (``0`` would submit a run only to terminate it at once).

    Raises:
        ConfigError: not a duration, or zero.
    """
    duration = parse_duration_value(value, where)
    if duration <= timedelta(0):
        raise ConfigError(
            f"{where} must be more than zero: a zero deadline would terminate the run as soon as it is submitted.",
            hint="e.g. 45m; leave it out to wait until the run ends (in CI: until 5 minutes before the job timeout).",
        )
    return duration


def parse_count(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ConfigError(f'{where} must be a whole number of 0 or more, not "{value}".', hint="e.g. 50.")


def choice(*options: str) -> Callable[[object, str], str]:
    def parse(value: object, where: str) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise ConfigError(f'{where} must be one of {", ".join(options)}, not "{value}".', hint="")

    return parse


def parse_experiment_template(value: object, where: str) -> str:
    """An ``experiment_template``, checked when read (so a flag's bad value exits 2, before anything runs).

    Raises:
        ConfigError: not a string, or a template :func:`kfp_launch.naming.validate_experiment_template` refuses.
    """
    from kfp_launch.naming import validate_experiment_template

    template = parse_str(value, where)
    validate_experiment_template(template)
    return template


def parse_run_name_template(value: object, where: str) -> str:
    """A ``run_name_template``, rendered once with sample values to check its fields.

    Raises:
        ConfigError: not a string, or an unknown field or bad format (see ``submission.run_name``).
    """
    from kfp_launch.ci_context import CiContext
    from kfp_launch.submission import run_name

    template = parse_str(value, where)
    run_name(template, job="job", ci=CiContext(in_ci=False))
    return template


def parse_ticket_pattern(value: object, where: str) -> str:
    """A ``ticket_pattern`` regex, compiled when read (see ``tickets.ticket_rules``).

    Raises:
        ConfigError: not a string, not a regex, or matching the empty string.
    """
    from kfp_launch.tickets import ticket_rules

    pattern = parse_str(value, where)
    ticket_rules(pattern=pattern)
    return pattern


def parse_ticket_projects(value: object, where: str) -> tuple[str, ...]:
    """``ticket_projects``: JIRA project keys, space-separated (a comma is taken as a separator too).

    Raises:
        ConfigError: a key not in JIRA's format.
    """
    from kfp_launch.tickets import ticket_rules

    keys = tuple(key for word in parse_list(value, where) for key in word.split(",") if key)
    ticket_rules(projects=keys)
    return keys
