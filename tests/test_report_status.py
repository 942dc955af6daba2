"""`--report-status`: the run gates the merge request as a GitLab commit status, without holding a runner.

Real python-gitlab and kfp.Client against the fakes; the exit task's own code (stdlib urllib) posts to the fake
GitLab from kfp.local's task process, so the local tests exercise the very code a cluster runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from kfp_launch.errors import ExitCode
from kfp_launch.models import StatusTarget
from kfp_launch.status_wrapper import EXIT_TASK, TOKEN_ENV, report_status
from tests.fake_gitlab import PATH_STATUSES, FakeGitLab
from tests.fake_kfp import PATH_RUN, PATH_RUN_TERMINATE, PATH_RUNS, FakeKfpServer
from tests.helpers import CI, RunCli, env_for, launch

GITLAB_TOKEN = "glpat-st4tus-s3cret"
SHA = CI["CI_COMMIT_SHA"]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "iris"


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    """A fake GitLab with project mlops/demo and CI pipeline 1001 of the CI commit (its jobs: good, train)."""
    with FakeGitLab(access_tokens={GITLAB_TOKEN: "kfp-bot"}, job_tokens={"job-t0ken": "alice"}) as server:
        project = server.add_project("mlops/demo", project_id=42)
        server.add_pipeline(project["id"], sha=SHA, ref="feature/ML-42-faster", pipeline_id=1001, jobs=["good", "train"])
        yield server


def gitlab_env(gitlab: FakeGitLab, **extra: str) -> dict[str, str]:
    return {"CI_SERVER_URL": gitlab.url, "CI_PROJECT_ID": "42", "GITLAB_TOKEN": GITLAB_TOKEN, **extra}


def states(gitlab: FakeGitLab, name: str) -> list[str]:
    """Every state posted for status NAME, in order (a request GitLab refused is not a state)."""
    return [r.body["state"] for r in gitlab.requests_to("POST", PATH_STATUSES) if r.body["name"] == name and r.status == 201]


def test_no_wait_report_status_posts_running_and_submits_the_job_inside_an_exit_handler(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    result = launch(run_cli, project, kfp, "--no-wait", "--report-status", **gitlab_env(gitlab))
    assert result.exit_code == 0, result.output
    [run_id] = kfp.runs
    run_url = f"{kfp.url}/#/runs/details/{run_id}"
    assert states(gitlab, "kfp: good") == ["pending", "running"]
    [status] = [s for s in gitlab.statuses_of(SHA, "kfp: good") if not s["retried"]]
    assert (status["status"], status["target_url"], status["pipeline_id"]) == ("running", run_url, 1001)
    assert not kfp.requests_to("GET", PATH_RUN)  # it did not wait: exit right after submitting
    body = kfp.requests_to("POST", PATH_RUNS)[0].body
    spec = body["pipeline_spec"].get("pipeline_spec", body["pipeline_spec"])
    tasks = spec["root"]["dag"]["tasks"]
    exit_task = next(t for t in tasks.values() if t["componentRef"]["name"] == f"comp-{EXIT_TASK}")
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"  # an exit handler's task
    assert exit_task["dependentTasks"] == ["exit-handler-1"]
    constants = {k: v["runtimeValue"]["constant"] for k, v in exit_task["inputs"]["parameters"].items()
                 if "runtimeValue" in v}
    assert constants["name"] == "kfp: good" and constants["sha"] == SHA and constants["pipeline_id"] == "1001"
    assert constants["run_url_prefix"] == f"{kfp.url}/#/runs/details/"
    assert GITLAB_TOKEN not in str(body)  # the token comes from the Kubernetes secret, never from the spec
    secret = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        f"exec-{EXIT_TASK}"]["secretAsEnv"][0]
    assert (secret["secretName"], secret["optional"], secret["keyToEnv"][0]["envVar"]) == (
        "kfp-launch-gitlab", True, TOKEN_ENV)
    # the user's pipeline is inside, unchanged: its own tasks are there, under the exit handler's DAG
    handler = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert [t["componentRef"]["name"] for t in handler.values()] == ["comp-good-pipeline"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GITLAB_TOKEN": ""}, "needs GITLAB_TOKEN"),
        ({"GITLAB_TOKEN": "", "CI_JOB_TOKEN": "job-t0ken"}, "a CI_JOB_TOKEN may not post commit statuses"),
        ({"GITLAB_TOKEN": "glpat-wr0ng"}, "HTTP 401"),
        ({"CI_PIPELINE_ID": "999"}, "404 Pipeline for pipeline_id, sha and ref Not Found"),
    ],
)
def test_without_a_token_able_to_post_statuses_nothing_is_submitted_exit_3(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab, env: dict[str, str], expected: str
) -> None:
    result = launch(run_cli, project, kfp, "--no-wait", "--report-status", **gitlab_env(gitlab, **env))
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert expected in " ".join(result.stderr.split())
    assert not kfp.requests_to("POST", PATH_RUNS)
    assert GITLAB_TOKEN not in result.output


def test_a_submission_that_fails_after_pending_leaves_the_status_failed(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    kfp.fail(403, method="POST", path=PATH_RUNS, times=None)
    result = launch(run_cli, project, kfp, "--no-wait", "--report-status", **gitlab_env(gitlab))
    assert result.exit_code == ExitCode.AUTH, result.output
    assert states(gitlab, "kfp: good") == ["pending", "failed"]
    assert "could not submit" in gitlab.statuses_of(SHA, "kfp: good")[-1]["description"]


def test_cancel_posts_canceled_for_a_run_submitted_in_this_mode(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    assert launch(run_cli, project, kfp, "--no-wait", "--report-status", **gitlab_env(gitlab)).exit_code == 0
    [run_id] = kfp.runs
    result = run_cli(["cancel", run_id], cwd=project, env={**env_for(kfp), **gitlab_env(gitlab)})
    assert result.exit_code == 0, result.output
    assert kfp.requests_to("POST", PATH_RUN_TERMINATE)
    assert states(gitlab, "kfp: good") == ["pending", "running", "canceled"]
    assert gitlab.statuses_of(SHA, "kfp: good")[-1]["description"] == "terminated with kfp-launch cancel"


def test_cancel_clears_the_running_status_a_run_terminated_in_the_ui_left_and_leaves_a_final_one(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    assert launch(run_cli, project, kfp, "--no-wait", "--report-status", **gitlab_env(gitlab)).exit_code == 0
    [run_id] = kfp.runs
    with kfp.lock:  # terminated from the Kubeflow UI: FAILED after CANCELING; its exit task never reported
        kfp._set_state(kfp.runs[run_id], "CANCELING")
        kfp._set_state(kfp.runs[run_id], "FAILED")
    env = {**env_for(kfp), **gitlab_env(gitlab)}
    result = run_cli(["cancel", run_id], cwd=project, env=env)
    assert result.exit_code == 0, result.output
    assert not kfp.requests_to("POST", PATH_RUN_TERMINATE)  # it had already ended
    assert states(gitlab, "kfp: good") == ["pending", "running", "canceled"]
    result = run_cli(["cancel", run_id], cwd=project, env=env)  # again: the status is final, left as it is
    assert "is already canceled: left as it is" in result.output
    assert states(gitlab, "kfp: good") == ["pending", "running", "canceled"]


def test_a_matrix_job_gets_its_own_status_name(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    env = gitlab_env(gitlab, CI_JOB_NAME="good: [gpu, a100]")
    assert launch(run_cli, project, kfp, "--no-wait", "--report-status", **env).exit_code == 0
    assert states(gitlab, "kfp: good: [gpu, a100]") == ["pending", "running"]


# ---- local runs: the exit task's own code posts the final state -----------------------------------------------


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    """A copy of the Iris example."""
    dest = tmp_path / "iris"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".kfp-launch", "__pycache__"))
    return dest


def run_local(run_cli: RunCli, iris: Path, gitlab: FakeGitLab, *args: str) -> object:
    env = {**CI, **gitlab_env(gitlab), "CI_JOB_NAME": "train"}
    return run_cli(["run", "train", "--local", "--report-status", *args], cwd=iris, env=env)


def test_a_local_run_posts_running_then_success(run_cli: RunCli, iris: Path, gitlab: FakeGitLab) -> None:
    result = run_local(run_cli, iris, gitlab, "-p", "steps=20")
    assert result.exit_code == 0, result.output
    assert states(gitlab, "kfp: train") == ["pending", "running", "success"]
    final = gitlab.statuses_of(SHA, "kfp: train")[-1]
    assert final["target_url"] == CI["CI_JOB_URL"] and final["pipeline_id"] == 1001
    assert GITLAB_TOKEN not in result.output


def test_a_local_run_with_a_failing_task_posts_failed_with_kfps_error_and_exits_6(
    run_cli: RunCli, iris: Path, gitlab: FakeGitLab
) -> None:
    result = run_local(run_cli, iris, gitlab, "-p", "steps=20", "-p", "test_fraction=0.99")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert states(gitlab, "kfp: train") == ["pending", "running", "failed"]
    assert "failed" in gitlab.statuses_of(SHA, "kfp: train")[-1]["description"].lower()


def test_only_the_exit_task_gets_the_token(run_cli: RunCli, iris: Path, gitlab: FakeGitLab) -> None:
    snoop = iris / "pipelines" / "snoop.py"
    snoop.write_text(
        "from kfp import dsl\n\n"
        "@dsl.component(base_image='python:3.11')\n"
        "def look() -> str:\n"
        "    import os\n"
        f"    leaked = [k for k, v in os.environ.items() if k in ('{TOKEN_ENV}', 'GITLAB_TOKEN') or v == '{GITLAB_TOKEN}']\n"
        "    if leaked:\n"
        "        raise RuntimeError(f'the token reached a user task: {leaked}')\n"
        "    return 'clean'\n\n"
        "@dsl.pipeline(name='snoop')\n"
        "def pipeline() -> str:\n"
        "    return look().output\n"
    )
    env = {**CI, **gitlab_env(gitlab), "CI_JOB_NAME": "snoop"}
    result = run_cli(["run", "snoop", "--local", "--report-status"], cwd=iris, env=env)
    assert result.exit_code == 0, result.output
    assert states(gitlab, "kfp: snoop") == ["pending", "running", "success"]  # and the exit task had it


# ---- the exit task on its own ---------------------------------------------------------------------------------


def target(gitlab: FakeGitLab, **changes: str) -> StatusTarget:
    values = {"gitlab_url": gitlab.url, "project": "42", "sha": SHA, "pipeline_id": "1001", "name": "kfp: train",
              "run_url_prefix": "https://kubeflow.example.com/#/runs/details/"}
    return StatusTarget(**{**values, **changes})


def call_exit_task(gitlab_target: StatusTarget, state: str, error: str = "") -> None:
    status = SimpleNamespace(state=state, error_message=error)
    report_status(status, gitlab_target.gitlab_url, gitlab_target.project, gitlab_target.sha,  # type: ignore[arg-type]
                  gitlab_target.pipeline_id, gitlab_target.name, gitlab_target.run_url_prefix, "run-123", "", "", "")


def test_the_exit_task_posts_the_final_state_with_kfps_error_and_the_run_link(
    gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, GITLAB_TOKEN)
    call_exit_task(target(gitlab), "FAILED", "Task build-and-fit failed: exit code 1")
    [status] = gitlab.statuses_of(SHA, "kfp: train")
    assert (status["status"], status["description"]) == ("failed", "Task build-and-fit failed: exit code 1")
    assert status["target_url"] == "https://kubeflow.example.com/#/runs/details/run-123"
    assert "reported 'failed'" in capsys.readouterr().out


def test_the_exit_task_without_its_secret_says_why_and_does_not_fail(
    gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    call_exit_task(target(gitlab), "SUCCEEDED")  # returns: the task (and the run) still succeed
    assert "Kubernetes secret" in capsys.readouterr().err
    assert not gitlab.requests_to("POST", PATH_STATUSES)


def test_the_exit_task_says_what_gitlab_refused(
    gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, GITLAB_TOKEN)
    call_exit_task(target(gitlab, name="train"), "SUCCEEDED")  # the name of a CI job of the pipeline
    assert "GitLab refused 'success' for 'train': HTTP 400" in capsys.readouterr().err


def test_the_wrapper_keeps_the_users_parameters_and_their_defaults(project: Path) -> None:
    from kfp_launch.pipeline_package import compile_job
    from kfp_launch.status_wrapper import target_from_spec, wrap_for_status

    compiled = compile_job("good", project_dir=project, package="pipelines")
    wrapped = wrap_for_status(compiled, StatusTarget(gitlab_url="https://g", project="1", sha=SHA,
                                                    pipeline_id="", name="kfp: good"))
    original, spec = (next(yaml.safe_load_all(p.package_yaml)) for p in (compiled, wrapped))
    assert spec["root"]["inputDefinitions"] == original["root"]["inputDefinitions"]
    assert spec["pipelineInfo"]["name"] == original["pipelineInfo"]["name"]
    found = target_from_spec(spec)
    assert found is not None and (found.name, found.sha, found.pipeline_id) == ("kfp: good", SHA, "")
    assert target_from_spec(original) is None


def test_report_status_implies_no_wait_unless_wait_is_given(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab))
    assert result.exit_code == 0, result.output
    assert not kfp.requests_to("GET", PATH_RUN)
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    result = launch(run_cli, project, kfp, "--report-status", "--wait", **gitlab_env(gitlab, CI_JOB_NAME="good 2/2"))
    assert result.exit_code == 0, result.output
    assert kfp.requests_to("GET", PATH_RUN) and "run SUCCEEDED" in result.stdout


def test_cancel_of_a_run_that_succeeded_without_reporting_posts_success(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    assert launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab)).exit_code == 0
    [run_id] = kfp.runs
    with kfp.lock:  # the Kubernetes secret was missing: the exit task could not report
        kfp._set_state(kfp.runs[run_id], "SUCCEEDED")
    result = run_cli(["cancel", run_id], cwd=project, env={**env_for(kfp), **gitlab_env(gitlab)})
    assert result.exit_code == 0, result.output
    assert states(gitlab, "kfp: good") == ["pending", "running", "success"]


# ---- what the review found: servers, races, names, hosts, partial submissions --------------------------------


@pytest.mark.parametrize(
    ("state", "error", "posted", "description"),
    [
        ("COMPLETE", "", "success", "the run succeeded"),  # KFP 2.14-2.17: ML Metadata's state name, no message
        ("CACHED", "", "success", "the run succeeded"),
        ("FAILED", "", "failed", "the run failed (FAILED); its page says why"),
        ("CANCELED", "", "canceled", "the run was canceled"),
        ("FAILED", "Task exit-handler-1 failed.", "failed", "Task exit-handler-1 failed."),  # kfp.local's message
    ],
)
def test_the_exit_task_maps_the_states_kfp_backends_and_kfp_local_pass(
    gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch, state: str, error: str, posted: str, description: str
) -> None:
    monkeypatch.setenv(TOKEN_ENV, GITLAB_TOKEN)
    call_exit_task(target(gitlab), state, error)
    [status] = gitlab.statuses_of(SHA, "kfp: train")
    assert (status["status"], status["description"]) == (posted, description)


def test_running_is_not_posted_over_a_status_the_exit_task_already_finished(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kfp_launch.status_gate as gate_module

    real = gate_module.StatusGate.submitted

    def exit_task_first(self: object, job: str, run: object, link: str, **kw: str) -> None:
        monkeypatch.setenv(TOKEN_ENV, GITLAB_TOKEN)  # the run was quicker than kfp-launch's next request
        call_exit_task(target(gitlab, name="kfp: good"), "COMPLETE")
        real(self, job, run, link, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(gate_module.StatusGate, "submitted", exit_task_first)
    assert launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab)).exit_code == 0
    assert states(gitlab, "kfp: good") == ["pending", "success"]


def test_a_ci_job_named_apart_from_its_pipeline_job_gets_a_status_of_its_own(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab, CI_JOB_NAME="good-gpu", KFP_JOB="good"))
    assert result.exit_code == 0, result.output
    assert states(gitlab, "kfp: good-gpu/good") == ["pending", "running"]


def test_statuses_go_to_the_pipelines_project_in_a_merge_request_from_a_fork(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    env = gitlab_env(gitlab, CI_MERGE_REQUEST_PROJECT_ID="99", CI_MERGE_REQUEST_IID="7")
    result = launch(run_cli, project, kfp, "--report-status", **env)
    assert result.exit_code == 0, result.output
    assert all("/projects/42/" in r.path for r in gitlab.requests_to("POST", PATH_STATUSES))


def test_cancel_posts_only_to_this_jobs_gitlab_never_to_the_host_a_run_names(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    assert launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab)).exit_code == 0
    [run_id] = kfp.runs
    with FakeGitLab(access_tokens={GITLAB_TOKEN: "kfp-bot"}) as other:
        result = run_cli(["cancel", run_id], cwd=project,
                         env={**env_for(kfp), **gitlab_env(gitlab), "CI_SERVER_URL": other.url})
        assert result.exit_code == 0, result.output
        assert not other.requests and states(gitlab, "kfp: good") == ["pending", "running"]
    assert "left as it is: the run reports to" in result.stderr


def test_a_proxy_password_never_reaches_the_runs_spec(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    env = gitlab_env(gitlab, HTTPS_PROXY="http://bob:pr0xy-pw@proxy.example.com:3128")
    result = launch(run_cli, project, kfp, "--report-status", **env)
    assert result.exit_code == 0, result.output
    assert "pr0xy-pw" not in str(kfp.requests_to("POST", PATH_RUNS)[0].body)
    assert "HTTPS_PROXY carries a password" in result.stderr


def test_with_all_and_an_outage_a_submitted_run_keeps_running_and_the_others_fail(
    run_cli: RunCli, tmp_path: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    from tests.helpers import make_project

    project = make_project(tmp_path, 2)
    kfp.fail(503, method="POST", path=PATH_RUNS, skip=1, times=None)
    result = run_cli(["run", "--all", "--report-status"], cwd=project,
                     env={**env_for(kfp, KFP_LAUNCH_MAX_OUTAGE="1s"), **gitlab_env(gitlab)})
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert states(gitlab, "kfp: good/job00") == ["pending", "running"]  # its run is left for the retry
    assert states(gitlab, "kfp: good/job01") == ["pending", "failed"]


def test_a_run_kfp_launch_terminates_at_its_deadline_gets_canceled(project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab) -> None:
    from tests.helpers import FakeClock, run_use_case

    code, output = run_use_case(project, kfp, clock=FakeClock(), env={
        **gitlab_env(gitlab), "KFP_LAUNCH_REPORT_STATUS": "true", "KFP_LAUNCH_WAIT": "true", "KFP_LAUNCH_TIMEOUT": "2m"})
    assert code == ExitCode.DEADLINE, output
    assert states(gitlab, "kfp: good") == ["pending", "running", "canceled"]


@pytest.mark.parametrize(("version", "code"), [("2.5.0", ExitCode.INVALID_INPUT), ("2.14.1", ExitCode.INVALID_INPUT),
                                                ("2.15.0", ExitCode.SUCCESS), ("master-55ec846", ExitCode.SUCCESS)])
def test_report_status_needs_a_backend_whose_exit_task_reports(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab, version: str, code: int
) -> None:
    kfp.version = version
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab))
    assert result.exit_code == code, result.output
    assert bool(kfp.requests_to("POST", PATH_RUNS)) == (code == ExitCode.SUCCESS)
    if version.startswith("master"):
        assert "version is unknown" in result.stderr


def test_gitlab_failing_before_submission_is_exit_5(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    gitlab.fail(503, method="POST", path=PATH_STATUSES, times=20)
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab))
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert not kfp.requests_to("POST", PATH_RUNS)


def test_a_file_type_gitlab_token_is_refused(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab, tmp_path: Path
) -> None:
    token_file = tmp_path / "GITLAB_TOKEN"
    token_file.write_text(GITLAB_TOKEN)
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab, GITLAB_TOKEN=str(token_file)))
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "type File" in result.stderr and not kfp.requests_to("POST", PATH_RUNS)


def test_local_all_cancels_the_status_of_a_job_never_reached(
    run_cli: RunCli, iris: Path, gitlab: FakeGitLab
) -> None:
    (iris / "pipelines" / "aa_box.py").write_text(  # a container component: kfp.local refuses it
        "from kfp import dsl\n\n"
        "@dsl.container_component\n"
        "def box():\n"
        "    return dsl.ContainerSpec(image='alpine', command=['true'])\n\n"
        "@dsl.pipeline(name='box')\n"
        "def pipeline():\n"
        "    box()\n")
    env = {**CI, **gitlab_env(gitlab), "CI_JOB_NAME": "all"}
    result = run_cli(["run", "aa_box", "train", "--local", "--report-status"], cwd=iris, env=env)
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert states(gitlab, "kfp: all/aa_box") == ["pending", "running", "failed"]
    assert states(gitlab, "kfp: all/train") == ["pending", "canceled"]


def test_the_wrapper_keeps_optional_parameters_and_pipeline_settings(tmp_path: Path) -> None:
    from kfp_launch.pipeline_package import compile_job
    from kfp_launch.status_wrapper import wrap_for_status

    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "__init__.py").write_text("")
    (tmp_path / "pipelines" / "tuned.py").write_text(
        "from typing import Optional\nfrom kfp import dsl\n\n"
        "@dsl.component(base_image='python:3.11')\n"
        "def step(x: int) -> int:\n    return x\n\n"
        "@dsl.pipeline(name='tuned', display_name='Tuned', pipeline_root='s3://b/roots',\n"
        "              pipeline_config=dsl.PipelineConfig(ttl_seconds_after_finished=60))\n"
        "def pipeline(x: int = 1, tag: Optional[str] = None, flags: list = [1], on: bool = True):\n"
        "    step(x=x)\n")
    compiled = compile_job("tuned", project_dir=tmp_path, package="pipelines")
    wrapped = wrap_for_status(compiled, StatusTarget(gitlab_url="https://g", project="1", sha=SHA, pipeline_id="",
                                                    name="kfp: tuned"))
    (original, original_platform), (spec, platform) = (list(yaml.safe_load_all(c.package_yaml))
                                                       for c in (compiled, wrapped))
    assert spec["root"]["inputDefinitions"] == original["root"]["inputDefinitions"]
    assert spec["defaultPipelineRoot"] == "s3://b/roots" and spec["pipelineInfo"]["displayName"] == "Tuned"
    config = platform["platforms"]["kubernetes"]["pipelineConfig"]
    assert config == original_platform["platforms"]["kubernetes"]["pipelineConfig"]


def test_a_pipeline_id_that_is_not_a_number_is_refused(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab, CI_PIPELINE_ID="abc"))
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert "CI_PIPELINE_ID is 'abc'" in result.stderr and not kfp.requests_to("POST", PATH_RUNS)


def test_no_proxy_for_gitlab_means_no_proxy_for_the_exit_task(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    env = gitlab_env(gitlab, HTTPS_PROXY="http://proxy.example.com:3128", NO_PROXY="127.0.0.1,localhost")
    assert launch(run_cli, project, kfp, "--report-status", **env).exit_code == 0
    assert "proxy.example.com" not in str(kfp.requests_to("POST", PATH_RUNS)[0].body)


def test_the_version_is_read_when_kfp_host_is_the_kfp_ui(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    kfp.version, kfp.healthz_from_ui = "2.14.1", True
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab))
    assert result.exit_code == ExitCode.INVALID_INPUT and "this one is 2.14.1" in result.stderr


def test_a_healthz_404_is_an_unknown_version_and_a_login_page_is_exit_4_before_any_status(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    from tests.fake_kfp import PATH_HEALTHZ

    kfp.fail(404, method="GET", path=PATH_HEALTHZ, times=None)
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab))
    assert result.exit_code == 0 and "version is unknown" in result.stderr
    kfp.clear_faults()
    kfp.html_login(method="GET", path=PATH_HEALTHZ, times=None)
    result = launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab, CI_JOB_NAME="good 2/2"))
    assert result.exit_code == ExitCode.AUTH, result.output
    assert states(gitlab, "kfp: good 2/2") == []


def test_dry_run_checks_the_backend_and_says_what_it_would_post(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    result = launch(run_cli, project, kfp, "--report-status", "--dry-run", **gitlab_env(gitlab))
    assert result.exit_code == 0, result.output
    assert "would post the commit status 'kfp: good'" in result.stdout and "'kfp-launch-gitlab'" in result.stdout
    assert not gitlab.requests_to("POST", PATH_STATUSES)
    kfp.version = "2.5.0"
    assert launch(run_cli, project, kfp, "--report-status", "--dry-run", **gitlab_env(gitlab)).exit_code == 3


def test_a_run_whose_terminate_failed_keeps_its_status(project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab) -> None:
    from tests.helpers import FakeClock, run_use_case

    kfp.fail(500, method="POST", path=PATH_RUN_TERMINATE, times=None)
    code, output = run_use_case(project, kfp, clock=FakeClock(), env={
        **gitlab_env(gitlab), "KFP_LAUNCH_REPORT_STATUS": "true", "KFP_LAUNCH_WAIT": "true", "KFP_LAUNCH_TIMEOUT": "2m"})
    assert code == ExitCode.DEADLINE, output
    assert states(gitlab, "kfp: good") == ["pending", "running"]  # not terminated: its exit task still reports


def test_the_exit_task_never_fails_the_run(
    gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, GITLAB_TOKEN)
    status = SimpleNamespace(state="COMPLETE", error_message="")
    report_status(status, gitlab.url, "42", SHA, "1001", "kfp: train", "", "run-1", "", "not a PEM", "")  # type: ignore[arg-type]
    assert "could not report 'success'" in capsys.readouterr().err


def test_a_spec_edited_by_hand_names_no_status_target() -> None:
    from kfp_launch.status_wrapper import target_from_spec

    def spec(**values: str) -> dict[str, object]:
        inputs = {"gitlab_url": "https://gitlab.example.com", "project": "42", "sha": SHA, "pipeline_id": "1001",
                  "name": "kfp: good", "run_url_prefix": "", "fallback_url": "", **values}
        parameters = {k: {"runtimeValue": {"constant": v}} for k, v in inputs.items()}
        task = {"componentRef": {"name": f"comp-{EXIT_TASK}"}, "inputs": {"parameters": parameters}}
        return {"root": {"dag": {"tasks": {"t": task}}}}

    assert target_from_spec(spec()) is not None
    assert target_from_spec(spec(pipeline_id="abc")) is None
    assert target_from_spec(spec(gitlab_url="http://[::1")) is None
    assert target_from_spec(spec(gitlab_url="file:///etc/passwd")) is None


def test_watch_posts_the_end_of_a_run_whose_exit_task_could_not_report(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab
) -> None:
    assert launch(run_cli, project, kfp, "--report-status", **gitlab_env(gitlab)).exit_code == 0
    [run_id] = kfp.runs
    kfp.script_run(["RUNNING", "SUCCEEDED"], run_id=run_id)  # its exit task had no secret: nothing reported
    result = run_cli(["watch", run_id], cwd=project, env={**env_for(kfp), **gitlab_env(gitlab)})
    assert result.exit_code == 0, result.output
    assert states(gitlab, "kfp: good") == ["pending", "running", "success"]
    assert result.stdout.rstrip().splitlines()[-1].endswith("(exit 0)")  # the outcome is still the last line


def test_a_waited_run_whose_exit_task_reported_is_left_alone(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    kfp.script_run(["RUNNING", "SUCCEEDED"])

    import kfp_launch.status_gate as gate_module

    real = gate_module.StatusGate.submitted

    def then_the_exit_task_reports(self: object, job: str, run: object, link: str, **kw: str) -> None:
        real(self, job, run, link, **kw)  # type: ignore[arg-type]
        monkeypatch.setenv(TOKEN_ENV, GITLAB_TOKEN)  # the CLI runs with a clean environment: the pod's own
        call_exit_task(target(gitlab, name="kfp: good"), "COMPLETE")

    monkeypatch.setattr(gate_module.StatusGate, "submitted", then_the_exit_task_reports)
    result = launch(run_cli, project, kfp, "--report-status", "--wait", **gitlab_env(gitlab))
    assert result.exit_code == 0, result.output
    assert states(gitlab, "kfp: good") == ["pending", "running", "success"]  # nothing posted after the exit task
    assert "is already success: left as it is" in result.stdout
