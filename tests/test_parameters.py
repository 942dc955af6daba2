"""Parameter coercion and validation against the compiled input types (no kfp needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode, ParameterError, UsageError
from kfp_launch.models import ParameterType, PipelineParameter
from kfp_launch.parameters import (
    ParameterLayer,
    coerce_value,
    load_params_file,
    parse_param_assignments,
    resolve_parameters,
)


def param(name: str, kind: ParameterType, **kw: object) -> PipelineParameter:
    return PipelineParameter(name=name, type=kind, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (ParameterType.INTEGER, "42", 42),
        (ParameterType.INTEGER, " -7 ", -7),
        (ParameterType.FLOAT, "0.25", 0.25),
        (ParameterType.FLOAT, "3", 3.0),
        (ParameterType.BOOLEAN, "true", True),
        (ParameterType.BOOLEAN, "YES", True),
        (ParameterType.BOOLEAN, "1", True),
        (ParameterType.BOOLEAN, "no", False),
        (ParameterType.BOOLEAN, "0", False),
        (ParameterType.BOOLEAN, "False", False),
        (ParameterType.STRING, "007", "007"),
        (ParameterType.STRING, "[1, 2]", "[1, 2]"),
        (ParameterType.STRING, " spaced ", " spaced "),
        (ParameterType.STRING, "", ""),
        (ParameterType.LIST, "[1, \"a\", null]", [1, "a", None]),
        (ParameterType.STRUCT, '{"k": {"n": 1}}', {"k": {"n": 1}}),
    ],
)
def test_command_line_strings_are_coerced_by_the_compiled_type(kind: ParameterType, text: str, expected: object) -> None:
    value, problem = coerce_value(param("x", kind), text, raw_string=True)
    assert problem == ""
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "text", "fragment"),
    [
        (ParameterType.INTEGER, "1.5", "not an integer"),
        (ParameterType.INTEGER, "ten", "not an integer"),
        (ParameterType.FLOAT, "abc", "not a number"),
        (ParameterType.FLOAT, "nan", "not a finite number"),
        (ParameterType.BOOLEAN, "maybe", "not a boolean"),
        (ParameterType.LIST, '{"a": 1}', "expected a JSON list"),
        (ParameterType.LIST, "[1, 2", "not valid JSON"),
        (ParameterType.STRUCT, "[1]", "expected a JSON object"),
    ],
)
def test_wrong_command_line_strings_are_reported(kind: ParameterType, text: str, fragment: str) -> None:
    value, problem = coerce_value(param("x", kind), text, raw_string=True)
    assert value is None
    assert fragment in problem


@pytest.mark.parametrize(
    ("kind", "value", "expected", "fragment"),
    [
        (ParameterType.INTEGER, 5, 5, ""),
        (ParameterType.INTEGER, 5.0, 5, ""),
        (ParameterType.INTEGER, True, None, "expected an integer"),
        (ParameterType.INTEGER, "12", 12, ""),
        (ParameterType.FLOAT, 2, 2.0, ""),
        (ParameterType.BOOLEAN, "yes", True, ""),
        (ParameterType.BOOLEAN, 1, None, "expected true or false"),
        (ParameterType.STRING, 7, None, "quote it"),
        (ParameterType.STRING, True, None, "quote it"),
        (ParameterType.STRING, "007", "007", ""),
        (ParameterType.LIST, [1], [1], ""),
        (ParameterType.STRUCT, {"a": 1}, {"a": 1}, ""),
        (ParameterType.STRUCT, "not json", None, "not valid JSON"),
    ],
)
def test_typed_values_are_checked(kind: ParameterType, value: object, expected: object, fragment: str) -> None:
    got, problem = coerce_value(param("x", kind), value, raw_string=False)
    assert got == expected
    assert (fragment in problem) if fragment else problem == ""


def test_param_without_equals_is_a_usage_error_exit_2() -> None:
    with pytest.raises(UsageError) as info:
        parse_param_assignments(["steps=1", "oops"])
    assert '"oops"' in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


def test_value_may_contain_equals_and_later_assignment_wins() -> None:
    assert parse_param_assignments(["q=a=b", "n=1", "n=2"]) == {"q": "a=b", "n": "2"}


PARAMS = (
    param("steps", ParameterType.INTEGER, default=10, has_default=True, optional=True),
    param("name", ParameterType.STRING),
    param("rate", ParameterType.FLOAT, default=0.1, has_default=True, optional=True),
    param("note", ParameterType.STRING, optional=True),
)


def test_layers_apply_in_precedence_order_and_sources_are_kept() -> None:
    resolved = resolve_parameters(
        PARAMS,
        [
            ParameterLayer(source="profile toy", values={"steps": 2, "rate": 0.5}),
            ParameterLayer(source="params file p.yaml", values={"steps": 3, "name": "from-file"}),
            ParameterLayer(source="--param", values={"steps": "4"}, raw=True),
        ],
        job="train",
    )
    assert [(v.name, v.value, v.source) for v in resolved.values] == [
        ("steps", 4, "--param"),
        ("name", "from-file", "params file p.yaml"),
        ("rate", 0.5, "profile toy"),
    ]
    assert resolved.arguments() == {"steps": 4, "name": "from-file", "rate": 0.5}


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ParameterError) as info:
        resolve_parameters(
            PARAMS,
            [ParameterLayer(source="--param", values={"steps": "many", "colour": "red"}, raw=True)],
            job="train",
        )
    message = info.value.message
    assert 'steps (from --param): "many" is not an integer' in message
    assert 'unknown parameter "colour" (from --param)' in message
    assert "name: required, no value given" in message
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    assert "steps: int" in info.value.hint


def test_optional_parameter_without_default_may_stay_unset() -> None:
    resolved = resolve_parameters(PARAMS, [ParameterLayer(source="--param", values={"name": "n"}, raw=True)], job="j")
    assert "note" not in resolved.as_dict()
    assert resolved.as_dict() == {"steps": 10, "name": "n", "rate": 0.1}
    assert resolved.arguments() == {"name": "n"}


def test_params_file_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("steps: 5\nname: '007'\n")
    (tmp_path / "p.json").write_text('{"steps": 6, "name": "x"}')
    assert load_params_file(tmp_path / "p.yaml") == {"steps": "5", "name": "007"}  # plain: text, typed later
    assert load_params_file(tmp_path / "p.json") == {"steps": 6, "name": "x"}


@pytest.mark.parametrize(
    ("filename", "content", "fragment"),
    [
        ("bad.yaml", "steps: [1\n", "not valid YAML"),
        ("bad.json", "{steps: 1}", "not valid JSON"),
        ("list.yaml", "- 1\n- 2\n", "must hold a mapping"),
    ],
)
def test_bad_params_files_are_input_errors(tmp_path: Path, filename: str, content: str, fragment: str) -> None:
    (tmp_path / filename).write_text(content)
    with pytest.raises(ParameterError) as info:
        load_params_file(tmp_path / filename)
    assert fragment in info.value.message


def test_missing_params_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="Cannot read the params file"):
        load_params_file(tmp_path / "nope.yaml")


def test_a_yaml_params_file_is_read_as_written_for_each_parameters_type(tmp_path: Path) -> None:
    # PyYAML follows YAML 1.1: unquoted 007 is int 7, 010 octal 8, NO false. Plain values are taken as text and
    # coerced by the parameter's type, like -p: what the user wrote is what the run gets.
    (tmp_path / "p.yaml").write_text("name: 007\nsteps: 010\n")
    values = load_params_file(tmp_path / "p.yaml")
    resolved = resolve_parameters(PARAMS, [ParameterLayer(source="params file p.yaml", values=values)], job="j")
    assert resolved.as_dict()["name"] == "007" and resolved.as_dict()["steps"] == 10


def test_a_yaml_value_that_is_not_of_the_parameters_type_is_refused_with_the_users_text(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("steps: 1:30\n")  # YAML 1.1 sexagesimal: 90
    values = load_params_file(tmp_path / "p.yaml")
    with pytest.raises(ParameterError) as info:
        resolve_parameters(PARAMS, [ParameterLayer(source="params file p.yaml", values=values)], job="j")
    assert 'steps (from params file p.yaml): "1:30" is not an integer' in info.value.message


@pytest.mark.parametrize(("filename", "content"), [("d.yaml", "steps: 1\nsteps: 2\n"), ("d.json", '{"steps": 1, "steps": 2}')])
def test_a_name_given_twice_in_a_params_file_is_refused(tmp_path: Path, filename: str, content: str) -> None:
    (tmp_path / filename).write_text(content)
    with pytest.raises(ParameterError) as info:
        load_params_file(tmp_path / filename)
    assert '"steps" is given twice' in info.value.message
