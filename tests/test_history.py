"""`kfp-launch runs` and `kfp-launch compare` against the fake KFP server."""

from __future__ import annotations

import json
from pathlib import Path

from kfp_launch.errors import ExitCode
from tests.fake_kfp import FakeKfpServer
from tests.helpers import RunCli, env_for


def launch_two(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> list[str]:
    kfp.script_run(["SUCCEEDED"])
    kfp.script_run(["FAILED"])
    assert run_cli(["run", "good", "-p", "a=1"], cwd=project, env=env_for(kfp)).exit_code == 0
    assert run_cli(["run", "good", "-p", "a=5", "-p", "label=x"], cwd=project,
                   env=env_for(kfp, CI_PIPELINE_ID="1002", CI_COMMIT_SHA="f" * 40)).exit_code == ExitCode.RUN_FAILED
    return [r["run_id"] for r in sorted(kfp.runs.values(), key=lambda r: r["created_at"])]


def test_runs_lists_the_branchs_runs_with_state_commit_and_parameters(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    first, second = launch_two(run_cli, project, kfp)
    result = run_cli(["runs", "--json"], cwd=project, env=env_for(kfp))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["experiment"].startswith("feature/ML-42-faster")
    by_id = {r["run_id"]: r for r in data["runs"]}
    assert set(by_id) == {first, second}
    assert by_id[first]["state"] == "SUCCEEDED" and by_id[first]["commit"] == "01234567"
    assert by_id[second]["state"] == "FAILED" and by_id[second]["commit"] == "ffffffff"
    assert by_id[second]["parameters"] == {"a": 5, "label": "x"} and by_id[second]["job"] == "good"
    assert data["metrics"] is None and "not available" in data["metrics_note"]
    table = run_cli(["runs", "--job", "good", "--limit", "1"], cwd=project, env=env_for(kfp))
    assert table.exit_code == 0 and "not available from the KFP v2beta1 API" in table.stdout
    assert table.stdout.count("good ") >= 1


def test_runs_of_another_job_or_unknown_experiment(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    launch_two(run_cli, project, kfp)
    none = json.loads(run_cli(["runs", "--json", "--job", "other"], cwd=project, env=env_for(kfp)).stdout)
    assert none["runs"] == []
    missing = run_cli(["runs", "--experiment", "nope"], cwd=project, env=env_for(kfp))
    assert missing.exit_code == ExitCode.INVALID_INPUT and 'No experiment named "nope"' in missing.stderr


def test_compare_shows_parameter_differences_side_by_side(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    first, second = launch_two(run_cli, project, kfp)
    data = json.loads(run_cli(["compare", first, second, "--json"], cwd=project, env=env_for(kfp)).stdout)
    assert data["parameters"] == {"a": [1, 5], "label": [None, "x"]}
    assert data["differences"] == ["a", "label"]
    assert [r["state"] for r in data["runs"]] == ["SUCCEEDED", "FAILED"]
    table = run_cli(["compare", first, second], cwd=project, env=env_for(kfp))
    assert "≠ a" in table.stdout and "2 of 2 parameters differ" in table.stdout
    assert "(unset)" in table.stdout


def test_compare_unknown_run_is_exit_3(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    result = run_cli(["compare", "nope-a", "nope-b"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "HTTP 404" in result.stderr
