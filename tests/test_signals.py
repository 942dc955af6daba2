"""Signals to a running kfp-launch (GitLab cancels a job with SIGTERM; Ctrl-C is SIGINT): a second signal
interrupts when the first was swallowed, SIGTERM during the merge-request note still terminates the run,
and Ctrl-C on `watch` leaves someone else's run running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from kfp_launch.errors import ExitCode
from tests.fake_kfp import PATH_RUN_TERMINATE, PATH_RUNS, FakeKfpServer
from tests.helpers import clean_env, env_for


def test_a_second_signal_interrupts_when_the_first_was_swallowed(project: Path) -> None:
    # 'importing' is printed inside the try: the first SIGTERM, sent when it is read, always lands there.
    (project / "pipelines" / "stubborn.py").write_text(
        "import sys, time\n"
        "try:\n    print('importing', file=sys.stderr, flush=True)\n    time.sleep(20)\n"
        "except BaseException:\n    print('swallowed', file=sys.stderr, flush=True)\n"
        "time.sleep(20)\n"
    )
    env = {k: v for k, v in {**os.environ, **clean_env()}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "compile", "stubborn"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    swallowed = False
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "importing" in line:
                proc.send_signal(signal.SIGTERM)
            if "swallowed" in line:
                swallowed = True
                proc.send_signal(signal.SIGTERM)
                break
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert swallowed, "the first SIGTERM never reached the module's except clause"
    assert proc.returncode == 143


def test_sigterm_while_the_merge_request_note_is_written_terminates_the_run(project: Path, kfp: FakeKfpServer) -> None:
    silent = socket.socket()  # a GitLab that accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    connection: socket.socket | None = None
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
            if connection is not None:
                connection.close()
    finally:
        silent.close()
    assert proc.returncode == 143, out + err
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1
    assert "glpat-silent-s3cret" not in out + err


def test_watch_leaves_the_run_running_on_ctrl_c(project: Path, kfp: FakeKfpServer) -> None:
    experiment = kfp.add_experiment("x")
    run = kfp.add_run(experiment["experiment_id"], "someone else's run", state="RUNNING")
    env = {k: v for k, v in {**os.environ, **clean_env({"KFP_HOST": kfp.url, "KFP_NAMESPACE": "team-a",
                                                        "KFP_LAUNCH_POLL_INTERVAL": "0.2"})}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "watch", run["run_id"]], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kfp.wait_for_request("GET", r"/apis/v2beta1/runs/.+", count=2, timeout_s=60)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.SIGINT, err
    assert not kfp.requests_to("POST", r".*:terminate")
    assert "keeps running" in err
