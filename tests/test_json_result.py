"""`--json` on run, watch and cancel: stdout holds exactly one JSON document (an object for one run, a list for
several, an error object when no run was reached), parsed here with `json`; the human log goes to stderr."""

from __future__ import annotations

import json
from pathlib import Path

from kfp_launch.errors import ExitCode
from tests.fake_kfp import FakeKfpServer
from tests.helpers import CI, RunCli, env_for, make_project


def test_run_json_is_one_object_with_the_runs_facts(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    result = run_cli(["run", "good", "--json", "-p", "a=5"], cwd=project, env=env_for(kfp))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # the whole of stdout is the document
    [run] = kfp.runs.values()
    assert document["run_id"] == run["run_id"] and document["job"] == "good"
    assert document["state"] == "SUCCEEDED" and document["exit_code"] == 0
    assert document["url"].endswith(f"/#/runs/details/{run['run_id']}")
    assert document["experiment"] == "feature/ML-42-faster" and document["parameters"]["a"] == 5
    assert isinstance(document["duration_s"], float) and document["local"] is False
    assert "run SUCCEEDED" in result.stderr  # the log is still there, on stderr


def test_run_json_on_a_failed_run_carries_its_exit_code(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING", "FAILED"])
    result = run_cli(["run", "good", "--json"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.RUN_FAILED
    document = json.loads(result.stdout)
    assert (document["state"], document["exit_code"]) == ("FAILED", 6)


def test_run_json_of_several_runs_is_a_list(run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer) -> None:
    project = make_project(tmp_path, 2)
    for _ in range(2):
        kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    result = run_cli(["run", "--all", "--json"], cwd=project, env=env_for(kfp))
    assert result.exit_code == 0, result.output
    documents = json.loads(result.stdout)
    assert sorted(d["job"] for d in documents) == ["job00", "job01"]
    assert {d["run_id"] for d in documents} == set(kfp.runs)


def test_run_json_before_any_run_is_an_error_object(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--json"], cwd=project, env=CI)
    assert result.exit_code == ExitCode.INVALID_INPUT
    document = json.loads(result.stdout)
    assert document["exit_code"] == 3 and "no Kubeflow host" in document["error"]


def test_local_run_json(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--local", "--json"], cwd=project)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["local"] is True and document["state"] == "SUCCEEDED" and document["run_id"] == ""


def test_watch_and_cancel_json(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"] * 50)
    submitted = run_cli(["run", "good", "--no-wait", "--json"], cwd=project, env=env_for(kfp))
    run_id = json.loads(submitted.stdout)["run_id"]
    cancelled = run_cli(["cancel", run_id[:8], "--json"], cwd=project, env=env_for(kfp))
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout) == {"job": "", "run_id": run_id, "url": json.loads(submitted.stdout)["url"],
                                            "result": "terminating", "exit_code": 0}
    watched = run_cli(["watch", run_id, "--json"], cwd=project, env=env_for(kfp))
    document = json.loads(watched.stdout)
    assert document["run_id"] == run_id and document["exit_code"] == watched.exit_code
