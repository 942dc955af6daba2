"""Settings precedence: flag > environment > [tool.kfp-launch] > default, with sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfp_launch.errors import ConfigError, ExitCode
from kfp_launch.settings import SPECS, help_suffix, load_settings


def write_pyproject(path: Path, body: str) -> None:
    (path / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.kfp-launch]\n" + body)


def test_defaults_apply_without_flags_env_or_pyproject(tmp_path: Path) -> None:
    settings = load_settings({}, {}, tmp_path)
    assert settings.pipelines_package == "pipelines"
    assert settings.local_root == ".kfp-launch/local"
    assert settings.param == ()
    assert settings.verbose is False
    assert settings.sources["pipelines_package"] == "default"


def test_flag_beats_env_beats_pyproject_beats_default(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'pipelines_package = "from_toml"\nlocal_root = "toml-root"\nprofile = "toml"\n')
    env = {"KFP_LAUNCH_PIPELINES_PACKAGE": "from_env", "KFP_LAUNCH_LOCAL_ROOT": "env-root"}
    settings = load_settings({"pipelines_package": "from_flag"}, env, tmp_path)
    assert (settings.pipelines_package, settings.sources["pipelines_package"]) == ("from_flag", "--pipelines-package")
    assert (settings.local_root, settings.sources["local_root"]) == ("env-root", "env KFP_LAUNCH_LOCAL_ROOT")
    assert (settings.profile, settings.sources["profile"]) == ("toml", "pyproject.toml")
    assert settings.sources["experiment_template"] == "default"


def test_empty_environment_values_count_as_unset(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'profile = "toml"\n')
    settings = load_settings({}, {"KFP_LAUNCH_PROFILE": ""}, tmp_path)
    assert settings.profile == "toml"


def test_ticket_setting_is_the_flag_and_jira_ticket_is_left_to_the_ci_context(tmp_path: Path) -> None:
    settings = load_settings({}, {"JIRA_TICKET": "ML-7", "KFP_LAUNCH_TICKET": "NO-1"}, tmp_path)
    assert (settings.ticket, settings.sources["ticket"]) == (None, "default")  # ci_context reads JIRA_TICKET
    assert "JIRA_TICKET" in help_suffix("ticket")
    flagged = load_settings({"ticket": "ML-8"}, {"JIRA_TICKET": "ML-7"}, tmp_path)
    assert (flagged.ticket, flagged.sources["ticket"]) == ("ML-8", "--ticket")


def test_param_from_env_is_split_like_a_shell(tmp_path: Path) -> None:
    settings = load_settings({}, {"KFP_LAUNCH_PARAM": "steps=3 'name=a b'"}, tmp_path)
    assert settings.param == ("steps=3", "name=a b")
    write_pyproject(tmp_path, 'param = ["steps=4"]\n')
    assert load_settings({}, {}, tmp_path).param == ("steps=4",)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("0", False), ("Yes", True), ("off", False)])
def test_boolean_settings_parse_common_spellings(tmp_path: Path, raw: str, expected: bool) -> None:
    assert load_settings({}, {"KFP_LAUNCH_VERBOSE": raw}, tmp_path).verbose is expected


def test_bad_boolean_in_env_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, {"KFP_LAUNCH_VERBOSE": "loud"}, tmp_path)
    assert "KFP_LAUNCH_VERBOSE" in info.value.message
    assert info.value.exit_code == ExitCode.INVALID_INPUT


def test_unknown_pyproject_key_is_rejected_with_the_valid_keys(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'pipeline_package = "typo"\n')
    with pytest.raises(ConfigError) as info:
        load_settings({}, {}, tmp_path)
    assert "pipeline_package" in info.value.message
    assert "pipelines_package" in info.value.hint


def test_wrong_type_in_pyproject_is_rejected(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "pipelines_package = 3\n")
    with pytest.raises(ConfigError, match=r"pipelines_package in \[tool\.kfp-launch\]"):
        load_settings({}, {}, tmp_path)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.kfp-launch\n")
    with pytest.raises(ConfigError, match="Cannot read"):
        load_settings({}, {}, tmp_path)


def test_every_setting_names_its_variable_in_help() -> None:
    for name, spec in SPECS.items():
        assert spec.env_var in help_suffix(name)
    assert SPECS["pipelines_package"].env_var == "KFP_LAUNCH_PIPELINES_PACKAGE"
    assert SPECS["pipelines_package"].flag == "--pipelines-package"


def test_the_sdk_host_variable_comes_after_pyproject(tmp_path: Path) -> None:
    sdk = {"KF_PIPELINES_ENDPOINT": "http://ml-pipeline.kubeflow:8888"}
    assert (load_settings({}, sdk, tmp_path).host, load_settings({}, sdk, tmp_path).sources["host"]) == (
        "http://ml-pipeline.kubeflow:8888", "env KF_PIPELINES_ENDPOINT")
    write_pyproject(tmp_path, 'host = "https://kubeflow.example.com/pipeline"\n')
    settings = load_settings({}, sdk, tmp_path)
    assert (settings.host, settings.sources["host"]) == ("https://kubeflow.example.com/pipeline", "pyproject.toml")
    ours = load_settings({}, {**sdk, "KFP_HOST": "https://other.example.com"}, tmp_path)
    assert ours.host == "https://other.example.com"
