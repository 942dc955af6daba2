"""Merge-request notes: the real python-gitlab against the fake GitLab over HTTP; assertions on the fake's
notes and on the requests that reached it."""

from __future__ import annotations

import http.client
import io
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import gitlab
import pytest

from kfp_launch.ci_context import CiContext, GitHead
from kfp_launch.console import Console
from kfp_launch.gitlab_notes import GitLabReportConfig, MergeRequestNotes
from kfp_launch.models import MetricValue, RunOutcome, TaskResult
from kfp_launch.note_markdown import note_marker, render_note
from tests.fake_gitlab import PATH_MERGE_REQUESTS, PATH_NOTE, PATH_NOTES, FakeGitLab

TOKEN = "glpat-s3cr3t-T0ken-value"
JOB_TOKEN = "glcbt-job-token-value"
PROJECT_ID, MR_IID = 42, 7
BRANCH = "feature/ABC-12-better-model"
RUN_URL = "https://kfp.example.com/#/runs/details/run-123"

STARTED = RunOutcome(
    job="train",
    pipeline_name="iris-training",
    state="RUNNING",
    exit_code=0,
    run_id="run-123",
    run_url=RUN_URL,
    experiment_id="e-1",
    experiment="feature-abc-12",
    parameters={"learning_rate": 0.1, "layers": [64, 32]},
)
SUCCEEDED = replace(STARTED, state="SUCCEEDED", duration_s=125.0, metrics_available=False)
FAILED = replace(
    STARTED,
    state="FAILED",
    exit_code=6,
    duration_s=61.0,
    metrics_available=False,
    message="task build-and-fit failed",
    tasks=(
        TaskResult(name="fetch", state="SUCCEEDED"),
        TaskResult(
            name="build-and-fit",
            state="FAILED",
            error="ValueError: bad | value",
            log_tail=("epoch 1", "Traceback"),
        ),
    ),
)


class Output:
    """A Console writing to strings, and what it wrote."""

    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.console = Console(out=self.out, err=self.err)

    @property
    def text(self) -> str:
        return self.out.getvalue() + self.err.getvalue()

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.err.getvalue().splitlines() if line.startswith("warning:")]


class FakeGit:
    """A GitReader for laptop mode."""

    def read_head(self, cwd: Path) -> GitHead:
        return GitHead(branch=BRANCH, commit_sha="c0ffee" * 6 + "abcd", commit_title="Better model")


@pytest.fixture
def server() -> Iterator[FakeGitLab]:
    with FakeGitLab(access_tokens={TOKEN: "kfp-bot"}, job_tokens={JOB_TOKEN: "developer"}) as fake:
        fake.add_project("mlops/kfp-demo", project_id=PROJECT_ID)
        fake.add_merge_request(PROJECT_ID, iid=MR_IID, source_branch=BRANCH, title="ABC-12 better model")
        yield fake


def mr_pipeline_env(server: FakeGitLab, **overrides: str | None) -> dict[str, str]:
    """The variables of a merge-request pipeline job (https://docs.gitlab.com/ci/variables/predefined_variables/;
    docs/gitlab-notes.md, 'Predefined variables'), plus tokens."""
    env = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_SERVER_URL": server.url,
        "CI_PROJECT_ID": str(PROJECT_ID),
        "CI_PROJECT_PATH": "mlops/kfp-demo",
        "CI_PROJECT_URL": "https://gitlab.example.com/mlops/kfp-demo",
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_COMMIT_SHA": "ab12cd34" * 5,
        "CI_COMMIT_REF_NAME": BRANCH,
        "CI_MERGE_REQUEST_IID": str(MR_IID),
        "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": BRANCH,
        "CI_MERGE_REQUEST_PROJECT_ID": str(PROJECT_ID),
        "CI_MERGE_REQUEST_TITLE": "ABC-12 better model",
        "CI_JOB_NAME": "train",
        "CI_JOB_ID": "555",
        "CI_JOB_URL": "https://gitlab.example.com/mlops/kfp-demo/-/jobs/555",
        "CI_PIPELINE_ID": "1001",
        "CI_PIPELINE_URL": "https://gitlab.example.com/mlops/kfp-demo/-/pipelines/1001",
        "CI_JOB_TOKEN": JOB_TOKEN,
        "GITLAB_TOKEN": TOKEN,
        "JIRA_URL": "https://jira.example.com/",
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def reporter(
    env: Mapping[str, str], output: Output, *, ci: CiContext | None = None, **config_overrides: object
) -> MergeRequestNotes:
    context = ci or CiContext.from_environ(env, cwd=Path("."))
    config = replace(GitLabReportConfig.from_environ(env), **config_overrides)  # type: ignore[arg-type]
    return MergeRequestNotes(config, context, output.console)


