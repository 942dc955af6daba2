"""`kfp-launch params`: the parameter table with profiles, the generated typed dataclass, invalid profiles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kfp_launch.errors import ExitCode
from tests.helpers import RunCli


def test_params_table_shows_types_defaults_and_profile_values(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["params", "good"], cwd=project)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("parameter"))
    assert "profile big" in header and "profile toy" in header
    row_a = next(line for line in lines if line.startswith("a "))
    assert [c.strip() for c in row_a.split("│")] == ["a", "int", "2", "100", "1"]
    row_label = next(line for line in lines if line.startswith("label"))
    assert '"007"' in row_label


def test_required_parameters_are_marked_in_the_table(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["params", "required"], cwd=project)
    assert "(required)" in next(line for line in result.stdout.splitlines() if line.startswith("a "))


def test_dataclass_is_valid_python_with_typed_fields_defaults_and_profiles(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["params", "good", "--dataclass"], cwd=project)
    assert result.exit_code == 0, result.output
    namespace: dict[str, object] = {}
    exec(compile(result.stdout, "generated.py", "exec"), namespace)
    cls = namespace["GoodParams"]
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    assert fields == {
        "a": "int", "b": "int", "label": "str", "flag": "bool",
        "weights": "list[object]", "extra": "dict[str, object]", "rate": "float",
    }
    default = cls()  # type: ignore[operator]
    assert default.arguments() == {"a": 2, "b": 3, "label": "007", "flag": False, "weights": [1, 2], "extra": {"k": 1}, "rate": 0.5}
    profiles = namespace["PROFILES"]
    assert profiles["toy"].a == 1 and profiles["toy"].b == 2  # type: ignore[index]
    assert profiles["big"].a == 100 and profiles["big"].b == 3  # type: ignore[index]


def test_dataclass_of_a_pipeline_with_required_parameters(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["params", "required", "--dataclass"], cwd=project)
    namespace: dict[str, object] = {}
    exec(compile(result.stdout, "generated.py", "exec"), namespace)
    cls = namespace["RequiredParams"]
    assert cls(a=1, b=2).arguments() == {"a": 1, "b": 2, "note": "x"}  # type: ignore[operator]


def test_invalid_profiles_are_reported_by_params(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "badprof.py").write_text(
        "from kfp import dsl\nfrom ._steps import add\nPROFILES = {'toy': {'nope': 1, 'a': 'x'}}\n\n"
        "@dsl.pipeline\ndef pipeline(a: int = 1):\n    add(a=a, b=1)\n"
    )
    for args in (["params", "badprof"], ["params", "badprof", "--dataclass"]):
        result = run_cli(args, cwd=project)
        assert result.exit_code == ExitCode.INVALID_INPUT
        assert 'profile toy: unknown parameter "nope"' in result.stderr
        assert 'profile toy: a: "x" is not an integer' in result.stderr
