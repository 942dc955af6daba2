"""CiContext from GitLab variables per pipeline type and from git on laptops. Which variables exist in which
pipeline: https://docs.gitlab.com/ci/variables/predefined_variables/ and https://docs.gitlab.com/ci/jobs/job_rules/
(docs/gitlab-notes.md, 'Predefined variables')."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kfp_launch.ci_context import (
    CiContext,
    GitHead,
    SubprocessGitReader,
    is_gitlab_ci,
    reduce_job_name,
)
from kfp_launch.errors import ConfigError, ContextError, ExitCode
from kfp_launch.tickets import Ticket, detect_ticket, ticket_rules
from tests.helpers import EVERYDAY_BRANCHES

SHA = "a" * 40
SOURCE_SHA = "5" * 40
MERGE_SHA = "e" * 40
CWD = Path("/nonexistent/project")

JOB_VARIABLES = {
    "CI": "true",
    "GITLAB_CI": "true",
    "CI_SERVER_URL": "https://gitlab.example.com",
    "CI_PROJECT_PATH": "mlops/kfp-demo",
    "CI_PROJECT_URL": "https://gitlab.example.com/mlops/kfp-demo",
    "CI_DEFAULT_BRANCH": "main",
    "CI_PIPELINE_ID": "1001",
    "CI_PIPELINE_URL": "https://gitlab.example.com/mlops/kfp-demo/-/pipelines/1001",
    "CI_JOB_ID": "539473",
    "CI_JOB_URL": "https://gitlab.example.com/mlops/kfp-demo/-/jobs/539473",
    "CI_JOB_NAME": "train 1/3",
    "CI_JOB_STARTED_AT": "2025-03-04T10:20:30Z",
    "CI_JOB_TIMEOUT": "3600",
    "GITLAB_USER_LOGIN": "jdoe",
    "GITLAB_USER_NAME": "Jane Doe",
    "CI_COMMIT_SHA": SHA,
    "CI_COMMIT_TITLE": "Add the model",
}

JOB_FIELDS = {
    "in_ci": True,
    "server_url": "https://gitlab.example.com",
    "project_path": "mlops/kfp-demo",
    "project_url": "https://gitlab.example.com/mlops/kfp-demo",
    "default_branch": "main",
    "pipeline_id": "1001",
    "pipeline_url": "https://gitlab.example.com/mlops/kfp-demo/-/pipelines/1001",
    "job_id": "539473",
    "job_url": "https://gitlab.example.com/mlops/kfp-demo/-/jobs/539473",
    "job_name": "train 1/3",
    "job": "train",
    "job_started_at": datetime(2025, 3, 4, 10, 20, 30, tzinfo=UTC),
    "job_timeout_s": 3600,
    "user_login": "jdoe",
    "user_name": "Jane Doe",
    "commit_sha": SHA,
    "checkout_sha": SHA,
    "commit_title": "Add the model",
}


@dataclass
class FakeGitReader:
    """A GitReader returning a fixed HEAD and recording the directories it was asked about."""

    head: GitHead
    asked: list[Path] = field(default_factory=list)

    def read_head(self, cwd: Path) -> GitHead:
        self.asked.append(cwd)
        return self.head


class NoGitInCi:
    """A GitReader that fails the test if it is used: in CI, git must not be consulted."""

    def read_head(self, cwd: Path) -> GitHead:
        raise AssertionError(f"git was asked about {cwd} in a GitLab job")


def from_gitlab(variables: dict[str, str], **kwargs: object) -> CiContext:
    return CiContext.from_environ(variables, cwd=CWD, git=NoGitInCi(), **kwargs)  # type: ignore[arg-type]  # test helper forwards keywords


# --- GitLab pipeline types -------------------------------------------------------------------------------

PIPELINES = {
    "branch push": (
        {
            "CI_PIPELINE_SOURCE": "push",
            "CI_COMMIT_BRANCH": "feature/ABC-12-foo",
            "CI_COMMIT_REF_NAME": "feature/ABC-12-foo",
            "CI_OPEN_MERGE_REQUESTS": "mlops/kfp-demo!42",
        },
        {
            "pipeline_source": "push",
            "branch": "feature/ABC-12-foo",
            "ref": "feature/ABC-12-foo",
            "ref_kind": "branch",
            "ticket": "ABC-12",
            "ticket_source": "branch",
        },
    ),
    "default branch push, empty MR variables": (
        {
            "CI_PIPELINE_SOURCE": "push",
            "CI_COMMIT_BRANCH": "main",
            "CI_COMMIT_REF_NAME": "main",
            "CI_MERGE_REQUEST_IID": "",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": "",
            "CI_COMMIT_TAG": "",
        },
        {"pipeline_source": "push", "branch": "main", "ref": "main", "ref_kind": "branch"},
    ),
    "merge request (detached)": (
        {
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_COMMIT_BRANCH": "",
            "CI_COMMIT_REF_NAME": "feature/x",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/x",
            "CI_MERGE_REQUEST_IID": "42",
            "CI_MERGE_REQUEST_TITLE": "OPS-7: faster training",
            "CI_MERGE_REQUEST_EVENT_TYPE": "detached",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": "",
            "CI_MERGE_REQUEST_PROJECT_URL": "https://gitlab.example.com/mlops/kfp-demo",
        },
        {
            "pipeline_source": "merge_request_event",
            "branch": "feature/x",
            "ref": "feature/x",
            "ref_kind": "branch",
            "merge_request_iid": 42,
            "merge_request_title": "OPS-7: faster training",
            "merge_request_event_type": "detached",
            "merge_request_url": "https://gitlab.example.com/mlops/kfp-demo/-/merge_requests/42",
            "ticket": "OPS-7",
            "ticket_source": "merge request title",
        },
    ),
    "merged results: the author's commit, not the merge commit": (
        {
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_COMMIT_REF_NAME": "feature/x",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/x",
            "CI_MERGE_REQUEST_IID": "42",
            "CI_MERGE_REQUEST_TITLE": "Faster training",
            "CI_MERGE_REQUEST_EVENT_TYPE": "merged_result",
            "CI_COMMIT_SHA": MERGE_SHA,
            "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": SOURCE_SHA,
            "CI_COMMIT_TITLE": "Merge branch 'feature/x' into 'main' (DEV-1)",
        },
        {
            "pipeline_source": "merge_request_event",
            "branch": "feature/x",
            "ref": "feature/x",
            "ref_kind": "branch",
            "merge_request_iid": 42,
            "merge_request_title": "Faster training",
            "merge_request_event_type": "merged_result",
            "merge_request_url": "https://gitlab.example.com/mlops/kfp-demo/-/merge_requests/42",
            "commit_sha": SOURCE_SHA,
            "checkout_sha": MERGE_SHA,
            "commit_title": None,
        },
    ),
    "merge train": (
        {
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "fix/y",
            "CI_MERGE_REQUEST_IID": "7",
            "CI_MERGE_REQUEST_EVENT_TYPE": "merge_train",
            "CI_COMMIT_SHA": MERGE_SHA,
            "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": SOURCE_SHA,
        },
        {
            "pipeline_source": "merge_request_event",
            "branch": "fix/y",
            "ref": "fix/y",
            "ref_kind": "branch",
            "merge_request_iid": 7,
            "merge_request_event_type": "merge_train",
            "merge_request_url": "https://gitlab.example.com/mlops/kfp-demo/-/merge_requests/7",
            "commit_sha": SOURCE_SHA,
            "checkout_sha": MERGE_SHA,
            "commit_title": None,
        },
    ),
    "tag: a tag is not a branch": (
        {
            "CI_PIPELINE_SOURCE": "push",
            "CI_COMMIT_TAG": "v1.2.0",
            "CI_COMMIT_REF_NAME": "v1.2.0",
            "CI_COMMIT_BRANCH": "",
        },
        {"pipeline_source": "push", "branch": None, "ref": "v1.2.0", "ref_kind": "tag"},
    ),
    "schedule": (
        {
            "CI_PIPELINE_SOURCE": "schedule",
            "CI_COMMIT_BRANCH": "main",
            "CI_COMMIT_REF_NAME": "main",
            "CI_JOB_NAME": "train: [gpu, a100]",
        },
        {
            "pipeline_source": "schedule",
            "branch": "main",
            "ref": "main",
            "ref_kind": "branch",
            "job_name": "train: [gpu, a100]",
        },
    ),
    "web": (
        {
            "CI_PIPELINE_SOURCE": "web",
            "CI_COMMIT_BRANCH": "main",
            "CI_COMMIT_REF_NAME": "main",
            "GITLAB_USER_NAME": "",
        },
        {"pipeline_source": "web", "branch": "main", "ref": "main", "ref_kind": "branch", "user_name": None},
    ),
    "api, job-only variables missing": (
        {
            "CI_PIPELINE_SOURCE": "api",
            "CI_COMMIT_BRANCH": "main",
            "CI_JOB_STARTED_AT": "",
            "CI_JOB_TIMEOUT": "",
            "CI_JOB_NAME": "",
            "CI_COMMIT_TITLE": "",
            "CI_COMMIT_MESSAGE": "ABC-3 first line\n\nbody",
        },
        {
            "pipeline_source": "api",
            "branch": "main",
            "ref": "main",
            "ref_kind": "branch",
            "job_started_at": None,
            "job_timeout_s": None,
            "job_name": None,
            "job": None,
            "commit_title": "ABC-3 first line",
            "ticket": "ABC-3",
            "ticket_source": "commit title",
        },
    ),
    "external pull request: only CI_COMMIT_REF_NAME": (
        {"CI_PIPELINE_SOURCE": "external_pull_request_event", "CI_COMMIT_REF_NAME": "feature/gh"},
        {
            "pipeline_source": "external_pull_request_event",
            "branch": "feature/gh",
            "ref": "feature/gh",
            "ref_kind": "branch",
        },
    ),
}


@pytest.mark.parametrize(("variables", "fields"), PIPELINES.values(), ids=PIPELINES.keys())
def test_context_from_gitlab_pipeline(variables: dict[str, str], fields: dict[str, object]) -> None:
    context = from_gitlab({**JOB_VARIABLES, **variables})

    assert context == CiContext(**{**JOB_FIELDS, **fields})  # type: ignore[arg-type]  # table of fields


def test_branch_override_wins_in_ci_even_in_a_tag_pipeline() -> None:
    variables = {**JOB_VARIABLES, "CI_COMMIT_TAG": "v1.2.0", "CI_COMMIT_REF_NAME": "v1.2.0"}

    context = from_gitlab(variables, branch_override="release/1.2")

    assert (context.branch, context.ref, context.ref_kind) == ("release/1.2", "release/1.2", "branch")


def test_gitlab_ci_local_detached_head_is_no_branch() -> None:
    variables = {**JOB_VARIABLES, "CI_COMMIT_BRANCH": "HEAD", "CI_COMMIT_REF_NAME": "HEAD"}

    with pytest.raises(ContextError, match=r"pass --branch NAME") as caught:
        from_gitlab(variables)

    assert caught.value.exit_code == ExitCode.INVALID_INPUT
    assert from_gitlab(variables, branch_override="main").branch == "main"


def test_ci_without_any_ref_is_an_error_unless_no_ref_is_required() -> None:
    with pytest.raises(ContextError, match=r"CI_COMMIT_BRANCH.*CI_COMMIT_TAG.*--branch NAME"):
        from_gitlab(JOB_VARIABLES)

    context = from_gitlab(JOB_VARIABLES, require_ref=False)

    assert context == CiContext(**JOB_FIELDS)  # type: ignore[arg-type]  # table of fields
    assert (context.branch, context.ref, context.ref_kind) == (None, None, "none")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CI_MERGE_REQUEST_IID", "!42"),
        ("CI_JOB_TIMEOUT", "1h"),
        ("CI_JOB_TIMEOUT", "-5"),
        ("CI_JOB_STARTED_AT", "yesterday"),
    ],
)
def test_malformed_gitlab_variable_is_a_context_error_naming_it(name: str, value: str) -> None:
    variables = {**JOB_VARIABLES, "CI_COMMIT_BRANCH": "main", name: value}

    with pytest.raises(ContextError, match=re.escape(f"{name}={value!r}")):
        from_gitlab(variables)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"CI": "true", "CI_COMMIT_SHA": SHA}, True),
        ({"CI": "TRUE", "CI_COMMIT_SHA": SHA}, True),
        ({"CI": "true", "CI_COMMIT_SHA": ""}, False),
        ({"CI": "true", "CI_COMMIT_SHA": "  "}, False),
        ({"CI": "true"}, False),
        ({"CI": "", "CI_COMMIT_SHA": SHA}, False),
        ({"CI": "false", "CI_COMMIT_SHA": SHA}, False),
        ({"CI_COMMIT_SHA": SHA}, False),
        ({}, False),
    ],
)
def test_is_gitlab_ci(variables: dict[str, str], expected: bool) -> None:
    assert is_gitlab_ci(variables) is expected


def test_ci_true_with_empty_commit_sha_is_laptop_mode_and_ignores_ci_variables() -> None:
    git = FakeGitReader(GitHead(branch="feature/local", commit_sha=SHA, commit_title="WIP"))
    ci_leftovers = {"CI_COMMIT_BRANCH": "main", "CI_MERGE_REQUEST_IID": "4"}
    variables = {**JOB_VARIABLES, **ci_leftovers, "CI_COMMIT_SHA": ""}

    context = CiContext.from_environ(variables, cwd=CWD, git=git)

    assert context == CiContext(
        in_ci=False,
        branch="feature/local",
        ref="feature/local",
        ref_kind="branch",
        commit_sha=SHA,
        checkout_sha=SHA,
        commit_title="WIP",
    )
    assert git.asked == [CWD]


# --- Laptop mode with a fake git -------------------------------------------------------------------------


def test_laptop_context_from_git() -> None:
    git = FakeGitReader(GitHead(branch="feature/OPS-9-tune", commit_sha=SHA, commit_title="Tune"))

    context = CiContext.from_environ({"HOME": "/home/me"}, cwd=CWD, git=git)

    assert context == CiContext(
        in_ci=False,
        branch="feature/OPS-9-tune",
        ref="feature/OPS-9-tune",
        ref_kind="branch",
        commit_sha=SHA,
        checkout_sha=SHA,
        commit_title="Tune",
        ticket="OPS-9",
        ticket_source="branch",
    )


def test_laptop_detached_head_needs_branch_override() -> None:
    git = FakeGitReader(GitHead(commit_sha=SHA, commit_title="Tune", problem="HEAD is detached at aaaaaaaa"))

    with pytest.raises(ContextError, match=r"HEAD is detached at aaaaaaaa; pass --branch NAME"):
        CiContext.from_environ({}, cwd=CWD, git=git)

    context = CiContext.from_environ({}, cwd=CWD, git=git, branch_override=" feature/x ")

    assert context == CiContext(
        in_ci=False,
        branch="feature/x",
        ref="feature/x",
        ref_kind="branch",
        commit_sha=SHA,
        checkout_sha=SHA,
        commit_title="Tune",
    )


def test_laptop_without_git_and_without_ref_requirement_has_no_ref() -> None:
    git = FakeGitReader(GitHead(problem="git is not installed"))

    context = CiContext.from_environ({}, cwd=CWD, git=git, require_ref=False)

    assert context == CiContext(in_ci=False, ref_kind="none")


# --- Laptop mode with real git ---------------------------------------------------------------------------


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """A hermetic environment for git: no user or system config, no repository above tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def run_git(repo: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, git_env: dict[str, str]) -> Path:
    """A repository with one commit on main and a branch feature/ABC-5-é checked out."""
    path = tmp_path / "repo"
    path.mkdir()
    run_git(path, git_env, "init", "--quiet", "--initial-branch=main")
    (path / "README.md").write_text("hello\n")
    run_git(path, git_env, "add", "README.md")
    run_git(path, git_env, "commit", "--quiet", "-m", "First commit")
    run_git(path, git_env, "switch", "--quiet", "-c", "feature/ABC-5-é")
    return path


