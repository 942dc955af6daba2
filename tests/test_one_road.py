"""One road: `run JOB` and `run JOB1 JOB2` go through the same use case, so each scenario below runs both
ways and asserts the same behaviour (the merge request note at start, reports on SIGTERM and on 401
mid-wait, a deleted run ends with exit 7)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode
from tests.fake_gitlab import FakeGitLab
from tests.fake_kfp import PATH_RUN, PATH_RUN_TERMINATE, PATH_RUNS, FakeKfpServer
from tests.helpers import RunCli, clean_env, env_for, make_project

ONE, TWO = ["job00"], ["job00", "job01"]
WAYS = pytest.mark.parametrize("jobs", [ONE, TWO], ids=["run JOB", "run JOB1 JOB2"])
POLL = f"(?:{PATH_RUN}|{PATH_RUNS})"  # a tick reads one run by id, or several with one list


def dotenv(project: Path) -> dict[str, str]:
    lines = (project / ".kfp-launch" / "run.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def states(project: Path, jobs: list[str]) -> list[str]:
    env = dotenv(project)
    return [env["KFP_RUN_STATE"]] if len(jobs) == 1 else env["KFP_RUN_STATES"].split(",")


def wait_for_polls(kfp: FakeKfpServer, jobs: list[str], polls: int = 1) -> None:
    """Block until the wait has read the runs POLLS times (each a GET of the run, or a list filtered by run id)."""
    def seen() -> int:
        if len(jobs) == 1:
            return len(kfp.requests_to("GET", PATH_RUN))
        return sum('"run_id"' in (r.param("filter") or "") for r in kfp.requests_to("GET", PATH_RUNS))

    for count in range(1, 500):
        if seen() >= polls:
            return
        kfp.wait_for_request("GET", POLL, count=count, timeout_s=30)
    raise AssertionError("the wait never polled")


def merge_request_seven(gitlab: FakeGitLab, *, token: str) -> tuple[dict, dict[str, str]]:
    """Project mlops/demo with merge request !7 from the CI branch on GITLAB, and the CI variables of a job of
    that merge request's pipeline holding TOKEN."""
    gl_project = gitlab.add_project("mlops/demo")
    gitlab.add_merge_request(gl_project["id"], iid=7, source_branch="feature/ML-42-faster")
    env = {"CI_MERGE_REQUEST_IID": "7", "CI_SERVER_URL": gitlab.url, "CI_PROJECT_ID": str(gl_project["id"]),
           "GITLAB_TOKEN": token}
    return gl_project, env


@WAYS
def test_the_merge_request_note_of_each_job_is_written_when_its_run_starts(
    run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer, jobs: list[str]
) -> None:
    project = make_project(tmp_path, 2)
    with FakeGitLab(access_tokens={"glpat-n0te-s3cret": "kfp-bot"}) as gitlab:
        gl_project, env = merge_request_seven(gitlab, token="glpat-n0te-s3cret")
        for _ in jobs:
            kfp.script_run(["RUNNING", "SUCCEEDED"], advance_on_list=True)
        result = run_cli(["run", *jobs], cwd=project, env=env_for(kfp, **env))
        assert result.exit_code == 0, result.output
        notes = gitlab.notes_of(gl_project["id"], 7)
        # Created (POST) when each run started, updated in place (PUT) when it ended: one note per job.
        assert len(notes) == len(jobs)
        assert len(gitlab.requests_to("POST")) == len(jobs) and len(gitlab.requests_to("PUT")) == len(jobs)
        for job, note in zip(jobs, sorted(notes, key=lambda n: n["id"]), strict=True):
            run_id = next(r["run_id"] for r in kfp.runs.values() if r["display_name"].startswith(job))
            assert run_id in note["body"] and "succeeded" in note["body"]


