"""Usage errors (exit 2): Kubeflow-only options with --local, and flag values out of range or malformed;
rejected before anything runs, without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode
from tests.helpers import CI, RunCli


@pytest.mark.parametrize("args", [["--dry-run"], ["--no-wait"], ["--host", "http://x"], ["--timeout", "1h"]])
def test_kubeflow_options_with_local_are_usage_errors(run_cli: RunCli, project: Path, args: list[str]) -> None:
    result = run_cli(["run", "good", "--local", *args], cwd=project)
    assert result.exit_code == ExitCode.USAGE
    assert "only applies to runs on Kubeflow" in result.stderr and "drop it," in result.stderr
    assert not (project / ".kfp-launch").exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--poll-interval", "0"], 2), (["--log-lines", "-5"], 2), (["--timeout", "5x"], 2), (["--timeout", "inf"], 2),
     (["--timeout", "0"], 2), (["--ticket-pattern", "("], 2), (["--ticket-projects", "1X"], 2),
     (["--experiment-template", "{nope}"], 2), (["--run-name-template", "{x}"], 2)],
)
def test_bad_flag_values_are_usage_errors(run_cli: RunCli, project: Path, args: list[str], code: int) -> None:
    result = run_cli(["run", "good", *args], cwd=project, env={**CI, "KFP_HOST": "http://127.0.0.1:9"})
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output


def test_a_poll_interval_over_an_hour_is_rejected(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--poll-interval", "1e10"], cwd=project, env={**CI, "KFP_HOST": "http://127.0.0.1:9"})
    assert result.exit_code == ExitCode.USAGE and "at most 1h" in result.stderr


def test_a_zero_timeout_is_refused_before_anything_is_submitted(run_cli: RunCli, project: Path) -> None:
    from tests.fake_kfp import FakeKfpServer
    from tests.helpers import env_for

    with FakeKfpServer() as kfp:
        result = run_cli(["run", "good", "--timeout", "0"], cwd=project, env=env_for(kfp))
        assert result.exit_code == ExitCode.USAGE
        assert "--timeout must be more than zero" in result.stderr
        assert not kfp.requests


def test_ticket_projects_separated_by_commas_are_keys(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["context", "--json", "--ticket-projects", "ML,OPS", "--branch", "fix/ops-12-retry"], cwd=project)
    assert result.exit_code == 0, result.output
    assert '"ticket": "OPS-12"' in result.stdout


def test_a_missing_host_is_said_before_the_plan_is_printed(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good"], cwd=project, env=CI)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "no Kubeflow host: set KFP_HOST" in result.stderr
    assert "job: good" not in result.stdout and "parameter" not in result.stdout  # no plan printed first


@pytest.mark.parametrize(
    ("args", "env", "origin"),
    [
        ([], {"CI_JOB_NAME": "train-model 1/2"}, 'The name is the GitLab job\'s name (CI_JOB_NAME "train-model 1/2").'),
        (["train_model"], {"KFP_JOB": "train_model"}, "The name comes from the KFP_JOB variable."),
        (["train_model"], {}, "The name is the JOB argument."),
    ],
)
def test_a_wrong_job_name_says_where_it_came_from_and_the_ways_to_set_it(
    run_cli: RunCli, project: Path, args: list[str], env: dict[str, str], origin: str
) -> None:
    result = run_cli(["run", *args], cwd=project, env={**CI, "KFP_HOST": "http://127.0.0.1:9", **env})
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert origin in result.stderr
    assert "as the argument (kfp-launch run train), as the KFP_JOB variable" in result.stderr
    assert "Traceback" not in result.output


def test_no_color_wins_in_a_gitlab_job_and_the_section_markers_stay(run_cli: RunCli, project: Path) -> None:
    from tests.fake_kfp import FakeKfpServer
    from tests.helpers import env_for

    with FakeKfpServer() as kfp:
        coloured = run_cli(["run", "good", "--dry-run"], cwd=project, env=env_for(kfp))
        plain = run_cli(["run", "good", "--dry-run"], cwd=project, env={**env_for(kfp), "NO_COLOR": "1"})
    assert coloured.exit_code == plain.exit_code == 0, plain.output
    assert "\x1b[1m" in coloured.stdout  # bold headers in GitLab's log, unless NO_COLOR
    assert "\x1b[1m" not in plain.output and "\x1b[3" not in plain.output
    assert "section_start:" in plain.stdout and "\x1b[0K" in plain.stdout


def test_dash_c_runs_a_command_in_another_directory_like_git(run_cli: RunCli, project: Path, tmp_path: Path) -> None:
    import json

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(["-C", str(project), "jobs", "--json"], cwd=elsewhere)
    assert result.exit_code == 3  # the fixture project holds broken modules on purpose
    assert "good" in [job["job"] for job in json.loads(result.stdout)]
    local = run_cli(["-C", str(project), "run", "good", "--local"], cwd=elsewhere)
    assert local.exit_code == 0, local.output
    assert (project / ".kfp-launch").is_dir() and not (elsewhere / ".kfp-launch").exists()
    missing = run_cli(["-C", str(tmp_path / "nope"), "jobs"], cwd=elsewhere)
    assert missing.exit_code == 2 and "cannot work in" in missing.output


@pytest.mark.parametrize("command", ["run", "watch", "cancel", "runs", "compare", "compile", "params", "jobs", "context"])
def test_help_reads_like_git_and_pip(run_cli: RunCli, project: Path, command: str) -> None:
    text = run_cli([command, "--help"], cwd=project).stdout
    usage = text.splitlines()[0]
    assert "{" not in usage and "<str>" not in text and "<int>" not in text, text


def test_run_help_says_how_to_authenticate(run_cli: RunCli, project: Path) -> None:
    text = " ".join(run_cli(["run", "--help"], cwd=project).stdout.split())
    for variable in ("KFP_HOST", "KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KFP_COOKIE"):
        assert variable in text


def test_a_push_pipeline_without_merge_requests_says_nothing_of_notes(run_cli: RunCli, project: Path) -> None:
    from tests.fake_kfp import FakeKfpServer
    from tests.helpers import env_for

    with FakeKfpServer() as kfp:
        kfp.script_run(["SUCCEEDED"])
        kfp.script_run(["SUCCEEDED"])
        quiet = run_cli(["run", "good"], cwd=project, env=env_for(kfp))
        with_mr = run_cli(["run", "good", "-p", "a=9"], cwd=project,
                          env={**env_for(kfp), "CI_OPEN_MERGE_REQUESTS": "mlops/demo!4"})
    assert quiet.exit_code == with_mr.exit_code == 0, quiet.output + with_mr.output
    assert "merge request" not in quiet.output
    assert "merge request note: skipped (set GITLAB_TOKEN to write one)" in with_mr.output


def test_a_params_file_mistake_is_said_before_a_missing_host(run_cli: RunCli, project: Path) -> None:
    (project / "p.yaml").write_text("a: 1\na: 2\n")
    result = run_cli(["run", "good", "--params-file", "p.yaml"], cwd=project, env=CI)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert '"a" is given twice' in result.stderr and "no Kubeflow host" not in result.stderr