def test_real_git_branch_commit_and_title(repo: Path, git_env: dict[str, str]) -> None:
    sha = run_git(repo, git_env, "rev-parse", "HEAD")

    context = CiContext.from_environ({}, cwd=repo, git=SubprocessGitReader(env=git_env))

    assert context == CiContext(
        in_ci=False,
        branch="feature/ABC-5-é",
        ref="feature/ABC-5-é",
        ref_kind="branch",
        commit_sha=sha,
        checkout_sha=sha,
        commit_title="First commit",
        ticket="ABC-5",
        ticket_source="branch",
    )


def test_real_git_branch_shadowed_by_tag_keeps_its_plain_name(repo: Path, git_env: dict[str, str]) -> None:
    run_git(repo, git_env, "tag", "feature/ABC-5-é")  # rev-parse --abbrev-ref would say heads/feature/...

    head = SubprocessGitReader(env=git_env).read_head(repo)

    assert head.branch == "feature/ABC-5-é"


def test_real_git_unborn_branch_has_a_branch_but_no_commit(tmp_path: Path, git_env: dict[str, str]) -> None:
    run_git(tmp_path, git_env, "init", "--quiet", "--initial-branch=trunk")

    head = SubprocessGitReader(env=git_env).read_head(tmp_path)

    assert head == GitHead(branch="trunk")