@WAYS
def test_sigterm_mid_wait_terminates_the_runs_and_writes_the_reports(
    tmp_path: Path, kfp: FakeKfpServer, jobs: list[str]
) -> None:
    project = make_project(tmp_path, 2)
    for _ in jobs:
        kfp.script_run(["RUNNING"], advance_on_list=True)
    env = {k: v for k, v in {**os.environ, **clean_env(env_for(kfp, KFP_LAUNCH_POLL_INTERVAL="0.2"))}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "run", *jobs], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_polls(kfp, jobs)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.SIGTERM, out + err
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == len(jobs)
    assert states(project, jobs) == ["INTERRUPTED"] * len(jobs)
    assert (project / ".kfp-launch" / "junit.xml").read_text().count("<testsuite ") == len(jobs)


@WAYS
def test_credentials_refused_mid_wait_exit_4_with_the_reports(
    run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer, jobs: list[str]
) -> None:
    project = make_project(tmp_path, 2)
    for _ in jobs:
        kfp.script_run(["RUNNING"], advance_on_list=True)
    # In CI each job's submission first looks for this CI job's earlier run (one list each); then the wait
    # reads once successfully, and every read after that is refused.
    kfp.fail(401, method="GET", path=POLL, skip=len(jobs) + 1, times=None)
    result = run_cli(["run", *jobs], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.AUTH, result.output
    assert states(project, jobs) == ["ERROR"] * len(jobs)


@WAYS
def test_a_run_deleted_mid_wait_ends_canceled_with_exit_7(
    run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer, jobs: list[str]
) -> None:
    project = make_project(tmp_path, 2)
    kfp.script_run(["RUNNING"], advance_on_list=True)  # job00: deleted while we wait
    if len(jobs) == 2:
        kfp.script_run(["RUNNING", "RUNNING", "SUCCEEDED"], advance_on_list=True)

    def delete_job00() -> None:
        wait_for_polls(kfp, jobs)
        with kfp.lock:
            doomed = next(rid for rid, r in kfp.runs.items() if r["display_name"].startswith("job00"))
            del kfp.runs[doomed]  # deleted in the UI: gone from the API
            kfp.run_scripts.pop(doomed, None)

    deleter = threading.Thread(target=delete_job00)
    deleter.start()
    result = run_cli(["run", *jobs], cwd=project, env=env_for(kfp, KFP_LAUNCH_TIMEOUT="60"))
    deleter.join(timeout=30)
    assert result.exit_code == ExitCode.RUN_CANCELED, result.output
    assert "the run was deleted" in result.output
    assert states(project, jobs) == ["CANCELED", "SUCCEEDED"][: len(jobs)]


def test_a_run_that_ended_before_the_signal_is_reported_as_it_ended(tmp_path: Path, kfp: FakeKfpServer) -> None:
    project = make_project(tmp_path, 2)
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    kfp.script_run(["RUNNING"], advance_on_list=True)
    env = {k: v for k, v in {**os.environ, **clean_env(env_for(kfp, KFP_LAUNCH_POLL_INTERVAL="0.2"))}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "run", *TWO], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_polls(kfp, TWO, 2)  # the second poll was sent: the first answer has been read
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.SIGTERM, out + err
    assert states(project, TWO) == ["SUCCEEDED", "INTERRUPTED"]
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1  # only the active run


def test_several_jobs_share_one_gitlab_client_so_a_refused_token_warns_once(
    run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer
) -> None:
    project = make_project(tmp_path, 2)
    with FakeGitLab(access_tokens={"glpat-g00d": "kfp-bot"}) as gitlab:
        gl_project, env = merge_request_seven(gitlab, token="glpat-wr0ng")
        for _ in TWO:
            kfp.script_run(["RUNNING", "SUCCEEDED"], advance_on_list=True)
        result = run_cli(["run", *TWO], cwd=project, env=env_for(kfp, **env))
        assert result.exit_code == 0, result.output
        assert result.stderr.count("merge request note not written") == 1
        assert len(gitlab.requests) == 1  # refused once; the other job's note is not tried
