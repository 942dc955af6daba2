"""Coerce and validate run parameters against the compiled pipeline's input definitions.

Values come in layers, lowest precedence first: pipeline defaults < profile < params file <
``--param``. Strings (``--param``) are coerced by the parameter's IR type; typed values (a params
file, a profile) are checked. Every problem is collected and reported in one :class:`ParameterError`
so the user fixes them all at once, before anything runs.

Coercion rules follow what the KFP API server validates at CreateRun (kubeflow/pipelines
backend/src/apiserver/template/v2_template.go (2.17.0), ``V2Spec.validatePipelineJobInputs``; see
docs/kfp-backend-notes.md, 'Parameter validation at CreateRun'): NUMBER_INTEGER needs a whole JSON
number (the server accepts any number; we are stricter), NUMBER_DOUBLE a number, BOOLEAN a bool, STRING a
string (kept verbatim: ``007`` stays ``"007"``), LIST a JSON array, STRUCT a JSON object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfp_launch.errors import ParameterError, UsageError
from kfp_launch.models import ParameterType, ParameterValue, PipelineParameter, ResolvedParameters

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, kw_only=True)
class ParameterLayer:
    """One source of parameter values.

    Attributes:
        source: where the values come from, shown to the user (``"--param"``, ``"profile toy"``).
        values: name -> value; a ``str`` is coerced by the parameter's type when ``raw`` is true,
            otherwise the value must already have the right type.
        raw: true for command-line strings (``--param k=v``), false for typed values.
    """

    source: str
    values: Mapping[str, object]
    raw: bool = False


def parse_param_assignments(assignments: Iterable[str], *, origin: str = "--param") -> dict[str, str]:
    """Split ``KEY=VALUE`` strings (the value may contain ``=``); a later key wins.

    Raises:
        UsageError: an assignment has no ``=`` or an empty key (exit 2).
    """
    values: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f'{origin} "{item}" is not KEY=VALUE.',
                hint='write it as --param steps=100 (quote values with spaces: --param "name=a b").',
            )
        values[key.strip()] = value
    return values


def resolve_parameters(
    parameters: Sequence[PipelineParameter], layers: Sequence[ParameterLayer], *, job: str
) -> ResolvedParameters:
    """Merge ``layers`` over the pipeline defaults, coerce each value and validate the result.

    Args:
        parameters: the compiled pipeline's parameters, in signature order.
        layers: value layers, lowest precedence first.
        job: the job name, for messages.

    Returns:
        Every parameter that has a value, with its source.

    Raises:
        ParameterError: unknown names, missing required parameters or wrong types, all listed.
    """
    by_name = {p.name: p for p in parameters}
    problems: list[str] = []
    invalid: set[str] = set()
    chosen: dict[str, ParameterValue] = {
        p.name: ParameterValue(name=p.name, value=p.default, source="default") for p in parameters if p.has_default
    }
    for layer in layers:
        for name, raw in layer.values.items():
            spec = by_name.get(name)
            if spec is None:
                problems.append(f'unknown parameter "{name}" (from {layer.source})')
                continue
            if raw is None:
                continue  # null means "leave it to the pipeline's default"
            value, problem = coerce_value(spec, raw, raw_string=layer.raw)
            if problem:
                problems.append(f"{name} (from {layer.source}): {problem}")
                invalid.add(name)
            else:
                chosen[name] = ParameterValue(name=name, value=value, source=layer.source)
    problems += [
        f"{p.name}: required, no value given"
        for p in parameters
        if p.is_required and p.name not in chosen and p.name not in invalid
    ]
    if problems:
        raise _parameter_error(job, parameters, problems)
    return ResolvedParameters(values=tuple(chosen[p.name] for p in parameters if p.name in chosen))


def _parameter_error(job: str, parameters: Sequence[PipelineParameter], problems: list[str]) -> ParameterError:
    accepted = ", ".join(f"{p.name}: {p.type.label}" for p in parameters) or "none"
    return ParameterError(
        f"Invalid parameters for job {job}:\n" + "\n".join(f"  - {p}" for p in problems),
        hint=f"the pipeline accepts: {accepted}. Nothing was run or submitted.",
    )


def profile_problems(
    parameters: Sequence[PipelineParameter], profiles: Mapping[str, Mapping[str, object]]
) -> list[str]:
    """What is wrong in a job's ``PROFILES``: unknown parameter names and values of the wrong type
    (a profile need not set every required parameter: a params file or ``--param`` may)."""
    by_name = {p.name: p for p in parameters}
    problems = []
    for profile, values in sorted(profiles.items()):
        for name, value in values.items():
            spec = by_name.get(name)
            if spec is None:
                problems.append(f'profile {profile}: unknown parameter "{name}"')
            elif value is not None and (problem := coerce_value(spec, value, raw_string=False)[1]):
                problems.append(f"profile {profile}: {name}: {problem}")
    return problems


def coerce_value(spec: PipelineParameter, value: object, *, raw_string: bool) -> tuple[object, str]:
    """Coerce one value for ``spec``.

    Args:
        spec: the parameter.
        value: a string from the command line (``raw_string``) or a typed value.
        raw_string: whether ``value`` is a command-line string to parse by type.

    Returns:
        ``(typed_value, "")`` or ``(None, problem)`` where problem says what is wrong.
    """
    if isinstance(value, str) and (raw_string or spec.type is not ParameterType.STRING):
        return _coerce_string(spec.type, value)
    return _check_typed(spec.type, value)


def _coerce_string(kind: ParameterType, text: str) -> tuple[object, str]:
    if kind is ParameterType.STRING:
        return text, ""
    if kind is ParameterType.INTEGER:
        try:
            return int(text.strip()), ""
        except ValueError:
            return None, f'"{text}" is not an integer'
    if kind is ParameterType.FLOAT:
        try:
            number = float(text.strip())
        except ValueError:
            return None, f'"{text}" is not a number'
        return (number, "") if math.isfinite(number) else (None, f'"{text}" is not a finite number')
    if kind is ParameterType.BOOLEAN:
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE, ""
        return None, f'"{text}" is not a boolean (use true/false, 1/0 or yes/no)'
    if kind in (ParameterType.LIST, ParameterType.STRUCT):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, f"not valid JSON ({exc.msg} at character {exc.pos})"
        return _check_typed(kind, parsed)
    return None, f"parameters of type {kind.value} cannot be set"


def _check_typed(kind: ParameterType, value: object) -> tuple[object, str]:
    if kind is ParameterType.STRING:
        if isinstance(value, str):
            return value, ""
        return None, (
            f"expected a string, got {_describe(value)}; quote it in the file "
            f'(e.g. "{_yaml_text(value)}"), since YAML reads 007 as 7 and yes as true'
        )
    if kind is ParameterType.INTEGER:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, ""
        if isinstance(value, float) and value.is_integer():
            return int(value), ""
        return None, f"expected an integer, got {_describe(value)}"
    if kind is ParameterType.FLOAT:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value), ""
        return None, f"expected a number, got {_describe(value)}"
    if kind is ParameterType.BOOLEAN:
        return (value, "") if isinstance(value, bool) else (None, f"expected true or false, got {_describe(value)}")
    if kind is ParameterType.LIST:
        return (value, "") if isinstance(value, list) else (None, f"expected a JSON list, got {_describe(value)}")
    if kind is ParameterType.STRUCT:
        return (value, "") if isinstance(value, dict) else (None, f"expected a JSON object, got {_describe(value)}")
    return None, f"parameters of type {kind.value} cannot be set"


def _describe(value: object) -> str:
    return f"{type(value).__name__} {json.dumps(value, default=str)}"


def _yaml_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_params_file(path: Path) -> dict[str, object]:
    """Read a params file: a YAML or JSON mapping of parameter name -> value.

    ``.json`` files are read as JSON; anything else as YAML (a superset of JSON). A YAML value written without
    quotes (a plain scalar) is returned as its text, so the parameter's type decides what it means, as for
    ``-p``: ``steps: 010`` is 10 for an integer and ``"010"`` for a string, ``source: NO`` stays ``"NO"`` (YAML 1.1,
    which PyYAML follows, would read them as octal 8 and false); ``~``/``null`` stays None (the default).
    A name given twice is an error, in YAML and JSON.

    Raises:
        ParameterError: the file is missing, unreadable, not valid YAML/JSON, or not a mapping.
    """
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(
            f"Cannot read the params file {path}: {exc.strerror or exc}.",
            hint="check the path given to --params-file.",
        ) from None
    except UnicodeDecodeError as exc:
        raise ParameterError(
            f"The params file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).",
            hint="save it as UTF-8 YAML or JSON.",
        ) from None
    try:
        data = (
            json.loads(text, object_pairs_hook=_no_duplicates) if path.suffix.lower() == ".json" else _load_yaml(text)
        )
    except (json.JSONDecodeError, yaml.YAMLError, _DuplicateKey) as exc:
        raise ParameterError(
            f"The params file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}",
            hint="fix the file; it must be a mapping of parameter name to value, each name once.",
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParameterError(
            f"The params file {path} must hold a mapping of parameter name to value, not {type(data).__name__}.",
            hint='write it as `steps: 100` lines (YAML) or {"steps": 100} (JSON).',
        )
    return data


class _DuplicateKey(ValueError):
    """A params file names one parameter twice."""


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``json.loads`` hook: a mapping, refusing a key given twice (JSON itself allows it, last wins)."""
    data: dict[str, object] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(f'"{key}" is given twice')
        data[key] = value
    return data


def _load_yaml(text: str) -> object:
    """Load YAML with PyYAML's safe loader, refusing duplicate keys, keeping top-level plain scalars as text."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
            seen: set[object] = set()
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise _DuplicateKey(f'"{key}" is given twice (again on line {key_node.start_mark.line + 1})')
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    loader = Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        data = loader.construct_document(root)
    finally:
        loader.dispose()
    if isinstance(root, yaml.MappingNode) and isinstance(data, dict):
        for (key, _), (_, value_node) in zip(list(data.items()), root.value, strict=True):
            plain = isinstance(value_node, yaml.ScalarNode) and value_node.style is None
            if plain and value_node.tag != "tag:yaml.org,2002:null":
                data[key] = value_node.value
    return data