def test_real_git_detached_head_is_a_context_error_fixed_by_branch_override(
    repo: Path, git_env: dict[str, str]
) -> None:
    run_git(repo, git_env, "switch", "--quiet", "--detach")
    sha = run_git(repo, git_env, "rev-parse", "HEAD")
    git = SubprocessGitReader(env=git_env)

    with pytest.raises(ContextError, match=rf"HEAD is detached at {sha[:8]} in .*; pass --branch NAME"):
        CiContext.from_environ({}, cwd=repo, git=git)
    context = CiContext.from_environ({}, cwd=repo, git=git, branch_override="hotfix")

    assert (context.branch, context.commit_sha, context.commit_title) == ("hotfix", sha, "First commit")


def test_real_git_outside_a_repository_is_a_context_error_fixed_by_branch_override(
    tmp_path: Path, git_env: dict[str, str]
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    git = SubprocessGitReader(env=git_env)

    with pytest.raises(ContextError, match=r"not a git repository.*; pass --branch NAME"):
        CiContext.from_environ({}, cwd=plain, git=git)
    context = CiContext.from_environ({}, cwd=plain, git=git, branch_override="main")

    assert context == CiContext(in_ci=False, branch="main", ref="main", ref_kind="branch")


def test_missing_git_executable_is_a_context_error_fixed_by_branch_override(tmp_path: Path) -> None:
    git = SubprocessGitReader(executable=str(tmp_path / "no-such-git"))

    with pytest.raises(ContextError, match=r"git is not installed; pass --branch NAME"):
        CiContext.from_environ({}, cwd=tmp_path, git=git)
    context = CiContext.from_environ({}, cwd=tmp_path, git=git, branch_override="main")

    assert context == CiContext(in_ci=False, branch="main", ref="main", ref_kind="branch")


# --- JIRA ticket -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("feature/ML-42-x", "ML-42"),
        ("ABC-12", "ABC-12"),
        ("feature/ABC12-3-x", "ABC12-3"),
        ("abc_DEF-7", "DEF-7"),
        ("ABC-12 and DEF-34", "ABC-12"),
        ("OPS_2-7", "OPS_2-7"),
        # ordinary branches are not tickets: JIRA keys are upper-case
        *((branch, None) for branch in EVERYDAY_BRANCHES),
        ("feature/abc-12-thing", None),
        ("A-1", None),  # one letter is not a project key
        ("ABC-12x", None),
        ("1ABC-12", None),
        ("éABC-12", None),
        ("ABC-12é", None),
        ("ABC-", None),
        ("ABC-١٢", None),
        ("main", None),
    ],
)
def test_default_branch_rule(text: str, key: str | None) -> None:
    ticket = detect_ticket(
        flag=None, jira_ticket=None, branch=text, merge_request_title=None, commit_title=None, rules=ticket_rules()
    )

    assert ticket == (Ticket(key=key, source="branch") if key else None)


