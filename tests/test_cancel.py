"""`kfp-launch cancel` (the CI template's after_script): terminates only the runs this CI job recorded in the
state file, and goes on past an entry it cannot terminate."""

from __future__ import annotations

import json
from pathlib import Path

from kfp_launch.errors import ExitCode
from tests.fake_kfp import PATH_RUN_TERMINATE, FakeKfpServer
from tests.helpers import RunCli, env_for, launch


def test_cancel_leaves_runs_recorded_by_another_ci_job(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    assert launch(run_cli, project, kfp, "--no-wait").exit_code == 0  # CI_JOB_ID 77 recorded it
    other_job = run_cli(["cancel", "--state-file", ".kfp-launch/state.json"], cwd=project,
                        env=env_for(kfp, CI_JOB_ID="99"))
    assert other_job.exit_code == 0 and "not this one" in other_job.stdout
    assert not kfp.requests_to("POST", PATH_RUN_TERMINATE)
    same_job = run_cli(["cancel", "--state-file", ".kfp-launch/state.json"], cwd=project, env=env_for(kfp))
    assert same_job.exit_code == 0 and len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1


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
