"""The state file (.kfp-launch/state.json) that `cancel` and a retried job read: what it records, and that a
run never reads an earlier job's state file or reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kfp_launch.errors import ExitCode
from tests.fake_kfp import FakeKfpServer
from tests.helpers import RunCli, env_for, launch


def test_state_file_records_what_cancel_and_a_retry_need(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    assert run_cli(["run", "good", "--no-wait"], cwd=project, env=env_for(kfp)).exit_code == 0
    state = json.loads((project / ".kfp-launch" / "state.json").read_text())
    entry = state["runs"][0]
    assert set(entry) >= {"run_id", "experiment_id", "host", "namespace", "url", "cancel_policy", "run_key", "run_name"}
    assert entry["run_id"] and re.fullmatch(r"[0-9a-f]{12}\.[0-9a-f]{12}\.[0-9a-f]{8}", entry["run_key"])


def test_run_removes_an_earlier_jobs_state_file_and_reports_first(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    (project / ".kfp-launch").mkdir()
    (project / ".kfp-launch" / "state.json").write_text('{"runs": [{"run_id": "upstream"}]}')
    (project / ".kfp-launch" / "run.env").write_text("KFP_RUN_ID=upstream\n")
    result = launch(run_cli, project, kfp, "-p", "nope=1")  # fails before submitting
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert not (project / ".kfp-launch" / "state.json").exists()
    assert not (project / ".kfp-launch" / "run.env").exists()


def test_a_malformed_param_flag_is_refused_before_an_earlier_jobs_files_are_touched(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    (project / ".kfp-launch").mkdir()
    earlier = {name: f"from the earlier job: {name}" for name in ("state.json", "junit.xml", "run.env")}
    for name, text in earlier.items():
        (project / ".kfp-launch" / name).write_text(text)
    result = run_cli(["run", "good", "-p", "novalue"], cwd=project, env=env_for(kfp))
    assert result.exit_code == ExitCode.USAGE
    assert '--param "novalue" is not KEY=VALUE' in result.stderr
    assert {name: (project / ".kfp-launch" / name).read_text() for name in earlier} == earlier
    assert not kfp.requests


def test_several_runs_of_one_ci_job_are_all_in_the_state_file_for_the_after_script(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    from tests.fake_kfp import PATH_RUN_TERMINATE

    for _ in range(3):
        kfp.script_run(["RUNNING"])
    for a in (1, 2, 3):
        assert run_cli(["run", "good", "--no-wait", "-p", f"a={a}"], cwd=project, env=env_for(kfp)).exit_code == 0
    state = json.loads((project / ".kfp-launch" / "state.json").read_text())
    assert sorted(e["run_id"] for e in state["runs"]) == sorted(kfp.runs)
    after_script = run_cli(["cancel", "--state-file", ".kfp-launch/state.json"], cwd=project, env=env_for(kfp))
    assert after_script.exit_code == 0, after_script.output
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 3
    other_job = run_cli(["run", "good", "--no-wait", "-p", "a=4"], cwd=project, env=env_for(kfp, CI_JOB_ID="99"))
    assert other_job.exit_code == 0
    assert len(json.loads((project / ".kfp-launch" / "state.json").read_text())["runs"]) == 1  # not another job's


def test_a_dry_run_on_a_laptop_keeps_the_state_file_of_an_earlier_detached_run(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    from tests.helpers import TOKEN

    laptop = {"KFP_HOST": kfp.url, "KFP_NAMESPACE": "team-a", "KFP_TOKEN": TOKEN, "KFP_LAUNCH_BRANCH": "feat/x"}
    detached = run_cli(["run", "good", "--no-wait"], cwd=project, env=laptop)
    assert detached.exit_code == 0, detached.output
    state = (project / ".kfp-launch" / "state.json").read_text()
    for args in (["--dry-run"], ["-p", "nope=1"]):
        result = run_cli(["run", "good", *args], cwd=project, env=laptop)
        assert result.exit_code != 0 or "dry run: nothing was changed" in result.stdout
        assert (project / ".kfp-launch" / "state.json").read_text() == state  # still there for `cancel`
    assert len(kfp.runs) == 1
