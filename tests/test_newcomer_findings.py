"""Regression tests for what a newcomer broke: bad hosts, flags that do not apply, precedence of
``param`` sources, crashed workers, bad files, modules that exit, invalid profiles, secrets in output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kfp_launch.console import Console
from kfp_launch.errors import ExitCode
from tests.conftest import RunCli, clean_env
from tests.fake_kfp import FakeKfpServer
from tests.test_kubeflow_run import CI


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


def test_unreachable_host_gives_up_after_the_preflight_window_not_max_outage(project: Path) -> None:
    from tests.test_kubeflow_run import FakeClock, run_use_case

    with FakeKfpServer() as kfp:
        kfp.fail(503, times=None)
        clock = FakeClock()
        code, out = run_use_case(project, kfp, clock=clock)  # --max-outage is its default, 10 minutes
    assert code == ExitCode.UNREACHABLE
    assert 30 <= clock.now <= 31  # the 30 s preflight window: nothing was submitted yet
    assert "check KFP_HOST" in out or "HTTP 503" in out


@pytest.mark.parametrize("args", [["--dry-run"], ["--no-wait"], ["--host", "http://x"], ["--timeout", "1h"]])
def test_kubeflow_options_with_local_are_usage_errors(run_cli: RunCli, project: Path, args: list[str]) -> None:
    result = run_cli(["run", "good", "--local", *args], cwd=project)
    assert result.exit_code == ExitCode.USAGE
    assert "only apply to runs on Kubeflow" in result.stderr
    assert not (project / ".kfp-launch").exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--poll-interval", "0"], 2), (["--log-lines", "-5"], 2), (["--timeout", "5x"], 2), (["--timeout", "inf"], 2)],
)
def test_bad_flag_values_are_usage_errors(run_cli: RunCli, project: Path, args: list[str], code: int) -> None:
    result = run_cli(["run", "good", *args], cwd=project, env={**CI, "KFP_HOST": "http://127.0.0.1:9"})
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output


def test_param_sources_add_up_in_precedence_order(run_cli: RunCli, project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.kfp-launch]\nparam = ["a=10", "b=10", "label=toml"]\n')
    (project / "p.yaml").write_text("b: 20\n")
    result = run_cli(["run", "good", "--local", "--profile", "toy", "--params-file", "p.yaml", "-p", "label=flag"],
                     cwd=project)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[0].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "profile toy" in rows["a"]  # the profile (a=1) beats pyproject's project default
    assert "params file p.yaml" in rows["b"] and "20" in rows["b"]
    assert "--param" in rows["label"] and "flag" in rows["label"]


def test_a_killed_local_worker_is_a_failed_run_not_an_input_error(project: Path) -> None:
    (project / "pipelines" / "slow.py").write_text(
        "from kfp import dsl\n\n\n@dsl.component(install_kfp_package=False)\n"
        "def nap(seconds: int):\n    import time\n    print('napping', flush=True)\n    time.sleep(seconds)\n\n\n"
        "@dsl.pipeline\ndef pipeline(seconds: int = 60):\n    nap(seconds=seconds)\n"
    )
    env = {k: v for k, v in {**os.environ, **clean_env()}.items() if v is not None}
    proc = subprocess.Popen([sys.executable, "-m", "kfp_launch", "run", "slow", "--local", "--verbose"], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "napping" in line:
                break
        worker = subprocess.run(["pgrep", "-f", "kfp_launch.local_runner"], capture_output=True, text=True).stdout.split()
        for pid in worker:
            os.kill(int(pid), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.RUN_FAILED, err
    assert "did not finish" in err and "signal 9" in err


def test_non_utf8_params_file_is_an_input_error(run_cli: RunCli, project: Path) -> None:
    (project / "p.yaml").write_bytes(b"label: \xff\xfe\n")
    result = run_cli(["run", "good", "--local", "--params-file", "p.yaml"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT and "not UTF-8" in result.stderr


def test_a_module_calling_sys_exit_at_import_is_reported(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "quits.py").write_text("import sys\nsys.exit(0)\n")
    result = run_cli(["run", "quits", "--local"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "SystemExit" in result.stderr


def test_invalid_profiles_are_reported_by_params(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "badprof.py").write_text(
        "from kfp import dsl\nfrom ._steps import add\nPROFILES = {'toy': {'nope': 1, 'a': 'x'}}\n\n"
        "@dsl.pipeline\ndef pipeline(a: int = 1):\n    add(a=a, b=1)\n"
    )
    for args in (["params", "badprof"], ["params", "badprof", "--dataclass"]):
        result = run_cli(args, cwd=project)
        assert result.exit_code == ExitCode.INVALID_INPUT
        assert 'profile toy: unknown parameter "nope"' in result.stderr
        assert 'profile toy: a: "x" is not an integer' in result.stderr


def test_secrets_in_task_logs_are_masked(run_cli: RunCli, project: Path) -> None:
    token = "tok-in-the-log-12345"
    with FakeKfpServer() as kfp:
        kfp.script_run(["RUNNING", "FAILED"], task_details=[
            {"task_id": "t", "display_name": "score", "state": "FAILED", "pod_name": "p-1"}])
        kfp.set_task_log("*", "p-1", f"connecting with Bearer {token}\nValueError: no\n")
        env = {**CI, "KFP_HOST": kfp.url, "KFP_NAMESPACE": "team-a", "KFP_TOKEN": token,
               "KFP_LAUNCH_POLL_INTERVAL": "0.01"}
        result = run_cli(["run", "good"], cwd=project, env=env)
    assert result.exit_code == ExitCode.RUN_FAILED
    assert token not in result.output and "Bearer [MASKED]" in result.stdout


def test_console_masks_cookie_values_too() -> None:
    import io

    out = io.StringIO()
    console = Console(out=out, err=out, color=False)
    console.mask("authservice_session=c00kie-value; other=zzz-second")
    console.line("sent authservice_session=c00kie-value and c00kie-value and zzz-second")
    assert "c00kie-value" not in out.getvalue() and "zzz-second" not in out.getvalue()


def test_watch_leaves_the_run_running_on_ctrl_c(project: Path) -> None:
    with FakeKfpServer() as kfp:
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


def test_state_file_json_shape(run_cli: RunCli, project: Path) -> None:
    with FakeKfpServer() as kfp:
        kfp.script_run(["RUNNING"])
        env = {**CI, "KFP_HOST": kfp.url, "KFP_NAMESPACE": "team-a", "KFP_LAUNCH_POLL_INTERVAL": "0.01"}
        assert run_cli(["run", "good", "--no-wait"], cwd=project, env=env).exit_code == 0
    state = json.loads((project / ".kfp-launch" / "state.json").read_text())
    entry = state["runs"][0]
    assert set(entry) >= {"run_id", "experiment_id", "host", "namespace", "url", "cancel_policy", "run_key", "run_name"}
    assert entry["run_id"] and entry["run_key"].startswith("mlops/demo/1001/good/good/")
