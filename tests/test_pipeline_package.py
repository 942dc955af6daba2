"""Importing and compiling real pipeline modules of the fixture project, broken ones included."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kfp_launch.errors import ExitCode, JobNotFoundError, PipelineError
from kfp_launch.models import ParameterType
from kfp_launch.pipeline_package import compile_job, list_job_modules


def test_lists_job_modules_without_private_ones(project: Path) -> None:
    jobs = list_job_modules(project, "pipelines")
    assert "good" in jobs and "failing" in jobs
    assert "_steps" not in jobs
    assert list_job_modules(project, "nope") == []


def test_compiles_pipeline_with_relative_imports_and_typed_parameters(project: Path) -> None:
    compiled = compile_job("good", project_dir=project, package="pipelines")
    assert (compiled.job, compiled.module, compiled.function) == ("good", "pipelines.good", "pipeline")
    assert compiled.pipeline_name == "good-pipeline"
    assert compiled.description == "adds and scores"
    assert [(p.name, p.type, p.default) for p in compiled.parameters] == [
        ("a", ParameterType.INTEGER, 2),
        ("b", ParameterType.INTEGER, 3),
        ("label", ParameterType.STRING, "007"),
        ("flag", ParameterType.BOOLEAN, False),
        ("weights", ParameterType.LIST, [1, 2]),
        ("extra", ParameterType.STRUCT, {"k": 1}),
        ("rate", ParameterType.FLOAT, 0.5),
    ]
    assert compiled.profiles == {"toy": {"a": 1, "b": 2}, "big": {"a": 100}}
    spec = yaml.safe_load(compiled.package_yaml)
    assert spec["pipelineInfo"]["name"] == "good-pipeline"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"a", "b", "label", "flag", "weights", "extra", "rate"}


def test_required_parameters_are_marked(project: Path) -> None:
    compiled = compile_job("required", project_dir=project, package="pipelines")
    assert compiled.function == "needs_inputs"  # the only pipeline, whatever its name
    assert [(p.name, p.is_required) for p in compiled.parameters] == [("a", True), ("b", True), ("note", False)]


def test_unknown_job_lists_existing_jobs(project: Path) -> None:
    with pytest.raises(JobNotFoundError) as info:
        compile_job("trian", project_dir=project, package="pipelines")
    assert 'No job "trian"' in info.value.message
    assert "good" in info.value.hint and "failing" in info.value.hint
    assert info.value.exit_code == ExitCode.INVALID_INPUT


def test_missing_package_says_where_to_run_from(tmp_path: Path) -> None:
    with pytest.raises(JobNotFoundError, match='there is no "pipelines" package'):
        compile_job("train", project_dir=tmp_path, package="pipelines")


@pytest.mark.parametrize("name", ["_steps", "bad-name", ""])
def test_private_or_invalid_names_are_not_jobs(project: Path, name: str) -> None:
    with pytest.raises(JobNotFoundError, match="is not a job name"):
        compile_job(name, project_dir=project, package="pipelines")


def test_module_raising_on_import_shows_user_frames_only(project: Path) -> None:
    with pytest.raises(PipelineError) as info:
        compile_job("broken", project_dir=project, package="pipelines")
    message = info.value.message
    assert "Importing pipelines.broken failed with KeyError: 'missing'" in message
    assert 'File "pipelines/broken.py", line 3, in <module>' in message
    assert 'VALUE = {"a": 1}["missing"]' in message
    assert "importlib" not in message and "site-packages" not in message


def test_syntax_error_points_at_the_line(project: Path) -> None:
    with pytest.raises(PipelineError) as info:
        compile_job("syntax", project_dir=project, package="pipelines")
    assert "SyntaxError" in info.value.message
    assert 'File "pipelines/syntax.py", line 1' in info.value.message


def test_missing_dependency_hints_to_install_it(project: Path) -> None:
    with pytest.raises(PipelineError) as info:
        compile_job("missing_dep", project_dir=project, package="pipelines")
    assert "not_a_real_package_xyz" in info.value.hint


def test_several_pipelines_without_one_named_pipeline_is_ambiguous(project: Path) -> None:
    with pytest.raises(PipelineError) as info:
        compile_job("two", project_dir=project, package="pipelines")
    assert "several pipelines (first, second)" in info.value.message
    assert "two:first" in info.value.hint


def test_job_colon_function_picks_one(project: Path) -> None:
    compiled = compile_job("two:second", project_dir=project, package="pipelines")
    assert (compiled.function, compiled.pipeline_name) == ("second", "second")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("two:not_a_pipeline", "is not a pipeline"), ("two:plain_function", "is not a pipeline"), ("two:nothing", "no attribute")],
)
def test_function_that_is_not_a_pipeline_is_rejected(project: Path, spec: str, fragment: str) -> None:
    with pytest.raises(PipelineError, match=fragment):
        compile_job(spec, project_dir=project, package="pipelines")


def test_pipelines_imported_from_elsewhere_do_not_count(project: Path) -> None:
    with pytest.raises(PipelineError, match=r"defines no @dsl\.pipeline"):
        compile_job("helpers", project_dir=project, package="pipelines")


def test_malformed_profiles_are_rejected(project: Path) -> None:
    (project / "pipelines" / "badprof.py").write_text(
        "from kfp import dsl\nfrom ._steps import add\nPROFILES = {'toy': 3}\n\n"
        "@dsl.pipeline\ndef pipeline(a: int = 1):\n    add(a=a, b=1)\n"
    )
    with pytest.raises(PipelineError, match="PROFILES must be a dict"):
        compile_job("badprof", project_dir=project, package="pipelines")


def test_other_package_name_is_honoured(project: Path) -> None:
    (project / "pipelines").rename(project / "flows")
    compiled = compile_job("good", project_dir=project, package="flows")
    assert compiled.module == "flows.good"