# ---- the happy path ----------------------------------------------------------------------------------------


def test_note_is_created_at_start_and_updated_in_place_at_end(server: FakeGitLab) -> None:
    output = Output()
    notes = reporter(mr_pipeline_env(server), output)

    notes.run_started(STARTED)
    [started] = server.notes_of(PROJECT_ID, MR_IID)
    notes.run_finished(FAILED)

    [final] = server.notes_of(PROJECT_ID, MR_IID)
    body = str(final["body"])
    assert final["id"] == started["id"] and final["author"]["username"] == "kfp-bot"
    assert "running" in str(started["body"]) and "failed" not in str(started["body"])
    assert body.startswith("<!-- kfp-launch:mlops/kfp-demo/train mr=!7 -->\n")
    assert "❌ failed" in body and f"[`run-123`]({RUN_URL})" in body
    assert (
        "`feature-abc-12`" in body
        and "| `learning_rate` | `0.1` |" in body
        and "| `layers` | `[64, 32]` |" in body
    )
    assert "[`ABC-12`](https://jira.example.com/browse/ABC-12)" in body
    assert "metrics not available from the KFP API" in body
    assert "`build-and-fit`" in body and "`ValueError: bad | value`" in body and "Traceback" in body
    assert "1 min 01 s" in body
    wire = [(r.method, r.path, r.status) for r in server.requests]
    assert wire == [
        ("GET", "/api/v4/projects/42/merge_requests/7/notes", 200),
        ("POST", "/api/v4/projects/42/merge_requests/7/notes", 201),
        ("PUT", f"/api/v4/projects/42/merge_requests/7/notes/{final['id']}", 200),
    ]  # lazy objects: no GET of the project or the MR, and never GET /user
    assert {r.auth_kind for r in server.requests} == {"private"} and {r.token for r in server.requests} == {
        TOKEN
    }
    assert output.warnings == []
    assert (
        f"merge request note: https://gitlab.example.com/mlops/kfp-demo/-/merge_requests/7#note_{final['id']}"
        in output.text
    )


def test_retried_job_updates_the_same_note(server: FakeGitLab) -> None:
    env = mr_pipeline_env(server)
    first = reporter(env, Output())
    first.run_started(STARTED)
    first.run_finished(FAILED)

    retry = reporter(env, Output())
    retry.run_started(STARTED)
    retry.run_finished(SUCCEEDED)

    [note] = server.notes_of(PROJECT_ID, MR_IID)
    assert "✅ succeeded" in str(note["body"]) and "failed" not in str(note["body"])
    assert len(server.requests_to("POST")) == 1 and len(server.requests_to("PUT", PATH_NOTE)) == 3


def test_each_job_keeps_its_own_note_and_quotes_or_other_notes_are_left_alone(server: FakeGitLab) -> None:
    marker = note_marker("mlops/kfp-demo", "train", MR_IID)
    quote = server.add_note(PROJECT_ID, MR_IID, f"> {marker}\n> looks good", author="reviewer")
    for i in range(130):  # our note on page 2 of 100 (newest first)
        server.add_note(PROJECT_ID, MR_IID, f"comment {i}", author="reviewer")
    ours = server.add_note(PROJECT_ID, MR_IID, f"{marker}\nold body", author="kfp-bot")
    for i in range(130):
        server.add_note(PROJECT_ID, MR_IID, f"later comment {i}", author="reviewer")

    reporter(mr_pipeline_env(server), Output()).run_finished(SUCCEEDED)
    reporter(mr_pipeline_env(server, CI_JOB_NAME="evaluate"), Output()).run_finished(SUCCEEDED)

    bodies = {n["id"]: str(n["body"]) for n in server.notes_of(PROJECT_ID, MR_IID)}
    assert "✅ succeeded" in bodies[ours["id"]] and bodies[quote["id"]].startswith("> <!--")
    assert len(bodies) == 263  # 262 + one new note for job "evaluate"
    [_evaluate] = [
        b for b in bodies.values() if b.startswith("<!-- kfp-launch:mlops/kfp-demo/evaluate mr=!7 -->")
    ]
    assert len(server.requests_to("POST")) == 1 and len(server.requests_to("GET", PATH_NOTES)) == 2 + 3


