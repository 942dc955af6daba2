"""Secrets never reach the output or the reports: a token in a task's log, each value of a cookie header,
a token the server echoes back in an error."""

from __future__ import annotations

import io
import json
from pathlib import Path

from kfp_launch.console import Console
from kfp_launch.errors import ExitCode
from tests.fake_kfp import PATH_RUN, FakeKfpServer
from tests.helpers import CI, TOKEN, RunCli, launch


def test_secrets_in_task_logs_are_masked(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    token = "tok-in-the-log-12345"
    kfp.script_run(["RUNNING", "FAILED"], task_details=[
        {"task_id": "t", "display_name": "score", "state": "FAILED", "pod_name": "p-1"}])
    kfp.set_task_log("*", "p-1", f"connecting with Bearer {token}\nValueError: no\n")
    env = {**CI, "KFP_HOST": kfp.url, "KFP_NAMESPACE": "team-a", "KFP_TOKEN": token,
           "KFP_LAUNCH_POLL_INTERVAL": "0.01"}
    result = run_cli(["run", "good"], cwd=project, env=env)
    assert result.exit_code == ExitCode.RUN_FAILED
    assert token not in result.output and "Bearer [MASKED]" in result.stdout


def test_console_masks_each_value_of_a_cookie_header() -> None:
    out = io.StringIO()
    console = Console(out=out, err=out, color=False)
    console.mask("authservice_session=c00kie-value; other=zzz-second")
    console.line("sent authservice_session=c00kie-value and c00kie-value and zzz-second")
    assert "c00kie-value" not in out.getvalue() and "zzz-second" not in out.getvalue()


def test_a_token_echoed_by_the_server_is_masked_in_the_reports(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    kfp.fail(503, method="GET", path=PATH_RUN, times=None, body=json.dumps({"code": 14, "message": f"bad token {TOKEN}"}))
    result = launch(run_cli, project, kfp, KFP_LAUNCH_MAX_OUTAGE="0.3")
    assert result.exit_code == ExitCode.UNREACHABLE
    for report in (project / ".kfp-launch").iterdir():
        assert TOKEN not in report.read_text(), report.name