@pytest.mark.parametrize(
    ("title", "key"),
    [
        ("ML-42: better iris", "ML-42"),
        ("[ML-42] better iris", "ML-42"),
        ("ML-42 better iris", "ML-42"),
        ("  ML-42", "ML-42"),
        ("Fix UTF-8 decoding", None),
        ("Upgrade to GPT-4", None),
        ("better iris (ML-42)", None),
        ("ml-42: lower case", None),
        ("ML-42x: glued", None),
    ],
)
def test_default_title_rule_takes_only_a_key_that_opens_the_title(title: str, key: str | None) -> None:
    ticket = detect_ticket(
        flag=None, jira_ticket=None, branch="better-iris", merge_request_title=title, commit_title=None,
        rules=ticket_rules(),
    )

    assert ticket == (Ticket(key=key, source="merge request title") if key else None)


def test_ticket_projects_match_their_keys_in_any_case_anywhere() -> None:
    rules = ticket_rules(projects=("ML", "ops"))
    found = [detect_ticket(flag=None, jira_ticket=None, branch=b, merge_request_title=t, commit_title=None,
                           rules=rules) for b, t in (("feature/ml-42-x", None), ("x", "Fix the OPS-7 thing"),
                                                      ("chore/bump-kfp-2", "Upgrade to GPT-4"))]
    assert [t.key if t else None for t in found] == ["ML-42", "OPS-7", None]
    with pytest.raises(ConfigError, match="not a JIRA project key"):
        ticket_rules(projects=("ML-", ))


