"""`kfp-launch context`, and what `run` takes from the CI context: job name, experiment, ticket, params."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode
from tests.helpers import EVERYDAY_BRANCHES, RunCli

BRANCH_PIPELINE = {
    "CI": "true",
    "GITLAB_CI": "true",
    "CI_COMMIT_SHA": "a" * 40,
    "CI_COMMIT_BRANCH": "feature/ML-42-better-model",
    "CI_COMMIT_REF_NAME": "feature/ML-42-better-model",
    "CI_COMMIT_TITLE": "Tune steps",
    "CI_PIPELINE_SOURCE": "push",
    "CI_PIPELINE_ID": "1001",
    "CI_PROJECT_PATH": "mlops/demo",
    "CI_JOB_NAME": "good 1/2",
}

MR_PIPELINE = {
    "CI": "true",
    "CI_COMMIT_SHA": "b" * 40,
    "CI_COMMIT_REF_NAME": "feat/x",
    "CI_MERGE_REQUEST_IID": "7",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feat/x",
    "CI_MERGE_REQUEST_TITLE": "OPS-9: new features",
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_JOB_NAME": "good: [gpu, a100]",
}


def test_context_json_in_a_branch_pipeline(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(["context", "--json"], cwd=tmp_path, env=BRANCH_PIPELINE)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("branch", "ref", "ref_kind", "commit_sha", "merge_request_iid", "ticket",
                                  "experiment", "pipeline_source", "in_ci", "job")} == {
        "branch": "feature/ML-42-better-model",
        "ref": "feature/ML-42-better-model",
        "ref_kind": "branch",
        "commit_sha": "a" * 40,
        "merge_request_iid": None,
        "ticket": "ML-42",
        "experiment": "feature/ML-42-better-model",
        "pipeline_source": "push",
        "in_ci": True,
        "job": "good",
    }


def test_context_json_in_a_merge_request_pipeline(run_cli: RunCli, tmp_path: Path) -> None:
    data = json.loads(run_cli(["context", "--json"], cwd=tmp_path, env=MR_PIPELINE).stdout)
    assert (data["branch"], data["merge_request_iid"], data["ticket"], data["experiment"], data["job"]) == (
        "feat/x", 7, "OPS-9", "feat/x", "good",
    )


def test_ticket_flag_and_template_flag(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(
        ["context", "--json", "--ticket", "abc-1", "--experiment-template", "{ticket}/{branch}"],
        cwd=tmp_path, env=MR_PIPELINE,
    )
    data = json.loads(result.stdout)
    assert (data["ticket"], data["ticket_source"]) == ("ABC-1", "flag")
    assert data["experiment"].startswith("ABC-1/feat/x")


def test_jira_ticket_variable_is_labelled_as_such(run_cli: RunCli, tmp_path: Path) -> None:
    data = json.loads(run_cli(["context", "--json"], cwd=tmp_path, env={**MR_PIPELINE, "JIRA_TICKET": "ml-5"}).stdout)
    assert (data["ticket"], data["ticket_source"]) == ("ML-5", "JIRA_TICKET")


def test_unknown_template_field_is_exit_2_as_a_flag_and_exit_3_from_the_environment(
    run_cli: RunCli, tmp_path: Path
) -> None:
    result = run_cli(["context", "--experiment-template", "{user}"], cwd=tmp_path, env=MR_PIPELINE)
    assert result.exit_code == ExitCode.USAGE
    assert "experiment_template" in result.stderr and "{branch}" in result.stderr
    from_env = run_cli(["context"], cwd=tmp_path, env={**MR_PIPELINE, "KFP_LAUNCH_EXPERIMENT_TEMPLATE": "{user}"})
    assert from_env.exit_code == ExitCode.INVALID_INPUT
    assert "experiment_template" in from_env.stderr and "{branch}" in from_env.stderr


def test_no_git_outside_ci_asks_for_branch_and_branch_fixes_it(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(["context"], cwd=tmp_path)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "--branch" in result.stderr
    fixed = run_cli(["context", "--json", "--branch", "exp/1"], cwd=tmp_path)
    assert json.loads(fixed.stdout)["experiment"] == "exp/1"


def test_laptop_reads_branch_and_commit_from_git(run_cli: RunCli, tmp_path: Path) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for args in (["init", "-q", "-b", "feature/DS-7-x"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, env={**env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    data = json.loads(run_cli(["context", "--json"], cwd=tmp_path).stdout)
    assert (data["branch"], data["commit_sha"], data["ticket"], data["in_ci"]) == ("feature/DS-7-x", sha, "DS-7", False)


def test_run_without_job_in_ci_runs_the_gitlab_jobs_pipeline(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "--local"], cwd=project, env=BRANCH_PIPELINE)
    assert result.exit_code == 0, result.output
    assert "job: good (pipelines.good:pipeline" in result.stdout
    assert "ref: branch feature/ML-42-better-model" in result.stdout and "experiment" not in result.stdout
    assert "ticket: ML-42 (from branch)" in result.stdout


def test_run_without_job_outside_ci_is_usage_error(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "--local"], cwd=project)
    assert result.exit_code == ExitCode.USAGE
    assert "Missing the JOB argument" in result.stderr


def test_local_run_outside_git_still_works_and_says_there_is_no_branch(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--local"], cwd=project)
    assert result.exit_code == 0, result.output
    assert "ref: no branch (not a git checkout; --branch sets one)" in result.stdout and "experiment" not in result.stdout


@pytest.mark.parametrize(
    ("filename", "content"),
    [("p.yaml", "a: 7\nlabel: '007'\n"), ("p.json", '{"a": 7, "label": "007"}')],
)
def test_params_file_yaml_and_json_reach_the_run_and_param_wins(
    run_cli: RunCli, project: Path, filename: str, content: str
) -> None:
    (project / filename).write_text(content)
    result = run_cli(["run", "good", "--local", "--profile", "toy", "--params-file", filename, "-p", "b=1"], cwd=project)
    assert result.exit_code == 0, result.output
    table = result.stdout
    assert re.search(r"a\s+│ 7\s+│ params file " + re.escape(filename), table)
    assert re.search(r"b\s+│ 1\s+│ --param", table)
    assert "Output = 4.0" in table  # (7 + 1) / 2


def test_an_unquoted_yaml_number_for_a_string_parameter_is_the_text_written(run_cli: RunCli, project: Path) -> None:
    (project / "p.yaml").write_text("label: 007\na: 010\n")
    result = run_cli(["run", "good", "--local", "--params-file", "p.yaml"], cwd=project)
    assert result.exit_code == 0, result.output
    assert re.search(r"label\s+│ \"?007\"?\s+│ params file p.yaml", result.stdout), result.stdout
    assert re.search(r"a\s+│ 10\s+│ params file p.yaml", result.stdout)  # not YAML 1.1's octal 8


def test_unknown_profile_lists_the_jobs_profiles(run_cli: RunCli, project: Path) -> None:
    result = run_cli(["run", "good", "--local", "--profile", "huge"], cwd=project)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert 'no profile "huge"' in result.stderr and "big, toy" in result.stderr


@pytest.mark.parametrize(
    ("branch", "ticket"),
    [*((branch, None) for branch in EVERYDAY_BRANCHES), ("feature/ML-42-x", "ML-42")],
)
def test_only_jira_style_keys_in_a_branch_are_tickets(run_cli: RunCli, tmp_path: Path, branch: str, ticket: str | None) -> None:
    result = run_cli(["context", "--branch", branch, "--json"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ticket"] == ticket


@pytest.mark.parametrize(
    ("branch", "title", "ticket"),
    [("better-iris", "ML-42: better iris", "ML-42"), ("fix-decoding", "Fix UTF-8 decoding", None)],
)
def test_a_merge_request_title_gives_a_ticket_only_when_it_opens_with_one(
    run_cli: RunCli, tmp_path: Path, branch: str, title: str, ticket: str | None
) -> None:
    env = {**MR_PIPELINE, "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": branch, "CI_MERGE_REQUEST_TITLE": title,
           "CI_COMMIT_TITLE": "Merge branch"}
    data = json.loads(run_cli(["context", "--json"], cwd=tmp_path, env=env).stdout)
    assert data["ticket"] == ticket
