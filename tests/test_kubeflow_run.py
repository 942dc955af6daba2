"""Running on Kubeflow: the real kfp.Client against the fake KFP server, end to end through the CLI
or the use case with an injected clock."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode
from kfp_launch.kfp_api import KfpApi
from tests.fake_kfp import (
    PATH_EXPERIMENTS,
    PATH_RUN,
    PATH_RUN_TERMINATE,
    PATH_RUN_V1,
    PATH_RUNS,
    PATH_TASK_LOG,
    FakeKfpServer,
    RunStep,
)
from tests.helpers import CI, COOKIE_VALUE, TOKEN, FakeClock, RunCli, clean_env, env_for, launch, run_use_case, runs

# Pod names as KFP 2.x's Argo compiler makes them: a driver and an executor ("impl") pod per container task
# (backend/src/v2/compiler/argocompiler/container.go, 2.17.0).
DRIVER, EXECUTOR = "good-pipeline-x7k2p-system-container-driver-1234", "good-pipeline-x7k2p-system-container-impl-5678"
FAILED_TASKS = [
    {"task_id": "t1", "display_name": "add", "state": "SUCCEEDED"},
    {"task_id": "t2", "display_name": "score", "state": "FAILED", "pod_name": DRIVER,
     "error": {"code": 2, "message": "Error (exit code 1)"},
     "child_tasks": [{"pod_name": DRIVER}, {"pod_name": EXECUTOR}]},
]


@pytest.mark.parametrize(
    ("states", "code", "fragment"),
    [
        (["RUNNING", "SUCCEEDED"], ExitCode.SUCCESS, "run SUCCEEDED"),
        (["RUNNING", "SKIPPED"], ExitCode.SUCCESS, "SKIPPED (exit 0)"),
        (["RUNNING", "FAILED"], ExitCode.RUN_FAILED, "run FAILED"),
        (["RUNNING", "CANCELED"], ExitCode.RUN_CANCELED, "run CANCELED"),
        (["RUNNING", "CANCELING", "FAILED"], ExitCode.RUN_CANCELED, "terminated by someone else"),
        (["PENDING", "PAUSED", "RUNNING", "SUCCEEDED"], ExitCode.SUCCESS, "run SUCCEEDED"),
    ],
)
def test_exit_code_of_each_terminal_state(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, states: list[str], code: int, fragment: str
) -> None:
    kfp.script_run(states)
    result = launch(run_cli, project, kfp)
    assert result.exit_code == code, result.output
    assert fragment in result.output
    assert len(runs(kfp)) == 1


def test_run_url_state_file_and_description_link_back_to_gitlab(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["SUCCEEDED"])
    result = launch(run_cli, project, kfp, "-p", "a=7", JIRA_URL="https://jira.example.com")
    assert result.exit_code == 0, result.output
    run = runs(kfp)[0]
    assert f"run: {kfp.url}/#/runs/details/{run['run_id']}\n" in result.stdout  # bare URL, GitLab links it
    description = run["description"]
    lines = description.splitlines()
    assert re.fullmatch(r"kfp-launch-key: [0-9a-f]{12}\.[0-9a-f]{12}\.[0-9a-f]{8}", lines[0])  # fixed length, first
    for expected in (  # facts first, then the links back to GitLab as room allows
        "job good",
        f'Commit: {CI["CI_COMMIT_SHA"]} "Make it faster"',
        "GitLab job: https://gitlab.example.com/mlops/demo/-/jobs/77",
        "Ticket: ML-42",
        "Branch: feature/ML-42-faster",
        "Triggered by: alice",
    ):
        assert expected in lines
    assert len(description) <= 255  # fits the run table's varchar(255) of backends up to 2.14
    assert run["display_name"] == "good 01234567 1001"
    assert run["runtime_config"]["parameters"] == {"a": 7}
    state = (project / ".kfp-launch" / "state.json").read_text()
    assert run["run_id"] in state and '"cancel_policy": "terminate"' in state and TOKEN not in state
    experiment = next(iter(kfp.experiments.values()))
    assert experiment["display_name"] == "feature/ML-42-faster"  # the branch as written
    assert "JIRA ML-42" in experiment["description"] and "project mlops/demo" in experiment["description"]


def test_second_launch_on_the_same_branch_reuses_the_experiment(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["SUCCEEDED"])
    kfp.script_run(["SUCCEEDED"])
    assert launch(run_cli, project, kfp).exit_code == 0
    assert launch(run_cli, project, kfp, CI_PIPELINE_ID="1002").exit_code == 0
    assert len(kfp.experiments) == 1
    assert {r["experiment_id"] for r in runs(kfp)} == set(kfp.experiments)
    assert len(kfp.requests_to("POST", PATH_EXPERIMENTS)) == 1


def test_concurrent_launches_on_a_new_branch_create_one_experiment(kfp: FakeKfpServer) -> None:
    from kfp_launch.connection import Connection
    from kfp_launch.experiments import ExperimentNames, ensure_experiment

    # Hold the first create until the other client has listed (and so decided to create too).
    kfp.hang(method="POST", path=PATH_EXPERIMENTS, release_on=("POST", PATH_EXPERIMENTS))
    results: list[str] = []

    def one() -> None:
        api = KfpApi(Connection(host=kfp.url, namespace="team-a", token=TOKEN), read_timeout_s=10)
        names = ExperimentNames(written="feat/race", hashed="feat/race-0123abcd", ref_label="branch feat/race")
        description = "branch feat/race · runs launched by kfp-launch"
        results.append(ensure_experiment(api, names, description, say=lambda _m: None).experiment_id)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 2 and results[0] == results[1]
    assert len(kfp.experiments) == 1
    assert len(kfp.requests_to("POST", PATH_EXPERIMENTS)) == 2  # both tried; the loser looked it up again


def test_archived_experiment_is_unarchived_and_said(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    experiment = kfp.add_experiment("main", namespace="team-a", storage_state="ARCHIVED",
                                    description="branch main · runs launched by kfp-launch")
    kfp.script_run(["SUCCEEDED"])
    result = launch(run_cli, project, kfp, CI_COMMIT_BRANCH="main", CI_COMMIT_REF_NAME="main")
    assert result.exit_code == 0, result.output
    assert "unarchived" in result.output
    experiment_id = experiment["experiment_id"] if isinstance(experiment, dict) else experiment
    assert kfp.experiments[experiment_id]["storage_state"] == "AVAILABLE"
    assert runs(kfp)[0]["experiment_id"] == experiment_id


def test_burst_of_503_and_a_hung_request_still_end_with_the_right_code(project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING", "RUNNING", "FAILED"])
    kfp.fail(503, method="GET", path=PATH_RUN, times=5)
    kfp.hang(method="GET", path=PATH_RUN, skip=6, times=1)
    code, out = run_use_case(project, kfp, read_timeout_s=0.3)
    assert code == ExitCode.RUN_FAILED, out
    assert "HTTP 503" in out


def test_outage_longer_than_max_outage_exits_5(project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    kfp.fail(503, method="GET", path=PATH_RUN, skip=1, times=None)
    clock = FakeClock()
    code, out = run_use_case(project, kfp, clock=clock, env={"KFP_LAUNCH_MAX_OUTAGE": "10m"})
    assert code == ExitCode.UNREACHABLE, out
    assert "more than --max-outage" in out
    assert 600 <= clock.now < 700  # simulated: gave up after the allowed outage, not before
    failed = [r for r in kfp.requests_to("GET", PATH_RUN) if r.status == 503]
    assert 10 < len(failed) < 100  # backed off, did not hammer


def test_token_file_rotation_mid_wait_succeeds(project: Path, kfp: FakeKfpServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-one")
    kfp.accepted_tokens = {"token-one"}
    script = kfp.script_run(["RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"])

    def rotate_after_first_poll(_seconds: float) -> None:
        if script.position >= 1 and kfp.accepted_tokens == {"token-one"}:
            kfp.accepted_tokens = {"token-two"}  # the old token is now refused ...
            token_file.write_text("token-two")  # ... and the projected file holds the new one

    env = {"KFP_TOKEN": "", "KF_PIPELINES_SA_TOKEN_PATH": str(token_file)}
    code, out = run_use_case(project, kfp, env=env, sleep=rotate_after_first_poll)
    assert code == ExitCode.SUCCESS, out
    tokens = [r.bearer_token for r in kfp.requests]
    assert "token-one" in tokens and "token-two" in tokens


def test_persistent_401_exits_4_after_a_bounded_number_of_requests(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    kfp.unauthorized_after(4)
    result = launch(run_cli, project, kfp)
    assert result.exit_code == ExitCode.AUTH, result.output
    assert "refused the credentials" in result.stderr
    assert len(kfp.requests) <= 8


def test_html_login_page_exits_4(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.html_login(times=None)
    result = launch(run_cli, project, kfp, KFP_TOKEN="", KFP_COOKIE=COOKIE_VALUE)
    assert result.exit_code == ExitCode.AUTH, result.output
    assert "HTML page" in result.stderr and "login page" in result.stderr
    assert kfp.requests[0].headers.get("cookie") == COOKIE_VALUE
    assert not runs(kfp)


def test_deadline_terminates_the_run_and_exits_8(project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    clock = FakeClock()
    code, out = run_use_case(project, kfp, clock=clock, env={"KFP_LAUNCH_TIMEOUT": "2h"})
    assert code == ExitCode.DEADLINE, out
    assert 7200 <= clock.now <= 7200 + 31
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1
    assert runs(kfp)[0]["state"] == "CANCELING"


def test_ci_job_timeout_sets_the_default_deadline(project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    clock = FakeClock()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    env = {"CI_JOB_STARTED_AT": started, "CI_JOB_TIMEOUT": "3600", "KFP_LAUNCH_ON_TIMEOUT": "detach"}
    code, out = run_use_case(project, kfp, clock=clock, env=env)
    assert code == ExitCode.DEADLINE, out
    assert 2690 <= clock.now <= 2710  # 3600 - 600 already spent - 300 margin
    assert not kfp.requests_to("POST", PATH_RUN_TERMINATE)  # detach: left running
    assert '"cancel_policy": "detach"' in (project / ".kfp-launch" / "state.json").read_text()  # after_script too


def test_sigterm_mid_wait_sends_exactly_one_terminate_and_exits_143(project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    env = {k: v for k, v in {**os.environ, **clean_env(env_for(kfp, KFP_LAUNCH_POLL_INTERVAL="0.2"))}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "run", "good"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kfp.wait_for_request("GET", PATH_RUN, count=2, timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)  # a second signal must not terminate twice
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out + err
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1
    assert "interrupted by SIGTERM" in err
    assert TOKEN not in out + err


def test_create_run_error_after_the_run_was_stored_leaves_exactly_one_run(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["SUCCEEDED"])
    kfp.fail(500, method="POST", path=PATH_RUNS, times=1, after_handling=True)
    result = launch(run_cli, project, kfp)
    assert result.exit_code == 0, result.output
    assert len(runs(kfp)) == 1
    assert len(kfp.requests_to("POST", PATH_RUNS)) == 1  # resolved by the key, not by posting again


def test_dropped_connection_on_create_is_resolved_by_key(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["SUCCEEDED"])
    kfp.drop(method="POST", path=PATH_RUNS, times=1, after_handling=True)
    assert launch(run_cli, project, kfp).exit_code == 0
    assert len(runs(kfp)) == 1


def test_create_refused_before_storing_is_retried_once_more(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["SUCCEEDED"])
    kfp.fail(503, method="POST", path=PATH_RUNS, times=1)
    assert launch(run_cli, project, kfp).exit_code == 0
    assert len(runs(kfp)) == 1
    assert len(kfp.requests_to("POST", PATH_RUNS)) == 2


def test_retried_job_attaches_to_its_active_run(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    first = launch(run_cli, project, kfp, "--no-wait")
    assert first.exit_code == 0, first.output
    run_id = runs(kfp)[0]["run_id"]
    kfp.script_run(["RUNNING", "SUCCEEDED"], run_id=run_id)
    retried = launch(run_cli, project, kfp, CI_JOB_ID="78")
    assert retried.exit_code == 0, retried.output
    assert "attached to the active run of this CI job" in retried.output
    assert len(runs(kfp)) == 1


def test_a_new_ci_pipeline_does_not_attach(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0
    kfp.script_run(["SUCCEEDED"])
    assert launch(run_cli, project, kfp, CI_PIPELINE_ID="1002").exit_code == 0
    assert len(runs(kfp)) == 2


def test_the_retry_after_an_outage_reports_the_run_that_succeeded_meanwhile(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["SUCCEEDED"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0
    with kfp.lock:
        next(iter(kfp.runs.values()))["state"] = "SUCCEEDED"
    retried = launch(run_cli, project, kfp, CI_JOB_ID="78")
    assert retried.exit_code == 0, retried.output
    assert len(runs(kfp)) == 1
    assert "with the same inputs already SUCCEEDED" in retried.output and "reporting it instead" in retried.output


def test_a_failed_run_is_run_again_by_a_retried_job(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["FAILED"])
    assert launch(run_cli, project, kfp).exit_code == ExitCode.RUN_FAILED
    kfp.script_run(["SUCCEEDED"])
    assert launch(run_cli, project, kfp, CI_JOB_ID="78").exit_code == 0
    assert len(runs(kfp)) == 2


def test_failing_run_names_the_task_and_prints_its_log_tail(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run([RunStep("RUNNING"), RunStep("FAILED")], task_details=FAILED_TASKS)
    log = "\n".join(f"line {i}" for i in range(100)) + "\nValueError: bad input\n"
    kfp.set_task_log("*", EXECUTOR, log)
    kfp.set_task_log("*", DRIVER, "driver for score: ok\n")
    result = launch(run_cli, project, kfp, "--log-lines", "5", "--logs", "failed")
    assert result.exit_code == ExitCode.RUN_FAILED
    out = result.stdout
    assert "task score FAILED: Error (exit code 1)" in out
    assert f"last 5 lines of {EXECUTOR}:" in out  # the executor's log, not the driver's
    assert "| ValueError: bad input" in out and "| line 96" in out and "| line 95" not in out
    assert "driver for score" not in out
    junit = (project / ".kfp-launch" / "junit.xml").read_text()
    assert f"last 5 log lines of {EXECUTOR}:" in junit and "ValueError: bad input" in junit


def test_the_driver_log_is_shown_only_when_the_executor_has_none_and_it_says_so(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run([RunStep("RUNNING"), RunStep("FAILED")], task_details=FAILED_TASKS)
    kfp.set_task_log("*", DRIVER, "driver: could not resolve the input artifact\n")  # the executor never ran
    result = launch(run_cli, project, kfp)
    assert result.exit_code == ExitCode.RUN_FAILED
    assert f"(no executor log: the lines below are the driver's, {DRIVER})" in result.stdout
    assert "| driver: could not resolve the input artifact" in result.stdout


def test_a_log_the_credentials_may_not_read_is_a_warning_not_exit_4(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run([RunStep("RUNNING"), RunStep("FAILED")], task_details=FAILED_TASKS)
    kfp.fail(403, method="GET", path=PATH_TASK_LOG, times=None)  # newer backends: a separate readLog permission
    result = launch(run_cli, project, kfp, "--logs", "failed")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert f"warning:\x1b[0m the log of {EXECUTOR} is not readable with these credentials" in result.stderr


def test_no_cache_service_account_and_pipeline_root_reach_the_run(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["SUCCEEDED"])
    result = launch(run_cli, project, kfp, "--no-cache", "--service-account", "trainer", "--pipeline-root", "s3://b/r")
    assert result.exit_code == 0, result.output
    body = kfp.requests_to("POST", PATH_RUNS)[0].body
    assert body["service_account"] == "trainer"
    assert body["runtime_config"]["pipeline_root"] == "s3://b/r"
    # enableCache false, as the SDK's protobuf JSON writes it: the field left out (an empty cachingOptions).
    assert all(t["cachingOptions"] == {} for t in body["pipeline_spec"]["root"]["dag"]["tasks"].values())


def test_dry_run_changes_nothing(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    result = launch(run_cli, project, kfp, "--dry-run", "-p", "a=3")
    assert result.exit_code == 0, result.output
    assert "would be created" in result.stdout and "would submit run" in result.stdout
    assert all(r.method == "GET" for r in kfp.requests)
    assert not kfp.experiments and not runs(kfp)


def test_no_wait_submits_and_exits_0(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    result = launch(run_cli, project, kfp, "--no-wait")
    assert result.exit_code == 0
    assert not kfp.requests_to("GET", PATH_RUN)


def test_parameter_rejected_by_the_server_is_exit_3(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    result = launch(run_cli, project, kfp, "-p", "nope=1")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert not kfp.requests  # rejected locally, before any request


def test_missing_host_is_a_config_error_naming_the_variables(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good"], cwd=project, env={**CI, "KFP_TOKEN": TOKEN})
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "KFP_HOST" in result.stderr
    assert TOKEN not in result.output


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("http://", "no valid host name"),
        ("http://kube flow", "no valid host name"),
        ("http://[::1", "not a valid URL"),
        ("http://admin:hunter2@kubeflow.example.com", "credentials"),
        ("https://kubeflow.example.com/pipeline?token=abc123", "credentials"),
    ],
)
def test_bad_hosts_are_config_errors_not_outages(run_cli: RunCli, project: Path, host: str, fragment: str) -> None:
    result = run_cli(["run", "good"], cwd=project, env={**CI, "KFP_HOST": host})
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert fragment in result.stderr
    assert "hunter2" not in result.output and "abc123" not in result.output


def test_unreachable_host_exits_5_after_max_outage(run_cli: RunCli, project: Path) -> None:
    env = {**CI, "KFP_HOST": "http://127.0.0.1:9", "KFP_NAMESPACE": "team-a", "KFP_TOKEN": TOKEN,
           "KFP_LAUNCH_MAX_OUTAGE": "0.2", "KFP_LAUNCH_POLL_INTERVAL": "0.01"}
    result = run_cli(["run", "good"], cwd=project, env=env)
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert "Could not reach Kubeflow" in result.stderr


def test_an_api_failing_from_the_start_gives_up_after_the_preflight_window_not_max_outage(
    project: Path, kfp: FakeKfpServer
) -> None:
    kfp.fail(503, times=None)
    clock = FakeClock()
    code, out = run_use_case(project, kfp, clock=clock)  # --max-outage is its default, 10 minutes
    assert code == ExitCode.UNREACHABLE
    assert 30 <= clock.now <= 31  # the 30 s preflight window: nothing was submitted yet
    assert not kfp.requests_to("POST", PATH_RUNS)
    # The server answered (HTTP 503): the error names that answer, not a connection failure.
    last = out.splitlines()[-1]
    assert re.fullmatch(r'error: Kubeflow failed to look up experiment "feature/ML-42-faster": HTTP 503 .+',
                        last), last


def test_watch_attaches_and_cancel_terminates_via_state_file(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0
    run_id = runs(kfp)[0]["run_id"]
    kfp.script_run(["RUNNING", "SUCCEEDED"], run_id=run_id)
    watched = run_cli(["watch", run_id], cwd=project, env=env_for(kfp))
    assert watched.exit_code == 0, watched.output
    assert f"/#/runs/details/{run_id}" in watched.stdout
    kfp.script_run(["RUNNING"], run_id=run_id)
    with kfp.lock:
        kfp.runs[run_id]["state"] = "RUNNING"
    canceled = run_cli(["cancel", "--state-file", ".kfp-launch/state.json"], cwd=project, env=env_for(kfp))
    assert canceled.exit_code == 0, canceled.output
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1
    again = run_cli(["cancel", run_id], cwd=project, env=env_for(kfp))
    assert again.exit_code == 0, again.output
    assert "already being terminated (CANCELING)" in again.stdout
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1


def test_sdk_experiment_name_variables_are_ignored_with_a_warning(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["SUCCEEDED"])
    result = launch(run_cli, project, kfp, KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME="Default")
    assert result.exit_code == 0
    assert "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME is ignored" in result.stderr
    assert next(e["display_name"] for e in kfp.experiments.values()).startswith("feature/ML-42-faster")


def test_merge_request_note_is_created_at_start_and_updated_in_place(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    from tests.fake_gitlab import FakeGitLab

    with FakeGitLab(access_tokens={"glpat-n0te-s3cret": "kfp-bot"}) as gitlab_server:
        gl_project = gitlab_server.add_project("mlops/demo")
        gitlab_server.add_merge_request(gl_project["id"], iid=7, source_branch="feat/x")
        mr = {"CI_MERGE_REQUEST_IID": "7", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feat/x",
              "CI_MERGE_REQUEST_TITLE": "ML-42 faster", "CI_PIPELINE_SOURCE": "merge_request_event",
              "CI_COMMIT_BRANCH": "", "CI_SERVER_URL": gitlab_server.url, "CI_PROJECT_ID": str(gl_project["id"]),
              "GITLAB_TOKEN": "glpat-n0te-s3cret", "CI_JOB_TOKEN": "job-t0ken", "JIRA_URL": "https://jira.example.com"}
        kfp.script_run(["RUNNING", "FAILED"], task_details=FAILED_TASKS)
        result = launch(run_cli, project, kfp, **mr)
        assert result.exit_code == ExitCode.RUN_FAILED
        assert "glpat-n0te-s3cret" not in result.output
        notes = gitlab_server.notes_of(gl_project["id"], 7)
        assert len(notes) == 1
        body = notes[0]["body"]
        run_id = runs(kfp)[0]["run_id"]
        assert run_id in body and "failed" in body.lower() and "score" in body
        assert "https://jira.example.com/browse/ML-42" in body
        assert len(gitlab_server.requests_to("POST")) == 1 and len(gitlab_server.requests_to("PUT")) == 1


def test_gitlab_outage_is_only_a_warning(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["SUCCEEDED"])
    env = {"CI_MERGE_REQUEST_IID": "7", "CI_SERVER_URL": "http://127.0.0.1:9", "CI_PROJECT_ID": "1",
           "GITLAB_TOKEN": "glpat-n0te-s3cret"}
    result = launch(run_cli, project, kfp, **env)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "not affected" in result.stderr
    assert "glpat-n0te-s3cret" not in result.output


def test_parallel_and_matrix_jobs_of_one_pipeline_job_get_their_own_runs(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    for _ in range(3):
        kfp.script_run(["RUNNING"])
    for ci_job, steps in (("good: [a]", "1"), ("good: [b]", "2"), ("good 2/3", "3")):
        result = launch(run_cli, project, kfp, "--no-wait", "-p", f"a={steps}", CI_JOB_NAME=ci_job)
        assert result.exit_code == 0 and "attached" not in result.output
    assert sorted(r["runtime_config"]["parameters"]["a"] for r in runs(kfp)) == [1, 2, 3]
    attempts = {r["description"].splitlines()[0].split(": ", 1)[1].split(".")[0] for r in runs(kfp)}
    assert len(attempts) == 3  # each CI job's runs have their own attempt part of the key


def test_exit_5_leaves_the_run_for_the_retry_and_the_retry_attaches(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    kfp.fail(503, method="GET", path=PATH_RUN, times=None)
    first = launch(run_cli, project, kfp, KFP_LAUNCH_MAX_OUTAGE="0.3")
    assert first.exit_code == ExitCode.UNREACHABLE, first.output
    kfp.clear_faults()
    after_script = run_cli(["cancel", "--state-file", ".kfp-launch/state.json"], cwd=project, env=env_for(kfp))
    assert after_script.exit_code == 0 and "cancel policy is detach" in after_script.stdout
    assert not kfp.requests_to("POST", PATH_RUN_TERMINATE)
    run_id = runs(kfp)[0]["run_id"]
    kfp.script_run(["RUNNING", "SUCCEEDED"], run_id=run_id)
    retried = launch(run_cli, project, kfp)
    assert retried.exit_code == 0, retried.output
    assert "attached to the active run" in retried.output and len(runs(kfp)) == 1


def test_exit_5_during_submission_leaves_the_run_for_the_retry(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    kfp.fail(503, method="POST", path=PATH_RUNS, times=1, after_handling=True)  # stored, answer lost
    kfp.fail(503, method="GET", path=PATH_RUNS, times=None)  # and the look-up by key keeps failing
    result = launch(run_cli, project, kfp, KFP_LAUNCH_MAX_OUTAGE="0.5")
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    state = json.loads((project / ".kfp-launch" / "state.json").read_text())
    assert [e["cancel_policy"] for e in state["runs"]] == ["detach"]


def test_a_canceling_run_is_not_attached_to(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0
    with kfp.lock:
        next(iter(kfp.runs.values()))["state"] = "CANCELING"
    kfp.script_run(["SUCCEEDED"])
    retried = launch(run_cli, project, kfp)
    assert retried.exit_code == 0 and "attached" not in retried.output
    assert len(runs(kfp)) == 2


def test_sigterm_while_the_create_call_is_in_flight_terminates_the_stored_run(project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    kfp.hang(method="POST", path=PATH_RUNS, after_handling=True)  # stored, but the answer never comes
    env = {k: v for k, v in {**os.environ, **clean_env(env_for(kfp))}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "run", "good"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kfp.wait_for_request("POST", PATH_RUNS, timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out + err
    stored = runs(kfp)
    assert len(stored) == 1
    assert [r.path for r in kfp.requests_to("POST", PATH_RUN_TERMINATE)] == [f"/apis/v2beta1/runs/{stored[0]['run_id']}:terminate"]


def test_a_job_killed_mid_submit_leaves_a_state_file_that_finds_the_run(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    import json as _json

    from kfp_launch.ci_context import CiContext
    from kfp_launch.naming import new_run_key
    from kfp_launch.state_file import StateEntry, write_state

    kfp.script_run(["RUNNING"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0
    run = runs(kfp)[0]
    key = run["description"].splitlines()[0].split(": ", 1)[1]
    # What the state file holds when the job dies between the create call and its answer:
    write_state(project / "killed.json", [StateEntry(run_id="", experiment_id=run["experiment_id"], host=kfp.url,
                namespace="team-a", url="", job="good", cancel_policy="terminate", run_key=key,
                run_name=run["display_name"])])
    result = run_cli(["cancel", "--state-file", "killed.json"], cwd=project, env=env_for(kfp))
    assert result.exit_code == 0, result.output
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1
    assert _json.loads((project / "killed.json").read_text())["runs"][0]["run_key"] == key
    other = new_run_key(CiContext(in_ci=False), "good", "0" * 12)
    write_state(project / "never.json", [StateEntry(run_id="", experiment_id=run["experiment_id"], host=kfp.url,
                namespace="team-a", url="", job="good", cancel_policy="terminate", run_key=other,
                run_name=run["display_name"])])
    none = run_cli(["cancel", "--state-file", "never.json"], cwd=project, env=env_for(kfp))
    assert none.exit_code == 0 and "no run was created" in none.stdout


def test_unwritable_state_file_fails_before_anything_is_submitted(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    (project / "blocker").write_text("a file, not a directory")
    result = launch(run_cli, project, kfp, "--state-file", "blocker/state.json")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "Cannot write the state file" in result.stderr
    assert not kfp.requests_to("POST", PATH_RUNS)


def test_a_job_timeout_too_short_to_wait_submits_nothing(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = launch(run_cli, project, kfp, CI_JOB_STARTED_AT=started, CI_JOB_TIMEOUT="240")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "nothing was submitted" in result.stderr and "--no-wait" in result.stderr
    assert not kfp.requests_to("POST", PATH_RUNS)
    assert launch(run_cli, project, kfp, "--no-wait", CI_JOB_STARTED_AT=started, CI_JOB_TIMEOUT="240").exit_code == 0


NESTED = """from kfp import dsl