def test_a_marked_note_of_another_user_is_not_edited_and_a_new_one_is_used_from_then_on(
    server: FakeGitLab,
) -> None:
    marker = note_marker("mlops/kfp-demo", "train", MR_IID)
    foreign = server.add_note(PROJECT_ID, MR_IID, f"{marker}\ncopied by hand", author="reviewer")

    first = reporter(mr_pipeline_env(server), Output())
    first.run_started(STARTED)
    first.run_finished(SUCCEEDED)
    reporter(mr_pipeline_env(server), Output()).run_finished(FAILED)

    notes = server.notes_of(PROJECT_ID, MR_IID)
    assert notes[0]["id"] == foreign["id"] and str(notes[0]["body"]).endswith("copied by hand")
    assert len(notes) == 2 and "❌ failed" in str(notes[1]["body"])
    assert [r.status for r in server.requests_to("PUT")] == [403, 200, 200]


def test_laptop_finds_the_open_merge_request_of_the_branch(server: FakeGitLab) -> None:
    server.add_merge_request(PROJECT_ID, iid=3, source_branch=BRANCH, state="merged")
    server.add_merge_request(PROJECT_ID, iid=9, source_branch="other-branch")
    env = {"GITLAB_TOKEN": TOKEN}
    ci = CiContext.from_environ(env, cwd=Path("."), git=FakeGit())
    config = GitLabReportConfig.from_environ(env, url=server.url, project="mlops/kfp-demo")
    output = Output()
    notes = MergeRequestNotes(config, ci, output.console)

    notes.run_started(replace(STARTED, run_id="", run_url="", experiment=""))
    notes.run_finished(
        replace(
            SUCCEEDED,
            run_id="",
            run_url="",
            experiment="",
            local=True,
            metrics_available=True,
            metrics=(MetricValue(task="eval", artifact="metrics", name="accuracy", value=0.95),),
        )
    )

    [lookup] = server.requests_to("GET", PATH_MERGE_REQUESTS)
    assert lookup.path == "/api/v4/projects/mlops%2Fkfp-demo/merge_requests"
    assert (lookup.param("source_branch"), lookup.param("state")) == (BRANCH, "opened")
    [note] = server.notes_of(PROJECT_ID, MR_IID)
    body = str(note["body"])
    assert body.startswith("<!-- kfp-launch:mlops/kfp-demo/train%20(local) mr=!7 -->")
    assert "local run (kfp.local)" in body and "| `eval` | `accuracy` | 0.95 |" in body
    assert "Ticket" in body and "[`ABC-12`]" not in body  # no JIRA_URL: the key, not a link
    assert server.notes_of(PROJECT_ID, 9) == [] and output.warnings == []


def test_branch_without_open_merge_request_writes_nothing(server: FakeGitLab) -> None:
    env = mr_pipeline_env(
        server,
        CI_MERGE_REQUEST_IID=None,
        CI_MERGE_REQUEST_SOURCE_BRANCH_NAME=None,
        CI_PIPELINE_SOURCE="push",
        CI_COMMIT_BRANCH="no-mr-branch",
    )
    output = Output()
    notes = reporter(env, output)

    notes.run_started(STARTED)
    notes.run_finished(SUCCEEDED)

    assert [r.method for r in server.requests] == ["GET"]  # one lookup, remembered
    assert "no open merge request from branch no-mr-branch" in output.text and output.warnings == []


# ---- tokens ------------------------------------------------------------------------------------------------


def test_only_a_job_token_gives_one_warning_and_no_request(server: FakeGitLab) -> None:
    output = Output()
    env = mr_pipeline_env(server, GITLAB_TOKEN=None)

    for notes in (reporter(env, output), reporter(env, output)):
        notes.run_started(STARTED)
        notes.run_finished(SUCCEEDED)

    assert output.warnings == [
        (
            "warning: CI_JOB_TOKEN cannot write merge request notes (GitLab lets a job token only read "
            "them); set GITLAB_TOKEN to a project access token with the api scope to get the run's note on "
            "the merge request"
        )
    ]
    assert server.requests == [] and server.notes_of(PROJECT_ID, MR_IID) == []