SOURCES = {
    "flag": "flg-1",
    "JIRA_TICKET": "env-2",
    "branch": "feature/BR-3",
    "merge request title": "MR-4 title",
    "commit title": "CT-5: fix",
}


@pytest.mark.parametrize("winner", SOURCES.keys())
def test_ticket_precedence(winner: str) -> None:
    order = list(SOURCES)
    given = {
        source: SOURCES[source] if order.index(source) >= order.index(winner) else None for source in order
    }

    ticket = detect_ticket(
        flag=given["flag"],
        jira_ticket=given["JIRA_TICKET"],
        branch=given["branch"],
        merge_request_title=given["merge request title"],
        commit_title=given["commit title"],
        rules=ticket_rules(),
    )

    expected_keys = {
        "flag": "FLG-1",
        "JIRA_TICKET": "ENV-2",
        "branch": "BR-3",
        "merge request title": "MR-4",
        "commit title": "CT-5",
    }
    assert ticket == Ticket(key=expected_keys[winner], source=winner)  # type: ignore[arg-type]  # str keys


def test_ticket_precedence_through_from_environ() -> None:
    variables = {
        **JOB_VARIABLES,
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/BR-3",
        "CI_MERGE_REQUEST_IID": "1",
        "CI_MERGE_REQUEST_TITLE": "MR-4",
        "CI_COMMIT_TITLE": "CT-5",
    }

    def found(extra: dict[str, str], flag: str | None = None) -> tuple[str | None, str | None]:
        context = from_gitlab({**variables, **extra}, ticket_override=flag)
        return context.ticket, context.ticket_source

    assert found({"JIRA_TICKET": "env-2"}, flag="flg-1") == ("FLG-1", "flag")
    assert found({"JIRA_TICKET": "env-2"}, flag="  ") == ("ENV-2", "JIRA_TICKET")
    assert found({"JIRA_TICKET": ""}) == ("BR-3", "branch")
    assert found({"CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/x"}) == ("MR-4", "merge request title")
    assert found({"CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "x", "CI_MERGE_REQUEST_TITLE": "y"}) == (
        "CT-5",
        "commit title",
    )
    assert found(
        {"CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "x", "CI_MERGE_REQUEST_TITLE": "y", "CI_COMMIT_TITLE": "z"}
    ) == (None, None)


def test_custom_ticket_pattern_is_case_insensitive_and_wins() -> None:
    variables = {**JOB_VARIABLES, "CI_COMMIT_BRANCH": "proj-7-and-utf-8"}

    assert from_gitlab(variables).ticket is None  # lower case is not JIRA's key format
    assert from_gitlab(variables, ticket_pattern=r"\bUTF-\d+").ticket == "UTF-8"
    assert from_gitlab(variables, ticket_pattern=r"\bUTF-\d+", ticket_projects=("PROJ",)).ticket == "UTF-8"
    assert from_gitlab(variables, ticket_projects=("PROJ",)).ticket == "PROJ-7"


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("(ABC-\\d+", "not a valid regular expression"), ("[A-Z]*", "matches the empty string")],
)
def test_invalid_ticket_pattern_is_a_config_error_naming_the_setting(pattern: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^ticket_pattern .*{problem}") as caught:
        from_gitlab({**JOB_VARIABLES, "CI_COMMIT_BRANCH": "main"}, ticket_pattern=pattern)

    assert caught.value.exit_code == ExitCode.INVALID_INPUT


# --- Job names, helpers, JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_name", "job"),
    [
        ("train 1/3", "train"),
        ("train 12/12", "train"),
        ("train: [gpu, a100]", "train"),
        ("train: [gpu]", "train"),
        ("toy-train: [xgboost]", "toy-train"),
        ("train", "train"),
        ("train gpu", "train gpu"),
        ("1/3", "1/3"),
        ("train: gpu", "train: gpu"),
    ],
)
def test_reduce_job_name(job_name: str, job: str) -> None:
    assert reduce_job_name(job_name) == job