@dsl.component(base_image="python:3.11-slim")
def step(x: int) -> int:
    return x + 1


@dsl.component(base_image="python:3.11-slim")
def final(status: dsl.PipelineTaskFinalStatus):
    print(status.state)


@dsl.pipeline
def inner(x: int = 1) -> int:
    return step(x=x).output


@dsl.pipeline
def pipeline(n: int = 2):
    with dsl.ExitHandler(final()):
        first = step(x=n)
        with dsl.If(first.output > 1):
            step(x=first.output)
        with dsl.ParallelFor([1, 2]) as item:
            step(x=item)
        inner(x=n)
"""


def test_no_cache_turns_caching_off_in_every_dag(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    (project / "pipelines" / "nested.py").write_text(NESTED)
    kfp.script_run(["RUNNING"])
    result = run_cli(["run", "nested", "--no-cache", "--no-wait"], cwd=project, env=env_for(kfp))
    assert result.exit_code == 0, result.output
    spec = kfp.requests_to("POST", PATH_RUNS)[-1].body["pipeline_spec"]
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    tasks = [task for dag in dags for task in dag["tasks"].values()]
    assert len(dags) >= 5 and len(tasks) >= 7  # root, exit handler, condition, loop, nested pipeline
    assert [t["cachingOptions"] for t in tasks] == [{}] * len(tasks)  # enableCache false everywhere


def _terminate_from_the_ui_after_the_first_poll(kfp: FakeKfpServer) -> threading.Thread:
    import urllib.request

    def terminate() -> None:
        kfp.wait_for_request("GET", PATH_RUN, timeout_s=30)
        run_id = next(iter(kfp.runs))
        request = urllib.request.Request(f"{kfp.url}/apis/v2beta1/runs/{run_id}:terminate", data=b"", method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        urllib.request.urlopen(request, timeout=10).read()

    thread = threading.Thread(target=terminate)
    thread.start()
    return thread


def test_a_run_terminated_elsewhere_whose_canceling_was_never_seen_exits_7(run_cli: RunCli, project: Path) -> None:
    # KFP's TerminateRun records no CANCELING in state_history and the run then ends FAILED; what stays is
    # the Workflow's spec.activeDeadlineSeconds = 0 (backend/src/apiserver/storage/run_store.go and
    # resource/resource_manager.go, TerminateWorkflow, 2.17.0), served by GET /apis/v1beta1/runs/{id}.
    with FakeKfpServer(canceling_polls=0) as kfp:
        kfp.script_run(["RUNNING"] * 3)
        terminator = _terminate_from_the_ui_after_the_first_poll(kfp)
        result = launch(run_cli, project, kfp)
        terminator.join(timeout=30)
        assert [s["state"] for s in next(iter(kfp.runs.values()))["state_history"]] == ["PENDING", "RUNNING", "FAILED"]
        assert result.exit_code == ExitCode.RUN_CANCELED, result.output
        assert "terminated by someone else (its workflow's deadline was set to 0)" in result.output


def test_a_failed_run_is_failed_and_says_so_when_nothing_tells_whether_it_was_terminated(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["RUNNING", "FAILED"], task_details=FAILED_TASKS)
    kfp.fail(403, method="GET", path=PATH_RUN_V1, times=None)  # the v1beta1 run detail refused
    result = launch(run_cli, project, kfp)
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert "FAILED (possibly terminated: CANCELING was not observed)" in result.output


def test_a_failed_run_whose_workflow_was_not_terminated_is_plainly_failed(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["RUNNING", "FAILED"], task_details=FAILED_TASKS)
    result = launch(run_cli, project, kfp)
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert "possibly terminated" not in result.output and len(kfp.requests_to("GET", PATH_RUN_V1)) == 1


def test_each_parameter_set_of_one_ci_job_is_its_own_run_and_a_repeat_attaches(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    for _ in range(3):
        kfp.script_run(["RUNNING"])
    outputs = [launch(run_cli, project, kfp, "--no-wait", "-p", f"a={a}").output for a in (1, 2, 3)]
    assert len(runs(kfp)) == 3
    assert "with other inputs before" in outputs[1] and "submitting a new run" in outputs[2]
    again = launch(run_cli, project, kfp, "--no-wait", "-p", "a=1")
    assert again.exit_code == 0, again.output
    first = next(r for r in runs(kfp) if r["runtime_config"]["parameters"] == {"a": 1})
    assert len(runs(kfp)) == 3 and f"attached to the active run of this CI job with the same inputs: {first['run_id']}" in again.output


def test_a_repeat_after_the_run_succeeded_reports_it_as_succeeded_not_detached(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["RUNNING"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0
    with kfp.lock:
        next(iter(kfp.runs.values()))["state"] = "SUCCEEDED"
    again = launch(run_cli, project, kfp, "--no-wait")
    assert again.exit_code == 0 and len(runs(kfp)) == 1
    assert "KFP_RUN_STATE=SUCCEEDED" in (project / ".kfp-launch" / "run.env").read_text()
    assert "not waiting" not in again.output


def _branch_env(branch: str) -> dict[str, str]:
    return {"CI_COMMIT_BRANCH": branch, "CI_COMMIT_REF_NAME": branch}


def test_experiment_names_as_written_on_a_case_insensitive_backend(run_cli: RunCli, project: Path) -> None:
    with FakeKfpServer(name_collation="ai_ci") as kfp:  # MySQL's default: case and accents ignored
        for _ in range(4):
            kfp.script_run(["SUCCEEDED"])
        upper, lower = "feature/ML-42-better-iris", "feature/ml-42-better-iris"
        for pipeline, branch in enumerate((upper, lower, upper, lower)):
            result = launch(run_cli, project, kfp, CI_PIPELINE_ID=str(2000 + pipeline), **_branch_env(branch))
            assert result.exit_code == 0, result.output
        names = sorted(e["display_name"] for e in kfp.experiments.values())
        assert len(names) == 2 and upper in names  # exactly as written
        other = next(n for n in names if n != upper)
        assert re.fullmatch(re.escape(lower) + r"-[0-9a-f]{8}", other)  # its own, told apart by a hash
        by_experiment = {e["experiment_id"]: e["display_name"] for e in kfp.experiments.values()}
        assert [by_experiment[r["experiment_id"]] for r in runs(kfp)] == [upper, other, upper, other]  # reused


def test_an_experiment_kfp_launch_did_not_create_is_not_taken_over(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.add_experiment("main", namespace="team-a", description="made by hand in the UI")
    kfp.script_run(["SUCCEEDED"])
    result = launch(run_cli, project, kfp, **_branch_env("main"))
    assert result.exit_code == 0, result.output
    [run] = runs(kfp)
    assert re.fullmatch(r"main-[0-9a-f]{8}", kfp.experiments[run["experiment_id"]]["display_name"])


def test_an_experiment_named_by_kfp_launch_0_1_is_still_the_branchs(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    from kfp_launch.naming import sanitize_display_name

    old_name = sanitize_display_name("feature/ML-42-faster", case_insensitive_store=True)  # 0.1 hashed upper case
    old = kfp.add_experiment(old_name, namespace="team-a", description="branch feature/ML-42-faster · runs launched by kfp-launch")
    kfp.script_run(["SUCCEEDED"])
    assert launch(run_cli, project, kfp).exit_code == 0
    assert runs(kfp)[0]["experiment_id"] == old["experiment_id"] and len(kfp.experiments) == 1
    listed = run_cli(["runs", "--json"], cwd=project, env=env_for(kfp))
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["experiment"] == old_name


def _sections_balanced(stdout: str) -> bool:
    return stdout.count("section_start:") == stdout.count("section_end:")


def test_a_wrong_job_name_from_gitlab_is_said_outside_any_collapsed_section(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    result = run_cli(["run"], cwd=project, env=env_for(kfp, CI_JOB_NAME="no_such_job"))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "section_start:" in result.stdout and _sections_balanced(result.stdout)  # opened, and closed before
    assert "no_such_job" in result.stderr


def test_the_outcome_is_the_last_line_after_a_run(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    result = launch(run_cli, project, kfp)
    assert result.exit_code == 0
    last = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout.rstrip("\n").splitlines()[-1])  # colours: GitLab renders them
    assert re.fullmatch(r"run SUCCEEDED in \d+s \(exit 0\)", last), last
    assert _sections_balanced(result.stdout)


def test_pem_text_in_kfp_ca_bundle_is_used_from_a_private_file_and_never_printed(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, tmp_path: Path
) -> None:
    from kfp_launch.connection import connection_from
    from kfp_launch.settings import load_settings

    pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUTEST\n-----END CERTIFICATE-----"
    environ = {"KFP_HOST": "https://kubeflow.example.com/pipeline", "KFP_CA_BUNDLE": pem}
    connection = connection_from(load_settings({}, environ, tmp_path), environ)
    bundle = Path(connection.ca_bundle or "")
    assert bundle.read_text().strip() == pem and oct(bundle.stat().st_mode & 0o777) == "0o600"
    assert pem not in str(connection.summary_rows())
    kfp.script_run(["SUCCEEDED"])
    result = launch(run_cli, project, kfp, KFP_CA_BUNDLE=pem)
    assert result.exit_code == 0, result.output
    assert "BEGIN CERTIFICATE" not in result.output and "PEM text, in a private file" in result.stdout


def test_a_token_variable_of_type_file_is_refused_with_the_hint(run_cli: RunCli, project: Path, kfp: FakeKfpServer, tmp_path: Path) -> None:
    token_file = tmp_path / "KFP_TOKEN"
    token_file.write_text(TOKEN)
    result = launch(run_cli, project, kfp, KFP_TOKEN=str(token_file))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "KFP_TOKEN holds the path of a file, not a token" in result.stderr and not kfp.requests


def test_no_credentials_on_an_unprotected_ref_exit_4_naming_protected_variables(
    run_cli: RunCli, project: Path
) -> None:
    with FakeKfpServer(accepted_tokens={"only-this"}) as kfp:
        env = {**env_for(kfp), "KFP_TOKEN": "", "CI_COMMIT_REF_PROTECTED": "false"}
        result = run_cli(["run", "good"], cwd=project, env=env)
        assert result.exit_code == ExitCode.AUTH, result.output
        assert "no credentials are set" in result.stderr
        assert "protected CI/CD variables only to jobs on protected branches and tags" in result.stderr


def test_a_merge_request_from_a_fork_gets_its_own_experiment(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    fork = {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_COMMIT_BRANCH": "", "CI_MERGE_REQUEST_IID": "3",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "main", "CI_MERGE_REQUEST_PROJECT_ID": "10",
            "CI_MERGE_REQUEST_SOURCE_PROJECT_ID": "42", "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH": "alice/demo"}
    kfp.script_run(["SUCCEEDED"])
    result = launch(run_cli, project, kfp, **fork)
    assert result.exit_code == 0, result.output
    assert [e["display_name"] for e in kfp.experiments.values()] == ["alice/demo:main"]