def test_fake_gitlab_refuses_a_job_token_writing_a_note_like_gitlab(server: FakeGitLab) -> None:
    client = gitlab.Gitlab(server.url, job_token=JOB_TOKEN, timeout=5)
    merge_request = client.projects.get(PROJECT_ID, lazy=True).mergerequests.get(MR_IID, lazy=True)

    assert merge_request.notes.list(get_all=True) == []  # reading is allowed
    assert client.projects.get(PROJECT_ID, lazy=True).mergerequests.get(MR_IID).source_branch == BRANCH
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as created:
        merge_request.notes.create({"body": "from a job token"})
    with pytest.raises(gitlab.exceptions.GitlabAuthenticationError):
        gitlab.Gitlab(server.url, private_token="glpat-wrong", timeout=5).projects.get(PROJECT_ID)

    assert created.value.response_code == 403 and created.value.error_message == "403 Forbidden"
    assert server.notes_of(PROJECT_ID, MR_IID) == []
    assert [(r.method, r.auth_kind, r.status) for r in server.requests] == [
        ("GET", "job", 200),
        ("GET", "job", 200),
        ("POST", "job", 403),
        ("GET", "private", 401),
    ]
    assert raw_request(server, "GET", "/api/v4/user", {"JOB-TOKEN": JOB_TOKEN}) == (
        403,
        {"message": "403 Forbidden"},
    )
    assert raw_request(server, "PUT", "/api/v4/projects/mlops%2Fkfp-demo/merge_requests/7/notes/1", {}) == (
        401,
        {"message": "401 Unauthorized"},
    )


def raw_request(server: FakeGitLab, method: str, path: str, headers: dict[str, str]) -> tuple[int, object]:
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_no_token_at_all_is_one_info_line(server: FakeGitLab) -> None:
    output = Output()
    notes = reporter(mr_pipeline_env(server, GITLAB_TOKEN=None, CI_JOB_TOKEN=None), output)

    notes.run_started(STARTED)
    notes.run_finished(SUCCEEDED)

    assert output.out.getvalue() == "merge request note: skipped (set GITLAB_TOKEN to write one)\n"
    assert output.warnings == [] and server.requests == []


def test_an_invalid_token_is_one_warning_without_the_token(server: FakeGitLab) -> None:
    output = Output()
    bad_token = "glpat-expired-token-xyz"
    notes = reporter(mr_pipeline_env(server, GITLAB_TOKEN=bad_token), output)

    notes.run_started(STARTED)
    notes.run_finished(FAILED)

    [warning] = output.warnings
    assert "HTTP 401 Unauthorized" in warning and "GitLab refused GITLAB_TOKEN" in warning
    assert "not affected" in warning and bad_token not in output.text
    assert len(server.requests) == 1  # disabled after the 401: the end of the run is not tried


# ---- failures are warnings ---------------------------------------------------------------------------------


def test_server_errors_are_warnings_and_reads_are_retried_a_limited_number_of_times(
    server: FakeGitLab,
) -> None:
    server.fail(500, times=100)
    output = Output()
    notes = reporter(mr_pipeline_env(server), output)

    notes.run_started(STARTED)  # must not raise
    notes.run_finished(FAILED)

    assert len(output.warnings) == 2
    assert "could not read the notes of merge request !7" in output.warnings[0]
    assert "HTTP 500 Internal Server Error" in output.warnings[0] and "not affected" in output.warnings[0]
    assert [r.method for r in server.requests] == ["GET"] * 6  # 1 + 2 retries, twice
    assert TOKEN not in output.text


def test_a_failed_post_is_not_retried_and_the_end_of_the_run_creates_the_note(server: FakeGitLab) -> None:
    server.fail(500, method="POST", times=1)
    output = Output()
    notes = reporter(mr_pipeline_env(server), output)

    notes.run_started(STARTED)
    notes.run_finished(SUCCEEDED)

    assert [r.status for r in server.requests_to("POST")] == [500, 201]
    [warning] = output.warnings
    assert "could not create a note on merge request !7" in warning
    [note] = server.notes_of(PROJECT_ID, MR_IID)
    assert "✅ succeeded" in str(note["body"])


def test_a_transient_read_error_is_retried_and_the_note_written(server: FakeGitLab) -> None:
    server.fail(502, method="GET", path=PATH_NOTES, times=1)
    server.drop(method="PUT", times=1)
    output = Output()
    notes = reporter(mr_pipeline_env(server), output)

    notes.run_started(STARTED)
    notes.run_finished(SUCCEEDED)

    assert output.warnings == []
    assert [r.status for r in server.requests] == [502, 200, 201, None, 200]
    assert len(server.notes_of(PROJECT_ID, MR_IID)) == 1