def test_to_json_dict_and_describe_for_a_merge_request() -> None:
    variables = {**JOB_VARIABLES, **PIPELINES["merged results: the author's commit, not the merge commit"][0]}
    context = from_gitlab(variables, ticket_override="abc-1")

    data = json.loads(json.dumps(context.to_json_dict()))

    assert {
        key: data[key]
        for key in (
            "branch",
            "ref",
            "ref_kind",
            "commit_sha",
            "merge_request_iid",
            "ticket",
            "pipeline_source",
            "in_ci",
            "job",
        )
    } == {
        "branch": "feature/x",
        "ref": "feature/x",
        "ref_kind": "branch",
        "commit_sha": SOURCE_SHA,
        "merge_request_iid": 42,
        "ticket": "ABC-1",
        "pipeline_source": "merge_request_event",
        "in_ci": True,
        "job": "train",
    }
    assert data["job_started_at"] == "2025-03-04T10:20:30+00:00"
    assert context.describe().splitlines() == [
        "branch feature/x @ 55555555",
        "merge request !42 'Faster training' https://gitlab.example.com/mlops/kfp-demo/-/merge_requests/42",
        "ticket ABC-1 (from flag)",
        "GitLab pipeline 1001 (merge_request_event) https://gitlab.example.com/mlops/kfp-demo/-/pipelines/1001",
        "GitLab job train 1/3 https://gitlab.example.com/mlops/kfp-demo/-/jobs/539473",
        "started by jdoe",
    ]


def test_describe_on_a_laptop_and_job_deadline() -> None:
    context = CiContext(
        in_ci=False, branch="main", ref="main", ref_kind="branch", commit_sha=SHA, commit_title="Tune"
    )

    assert context.describe() == "branch main @ aaaaaaaa 'Tune'\nlaunched outside GitLab CI"
    assert context.job_deadline is None
    assert from_gitlab({**JOB_VARIABLES, "CI_COMMIT_BRANCH": "main"}).job_deadline == datetime(
        2025, 3, 4, 11, 20, 30, tzinfo=UTC
    )
