"""Many runs from one command: compile-all-first, one poll loop for all, worst exit code, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode, worst_exit_code
from tests.fake_kfp import PATH_RUN, PATH_RUN_TERMINATE, PATH_RUNS, FakeKfpServer
from tests.helpers import RunCli, clean_env, env_for, launch, make_project, runs


def poll_requests(server: FakeKfpServer) -> list[object]:
    """The wait's list requests: `GET /runs` filtered to our run ids (not the attach look-ups)."""
    return [r for r in server.requests_to("GET", PATH_RUNS) if '"run_id"' in (r.param("filter") or "")]


def test_all_with_a_broken_job_submits_nothing_and_lists_every_problem(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    result = run_cli(["run", "--all", "--profile", "toy"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.INVALID_INPUT
    for broken in ("broken: Importing pipelines.broken failed", "syntax:", "missing_dep:", 'failing: Job failing has no profile "toy"'):
        assert broken in result.stderr
    assert "nothing was submitted" in result.stderr
    assert not kfp.requests  # not even a look-up


def test_a_job_without_the_profile_is_listed_with_the_others(run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer) -> None:
    project = make_project(tmp_path, 3, without_toy=(1, 2))
    result = run_cli(["run", "--all", "--profile", "toy"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert 'job01: Job job01 has no profile "toy"' in result.stderr
    assert 'job02: Job job02 has no profile "toy"' in result.stderr
    assert "2 of 3 jobs cannot run" in result.stderr
    assert not kfp.runs


def test_all_toy_runs_every_job_and_one_failure_gives_exit_6_while_others_finish(
    run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer
) -> None:
    project = make_project(tmp_path, 3)
    for states in (["RUNNING", "SUCCEEDED"], ["RUNNING", "FAILED"], ["RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"]):
        kfp.script_run(states, advance_on_list=True)
    result = run_cli(["run", "--all", "--profile", "toy"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    states = {run["display_name"].split()[0]: run["state"] for run in kfp.runs.values()}
    assert states == {"job00": "SUCCEEDED", "job01": "FAILED", "job02": "SUCCEEDED"}  # the slow one still finished
    assert all(run["runtime_config"]["parameters"] == {"a": 1} for run in kfp.runs.values())  # the toy profile
    assert len({run["experiment_id"] for run in kfp.runs.values()}) == 1
    assert "1 of 3 runs did not succeed (exit 6)" in result.stderr
    env = (project / ".kfp-launch" / "run.env").read_text()
    assert env.startswith("KFP_RUN_IDS=") and "KFP_RUN_ID_JOB01=" in env
    junit = (project / ".kfp-launch" / "junit.xml").read_text()
    assert junit.count("<testsuite ") == 3
    state = json.loads((project / ".kfp-launch" / "state.json").read_text())
    assert len(state["runs"]) == 3


@pytest.mark.parametrize("runs", [1, 10])
def test_requests_per_tick_do_not_grow_with_the_number_of_runs(run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer, runs: int) -> None:
    project = make_project(tmp_path, runs)
    for _ in range(runs):
        kfp.script_run(["RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"], advance_on_list=True)
    result = run_cli(["run", "--all"], cwd=project, env=env_for(kfp))
    assert result.exit_code == 0, result.output
    single_reads = kfp.requests_to("GET", PATH_RUN)
    ticks = poll_requests(kfp) + single_reads
    assert len(ticks) == 4  # four ticks, one request each: a GET of the run for 1 run, one list for 10
    assert len(single_reads) == (4 if runs == 1 else 0)  # no GET per run when there are several


def test_explicit_jobs_and_all_cannot_be_combined(run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer) -> None:
    result = run_cli(["run", "job00", "--all"], cwd=make_project(tmp_path, 2), env=env_for(kfp))
    assert result.exit_code == ExitCode.USAGE


def test_two_pipelines_of_one_module_get_two_runs_and_a_repeated_job_runs_once(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    result = launch(run_cli, project, kfp, "two:first", "two:second", "two:first", job_override=True)
    assert result.exit_code == 0, result.output
    assert sorted(r["display_name"].split()[0] for r in runs(kfp)) == ["two:first", "two:second"]


def test_more_than_200_runs_is_an_input_error(run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer) -> None:
    project = make_project(tmp_path, 201)
    result = run_cli(["run", "--all"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.INVALID_INPUT and "more than 200" in result.stderr
    assert not kfp.requests_to("POST", PATH_RUNS)


def test_sigterm_terminates_every_active_run(tmp_path: Path, kfp: FakeKfpServer) -> None:
    project = make_project(tmp_path, 3)
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    kfp.script_run(["RUNNING"], advance_on_list=True)
    kfp.script_run(["RUNNING"], advance_on_list=True)
    env = {k: v for k, v in {**os.environ, **clean_env(env_for(kfp, KFP_LAUNCH_POLL_INTERVAL="0.2"))}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "run", "--all"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            if len(poll_requests(kfp)) >= 2:
                break
            kfp.wait_for_request("GET", PATH_RUNS, count=len(kfp.requests_to("GET", PATH_RUNS)) + 1, timeout_s=30)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out + err
    terminated = {r.path.split("/")[-1].split(":")[0] for r in kfp.requests_to("POST", PATH_RUN_TERMINATE)}
    running = {run_id for run_id, run in kfp.runs.items() if run["display_name"].split()[0] in ("job01", "job02")}
    assert terminated == running  # both active runs, not the one that had already succeeded
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 2


@pytest.mark.parametrize(
    ("codes", "worst"),
    [([0, 6, 7], 6), ([0, 8, 6], 6), ([7, 8], 8), ([5, 7], 7), ([0, 5], 5), ([0, 0], 0), ([6, 143], 143), ([], 0)],
)
def test_worst_exit_code_order(codes: list[int], worst: int) -> None:
    assert worst_exit_code(codes) == worst


def test_local_runs_of_several_jobs(run_cli: RunCli, tmp_path: Path) -> None:
    project = make_project(tmp_path, 2)
    result = run_cli(["run", "--all", "--local", "--profile", "toy"], cwd=project)
    assert result.exit_code == 0, result.output
    assert "run job00 SUCCEEDED" in result.stdout and "run job01 SUCCEEDED" in result.stdout
    assert result.stdout.splitlines()[-1] == "2 of 2 local runs succeeded (exit 0)"
    junit = (project / ".kfp-launch" / "junit.xml").read_text()
    assert junit.count("<testsuite ") == 2  # one set of reports for both runs, as on Kubeflow


def test_a_param_of_several_jobs_goes_to_those_that_declare_it_and_a_typo_is_still_refused(
    run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer
) -> None:
    import shutil

    from tests.helpers import REPO_ROOT

    iris = tmp_path / "iris"
    shutil.copytree(REPO_ROOT / "examples" / "iris", iris, ignore=shutil.ignore_patterns(".kfp-launch", "__pycache__"))
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    result = run_cli(["run", "--all", "--profile", "toy", "-p", "steps=5"], cwd=iris, env=env_for(kfp))
    assert result.exit_code == 0, result.output
    given = sorted((r["display_name"].split()[0], r["runtime_config"]["parameters"]) for r in runs(kfp))
    assert given == [("explore", {"sample_size": 30}), ("train", {"sample_size": 60, "steps": 5})]
    typo = run_cli(["run", "--all", "-p", "stepz=5"], cwd=iris, env=env_for(kfp))
    assert typo.exit_code == ExitCode.INVALID_INPUT
    assert "2 of 2 jobs cannot run" in typo.stderr and typo.stderr.count('unknown parameter "stepz"') == 2
    assert len(kfp.runs) == 2  # nothing more was submitted


def test_a_param_for_a_job_that_does_not_compile_is_not_called_unknown_in_the_others(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    result = run_cli(["run", "--all", "-p", "only_broken_knows=1"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "broken: Importing pipelines.broken failed" in result.stderr
    assert "unknown parameter" not in result.stderr  # the compile errors are the cause to fix first
    assert not kfp.requests
