"""Regression tests for a reviewer's findings: cut bodies, duplicate jobs, vanished runs, retries after an
outage, state files of other jobs, cancel robustness, swallowed signals, reports on mid-wait errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode
from tests.conftest import RunCli, clean_env
from tests.fake_kfp import PATH_RUN, PATH_RUN_TERMINATE, PATH_RUNS, FakeKfpServer
from tests.test_fanout import make_project
from tests.test_kubeflow_run import CI, TOKEN, env_for, launch, runs


def test_a_body_cut_mid_read_is_a_transient_failure_not_a_crash() -> None:
    import urllib3

    from kfp_launch.connection import Connection
    from kfp_launch.errors import TransientKfpError
    from kfp_launch.kfp_api import KfpApi

    class CutBody:
        status = 200
        headers = {"content-type": "application/json"}

        @property
        def data(self) -> bytes:
            raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(10 bytes read, 90 more expected)")

    api = KfpApi(Connection(host="http://127.0.0.1:9", namespace="team-a"))
    with pytest.raises(TransientKfpError) as info:
        api._call(lambda **_kwargs: CutBody(), "read run r1", write=True)
    assert info.value.maybe_applied  # a write whose answer was lost may have happened


def test_two_pipelines_of_one_module_get_two_runs_and_a_repeated_job_runs_once(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    result = launch(run_cli, project, kfp, "two:first", "two:second", "two:first", job_override=True)
    assert result.exit_code == 0, result.output
    assert sorted(r["display_name"].split()[0] for r in runs(kfp)) == ["two:first", "two:second"]


def test_the_retry_after_an_outage_reports_the_run_that_succeeded_meanwhile(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["SUCCEEDED"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0
    with kfp.lock:
        next(iter(kfp.runs.values()))["state"] = "SUCCEEDED"
    retried = launch(run_cli, project, kfp, CI_JOB_ID="78")
    assert retried.exit_code == 0, retried.output
    assert len(runs(kfp)) == 1 and "attached" in retried.output


def test_a_failed_run_is_run_again_by_a_retried_job(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["FAILED"])
    assert launch(run_cli, project, kfp).exit_code == ExitCode.RUN_FAILED
    kfp.script_run(["SUCCEEDED"])
    assert launch(run_cli, project, kfp, CI_JOB_ID="78").exit_code == 0
    assert len(runs(kfp)) == 2


def test_cancel_leaves_runs_recorded_by_another_ci_job(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0  # CI_JOB_ID 77 recorded it
    other_job = run_cli(["cancel", "--state-file", ".kfp-launch/state.json"], cwd=project,
                        env=env_for(kfp, CI_JOB_ID="99"))
    assert other_job.exit_code == 0 and "not this one" in other_job.stdout
    assert not kfp.requests_to("POST", PATH_RUN_TERMINATE)
    same_job = run_cli(["cancel", "--state-file", ".kfp-launch/state.json"], cwd=project, env=env_for(kfp))
    assert same_job.exit_code == 0 and len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1


def test_run_removes_an_earlier_jobs_state_file_and_reports_first(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    (project / ".kfp-launch").mkdir()
    (project / ".kfp-launch" / "state.json").write_text('{"runs": [{"run_id": "upstream"}]}')
    (project / ".kfp-launch" / "run.env").write_text("KFP_RUN_ID=upstream\n")
    result = launch(run_cli, project, kfp, "-p", "nope=1")  # fails before submitting
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert not (project / ".kfp-launch" / "state.json").exists()
    assert not (project / ".kfp-launch" / "run.env").exists()


def test_cancel_goes_on_past_a_failing_entry(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    experiment = kfp.add_experiment("x")
    alive = kfp.add_run(experiment["experiment_id"], "alive", state="RUNNING")
    state = {"runs": [
        {"run_id": "deleted-run", "experiment_id": experiment["experiment_id"], "host": kfp.url, "namespace": "team-a",
         "url": "", "job": "a", "cancel_policy": "terminate"},
        {"run_id": alive["run_id"], "experiment_id": experiment["experiment_id"], "host": kfp.url, "namespace": "team-a",
         "url": "", "job": "b", "cancel_policy": "terminate"},
    ]}
    (project / "state.json").write_text(json.dumps(state))
    result = run_cli(["cancel", "--state-file", "state.json"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.INVALID_INPUT  # the 404 is reported ...
    assert [r.path for r in kfp.requests_to("POST", PATH_RUN_TERMINATE)] == [  # ... and the other run terminated
        f"/apis/v2beta1/runs/{alive['run_id']}:terminate"]


def test_a_second_signal_interrupts_when_the_first_was_swallowed(project: Path) -> None:
    (project / "pipelines" / "stubborn.py").write_text(
        "import sys, time\nprint('importing', file=sys.stderr, flush=True)\n"
        "try:\n    time.sleep(20)\nexcept BaseException:\n    print('swallowed', file=sys.stderr, flush=True)\n"
        "time.sleep(20)\n"
    )
    env = {k: v for k, v in {**os.environ, **clean_env()}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "compile", "stubborn"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "importing" in line:
                proc.send_signal(signal.SIGTERM)
            if "swallowed" in line:
                proc.send_signal(signal.SIGTERM)
                break
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143


def test_exit_5_during_submission_leaves_the_run_for_the_retry(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    kfp.fail(503, method="POST", path=PATH_RUNS, times=1, after_handling=True)  # stored, answer lost
    kfp.fail(503, method="GET", path=PATH_RUNS, times=None)  # and the look-up by key keeps failing
    result = launch(run_cli, project, kfp, KFP_LAUNCH_MAX_OUTAGE="0.5")
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    state = json.loads((project / ".kfp-launch" / "state.json").read_text())
    assert [e["cancel_policy"] for e in state["runs"]] == ["detach"]


def test_more_than_200_runs_is_an_input_error(run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer) -> None:
    project = make_project(tmp_path, 201)
    result = run_cli(["run", "--all"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.INVALID_INPUT and "more than 200" in result.stderr
    assert not kfp.requests_to("POST", PATH_RUNS)


def test_a_token_echoed_by_the_server_is_masked_in_the_reports(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    kfp.fail(503, method="GET", path=PATH_RUN, times=None, body=json.dumps({"code": 14, "message": f"bad token {TOKEN}"}))
    result = launch(run_cli, project, kfp, KFP_LAUNCH_MAX_OUTAGE="0.3")
    assert result.exit_code == ExitCode.UNREACHABLE
    for report in (project / ".kfp-launch").iterdir():
        assert TOKEN not in report.read_text(), report.name


def test_a_poll_interval_over_an_hour_is_rejected(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--poll-interval", "1e10"], cwd=project, env={**CI, "KFP_HOST": "http://127.0.0.1:9"})
    assert result.exit_code == ExitCode.USAGE and "at most 1h" in result.stderr


def test_sigterm_while_the_merge_request_note_is_written_terminates_the_run(project: Path, kfp: FakeKfpServer) -> None:
    import socket

    silent = socket.socket()  # a GitLab that accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        kfp.script_run(["RUNNING"])
        extra = {"CI_SERVER_URL": f"http://127.0.0.1:{silent.getsockname()[1]}", "CI_PROJECT_ID": "1",
                 "CI_MERGE_REQUEST_IID": "7", "GITLAB_TOKEN": "glpat-silent-s3cret"}
        env = {k: v for k, v in {**os.environ, **clean_env(env_for(kfp, **extra))}.items() if v is not None}
        proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "run", "good"], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            kfp.wait_for_request("POST", PATH_RUNS, timeout_s=60)
            silent.settimeout(30)
            connection, _ = silent.accept()  # kfp-launch is now in the note's request, which never gets an answer
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            connection.close()
    finally:
        silent.close()
    assert proc.returncode == 143, out + err
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1
    assert "glpat-silent-s3cret" not in out + err
