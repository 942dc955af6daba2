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
    # every effective parameter is listed (given first), none dropped; narrow columns wrap instead of cutting
    flat = "".join(ch for ch in table.stdout if ch not in " \n│┃━─╇┡┩")
    for name in ("a=", "label=", "b=3", "flag=", "rate=0.5", "weights=", "extra="):  # all 7
        assert name in flat, name
    assert "…" not in table.stdout


def test_runs_of_another_job_or_unknown_experiment(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    launch_two(run_cli, project, kfp)
    none = json.loads(run_cli(["runs", "--json", "--job", "other"], cwd=project, env=env_for(kfp)).stdout)
    assert none["runs"] == []
    missing = run_cli(["runs", "--experiment", "nope"], cwd=project, env=env_for(kfp))
    assert missing.exit_code == ExitCode.INVALID_INPUT and 'No experiment named "nope"' in missing.stderr


def test_compare_shows_parameter_differences_side_by_side(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    first, second = launch_two(run_cli, project, kfp)
    data = json.loads(run_cli(["compare", first, second, "--json"], cwd=project, env=env_for(kfp)).stdout)
    # effective values: what the run was given, else the pipeline's default (from the run's spec)
    assert data["parameters"] == {"a": [1, 5], "label": ["007", "x"], "b": [3, 3], "flag": [False, False],
                                  "weights": [[1, 2], [1, 2]], "extra": [{"k": 1}, {"k": 1}], "rate": [0.5, 0.5]}
    assert data["differences"] == ["a", "label"]  # only real differences
    assert data["defaults"]["label"] == [True, False]
    assert [r["state"] for r in data["runs"]] == ["SUCCEEDED", "FAILED"]
    table = run_cli(["compare", first, second], cwd=project, env=env_for(kfp))
    assert "≠ a" in table.stdout and "2 of 7 parameters differ" in table.stdout
    assert f"({first[:8]})" in table.stdout and f"({second[:8]})" in table.stdout  # same name: told apart by id
    assert '"007" (default)' in table.stdout and "3 (default)" in table.stdout and "(unset)" not in table.stdout


def test_the_ids_runs_prints_work_in_compare_and_watch_and_a_prefix_does_too(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    first, second = launch_two(run_cli, project, kfp)
    table = run_cli(["runs"], cwd=project, env=env_for(kfp)).stdout
    assert first in table and second in table
    by_prefix = run_cli(["compare", first[:8], second[:12], "--json"], cwd=project, env=env_for(kfp))
    assert by_prefix.exit_code == 0, by_prefix.output
    assert [r["run_id"] for r in json.loads(by_prefix.stdout)["runs"]] == [first, second]
    watched = run_cli(["watch", first[:8]], cwd=project, env=env_for(kfp))
    assert watched.exit_code == 0, watched.output


def test_compare_shows_a_default_as_the_pipelines_value(run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer) -> None:
    import shutil

    from tests.helpers import REPO_ROOT

    iris = tmp_path / "iris"
    shutil.copytree(REPO_ROOT / "examples" / "iris", iris, ignore=shutil.ignore_patterns(".kfp-launch"))
    for steps in (None, "20"):
        kfp.script_run(["SUCCEEDED"])
        args = ["run", "train", "--no-wait"] + (["-p", f"steps={steps}"] if steps else [])
        assert run_cli(args, cwd=iris, env=env_for(kfp, CI_PIPELINE_ID=str(steps))).exit_code == 0
    first, second = [r["run_id"] for r in sorted(kfp.runs.values(), key=lambda r: r["created_at"])]
    table = run_cli(["compare", first, second], cwd=iris, env=env_for(kfp)).stdout
    assert "300 (default)" in table and "≠ steps" in table


def test_unknown_short_or_ambiguous_run_ids_are_exit_3_saying_which(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    short = run_cli(["compare", "nope-a", "nope-b"], cwd=project, env=env_for(kfp))
    assert short.exit_code == ExitCode.INVALID_INPUT and '"nope-a" is too short to name a run' in short.stderr
    unknown = run_cli(["watch", "abcdef12"], cwd=project, env=env_for(kfp))
    assert unknown.exit_code == ExitCode.INVALID_INPUT and 'No run id starts with "abcdef12"' in unknown.stderr
    missing = run_cli(["watch", "00000000-0000-0000-0000-000000000000"], cwd=project, env=env_for(kfp))
    assert missing.exit_code == ExitCode.INVALID_INPUT and "not found (HTTP 404)" in missing.stderr
    experiment = kfp.add_experiment("e")["experiment_id"]
    for run_id in ("abcdef12-0000-4000-8000-000000000001", "abcdef12-0000-4000-8000-000000000002"):
        kfp.add_run(experiment, "twin", run_id=run_id)
    ambiguous = run_cli(["compare", "abcdef12", "abcdef12-0000-4000-8000-000000000001"], cwd=project, env=env_for(kfp))
    assert ambiguous.exit_code == ExitCode.INVALID_INPUT and '"abcdef12" matches 2 runs' in ambiguous.stderr