def test_dropped_connections_are_warnings(server: FakeGitLab) -> None:
    server.drop(times=100)
    output = Output()
    notes = reporter(mr_pipeline_env(server), output, max_retries=1)

    notes.run_started(STARTED)
    notes.run_finished(SUCCEEDED)

    assert len(output.warnings) == 2
    assert all("ConnectionError: ('Connection aborted.'" in w for w in output.warnings)
    assert len(server.requests) == 4 and server.notes_of(PROJECT_ID, MR_IID) == []


def test_unreachable_gitlab_is_a_warning(server: FakeGitLab) -> None:
    url = server.url
    server.stop()
    output = Output()

    reporter(mr_pipeline_env(server, CI_SERVER_URL=url), output, max_retries=0).run_started(STARTED)

    [warning] = output.warnings
    assert "ConnectionError:" in warning and "Connection refused" in warning and TOKEN not in warning


def test_tokens_echoed_by_gitlab_never_reach_the_output(server: FakeGitLab) -> None:
    server.fail(
        500, times=100, body=json.dumps({"message": f"token {TOKEN} rejected at http://user:pw@proxy/"})
    )
    output = Output()

    reporter(mr_pipeline_env(server), output, max_retries=0).run_finished(FAILED)

    [warning] = output.warnings
    assert "HTTP 500: token [MASKED] rejected at http://[MASKED]@proxy/" in warning
    assert TOKEN not in output.text and JOB_TOKEN not in output.text and "user:pw" not in output.text


def test_project_not_found_is_a_warning_with_a_hint(server: FakeGitLab) -> None:
    output = Output()

    reporter(mr_pipeline_env(server, CI_MERGE_REQUEST_PROJECT_ID="999"), output).run_started(STARTED)

    [warning] = output.warnings
    assert "HTTP 404 Project Not Found" in warning and "check the project (999)" in warning


# ---- configuration and rendering ---------------------------------------------------------------------------


def test_config_reads_the_mapping_and_hides_the_token() -> None:
    config = GitLabReportConfig.from_environ(
        {
            "CI_SERVER_URL": "https://gitlab.example.com/",
            "CI_PROJECT_PATH": "mlops/kfp-demo",
            "GITLAB_TOKEN": TOKEN,
            "CI_JOB_TOKEN": JOB_TOKEN,
            "JIRA_URL": " ",
        }
    )

    assert (config.url, config.project, config.token, config.job_token_present, config.jira_url) == (
        "https://gitlab.example.com",
        "mlops/kfp-demo",
        TOKEN,
        True,
        None,
    )
    assert TOKEN not in repr(config)
    assert (
        GitLabReportConfig.from_environ({"CI_PROJECT_ID": "42"}, url="https://other", project="g/p").url
        == "https://other"
    )


def test_note_markdown_escapes_values() -> None:
    ci = CiContext(in_ci=True, job_name="train", ticket="ABC-12")
    run = replace(
        STARTED, experiment="exp `x` @all #12", parameters={"a|b": "x | y ` z", "empty": "", "n": None}
    )

    body = render_note(run, ci)

    rows = [line for line in body.splitlines() if line.startswith("| `")]
    assert [len(re.split(r"(?<!\\)\|", row)) for row in rows] == [4, 4, 4]  # 2 cells each, pipes escaped
    assert "| `a\\|b` | `` x \\| y ` z `` |" in body
    assert '| `empty` | `""` |' in body and "| `n` | `null` |" in body
    assert "`` exp `x` @all #12 ``" in body  # in a code span: no mention, no issue reference


def test_note_link_targets_are_http_only_and_encoded() -> None:
    ci = CiContext(in_ci=True)
    body = render_note(replace(STARTED, run_url="javascript:alert(1)"), ci)
    assert "- **Run:** `run-123`\n" in body and "javascript" not in body

    body = render_note(replace(STARTED, run_url="https://kfp.example.com/a b)(c|d"), ci)
    assert "[`run-123`](https://kfp.example.com/a%20b%29%28c%7Cd)" in body


def test_fake_gitlab_stops_quickly_with_an_idle_keep_alive_connection() -> None:
    with FakeGitLab(access_tokens={TOKEN: "bot"}) as fake:
        connection = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=5)
        connection.request("GET", "/api/v4/user", headers={"PRIVATE-TOKEN": TOKEN})
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["username"]) == (200, "bot")
        started = time.monotonic()  # the connection stays open (HTTP/1.1 keep-alive) while the server stops
    assert time.monotonic() - started < 2
    connection.close()
