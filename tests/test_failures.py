"""Kubeflow as it really is: what we send fits every backend, permanent errors stop at once, transient ones
are retried, the deadline holds while requests hang, and once the run exists the exit code never says
"invalid input". Each row of failures.TABLE has a test here, against the fake server's strict modes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from kfp_launch.errors import ExitCode
from kfp_launch.failures import TABLE, Failure, classify
from tests.fake_kfp import PATH_EXPERIMENTS, PATH_RUN, PATH_RUN_TERMINATE, PATH_RUNS, FakeKfpServer
from tests.helpers import REPO_ROOT, RunCli, env_for, launch, runs

LONG_MR = {
    # A merge-request pipeline of a project with a long path and branch: every link is long.
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_COMMIT_BRANCH": "",
    "CI_MERGE_REQUEST_IID": "1234",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/ML-4242-document-classification-with-better-tokenizer",
    "CI_MERGE_REQUEST_TITLE": "ML-4242 Document classification with a better tokenizer 🚀",
    "CI_COMMIT_TITLE": "Use the sentencepiece tokenizer for French medical letters ✉️",
    "CI_PROJECT_PATH": "healthcare-ml/document-understanding/lifen-document-classification",
    "CI_PROJECT_URL": "https://gitlab.example.com/healthcare-ml/document-understanding/lifen-document-classification",
    "CI_MERGE_REQUEST_PROJECT_URL": "https://gitlab.example.com/healthcare-ml/document-understanding/lifen-document-classification",
    "CI_PIPELINE_URL": "https://gitlab.example.com/healthcare-ml/document-understanding/lifen-document-classification/-/pipelines/987654",
    "CI_JOB_URL": "https://gitlab.example.com/healthcare-ml/document-understanding/lifen-document-classification/-/jobs/1234567",
    "CI_JOB_NAME": "train",
    "JIRA_URL": "https://lifen.atlassian.net",
}


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    project = tmp_path / "iris"
    shutil.copytree(REPO_ROOT / "examples" / "iris", project, ignore=shutil.ignore_patterns(".kfp-launch", "__pycache__"))
    return project


def test_run_train_in_a_merge_request_fits_a_strict_255_character_backend(run_cli: RunCli, iris: Path) -> None:
    with FakeKfpServer(text_columns="strict", utf8mb3=True) as kfp:
        kfp.script_run(["RUNNING", "SUCCEEDED"])
        result = run_cli(["run", "train"], cwd=iris, env=env_for(kfp, **LONG_MR))
        assert result.exit_code == 0, result.output
        [run] = runs(kfp)
        assert len(run["description"]) <= 255 and len(run["display_name"]) <= 255
        assert run["description"].startswith("kfp-launch-key: ")
        assert all(ord(char) <= 0xFFFF for char in run["description"])  # the emoji were replaced
        [experiment] = kfp.experiments.values()
        assert len(experiment["description"]) <= 255


def test_a_create_stored_then_failed_in_a_truncating_backend_leaves_exactly_one_run(run_cli: RunCli, iris: Path) -> None:
    with FakeKfpServer(text_columns="truncate") as kfp:
        kfp.script_run(["RUNNING", "SUCCEEDED"])
        kfp.fail(503, method="POST", path=PATH_RUNS, after_handling=True)  # stored, but the answer is an error
        result = run_cli(["run", "train"], cwd=iris, env=env_for(kfp, **LONG_MR))
        assert result.exit_code == 0, result.output
        assert len(runs(kfp)) == 1  # the retry found the stored run by the key at the start of its description
        assert len(kfp.requests_to("POST", PATH_RUNS)) == 1


BIG_JOB = '''from kfp import dsl

BLOB = {blob!r}


@dsl.component(base_image="python:3.11-slim")
def embed(text: str = BLOB) -> int:
    return len(text)


@dsl.pipeline
def pipeline():
    embed()
'''


def test_a_pipeline_too_large_for_the_backend_exits_3_at_once(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "big.py").write_text(BIG_JOB.format(blob="x" * 390_000))
    with FakeKfpServer(annotation_limit_bytes=262_144) as kfp:
        started = time.monotonic()
        result = run_cli(["run", "big"], cwd=project, env=env_for(kfp, KFP_LAUNCH_MAX_OUTAGE="60"))
        took = time.monotonic() - started
        assert result.exit_code == ExitCode.INVALID_INPUT, result.output
        assert "Too long: must have at most 262144 bytes" in result.stderr
        assert "KFP 2.0-2.2 refuse pipelines over about 260 KB" in result.stderr  # the compile-time warning
        assert len(kfp.requests_to("POST", PATH_RUNS)) == 1 and not kfp.runs  # not retried
        assert took < 30


def test_the_deadline_holds_while_every_poll_hangs(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(["RUNNING"])
    hung = kfp.hang(method="GET", path=PATH_RUN, times=None)
    started = time.monotonic()
    result = launch(run_cli, project, kfp, "--timeout", "2s")
    took = time.monotonic() - started
    hung.release()
    assert result.exit_code == ExitCode.DEADLINE, result.output
    assert took < 9  # 2 s of waiting, one bounded request, one terminate; never the 30 s read timeout
    assert len(kfp.requests_to("POST", PATH_RUN_TERMINATE)) == 1


def test_a_body_that_is_not_json_while_waiting_is_an_outage_not_invalid_input(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["RUNNING"])
    kfp.fail(200, method="GET", path=PATH_RUN, times=None, body="upstream sent garbage", content_type="text/plain")
    result = launch(run_cli, project, kfp, KFP_LAUNCH_MAX_OUTAGE="0.5")
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert '"cancel_policy": "detach"' in (project / ".kfp-launch" / "state.json").read_text()  # left for the retry


ROWS = {row[0]: row for row in TABLE}


@pytest.mark.parametrize(
    ("status", "message", "submitting"),
    [
        (503, "unavailable", Failure.TRANSIENT),
        (502, "bad gateway", Failure.TRANSIENT),
        (504, "gateway timeout", Failure.TRANSIENT),
        (429, "slow down", Failure.TRANSIENT),
        (408, "request timeout", Failure.TRANSIENT),
        (500, "InternalServerError: Failed to connect to the database", Failure.TRANSIENT),
        (500, "Error 1406 (22001): Data too long for column 'Description' at row 1", Failure.PERMANENT),
        (500, "Error 1366 (HY000): Incorrect string value: '\\xF0\\x9F' for column 'Description'", Failure.PERMANENT),
        (500, "metadata.annotations: Too long: must have at most 262144 bytes", Failure.PERMANENT),
        (500, "InternalServerError: ...: Invalid input error: Unrecognized input parameter: x", Failure.PERMANENT),
        (400, "Invalid input error: parameter(s) provided are not required by pipeline: zzz", Failure.PERMANENT),
        (422, "unprocessable", Failure.PERMANENT),
        (404, "Experiment x not found", Failure.PERMANENT),
        (401, "Unauthenticated", Failure.AUTH),
        (403, "PermissionDenied", Failure.AUTH),
        (409, "already exists", Failure.CONFLICT),
    ],
)
def test_the_table_classifies_each_answer_while_submitting(status: int, message: str, submitting: Failure) -> None:
    assert classify(status, message) == submitting


@pytest.mark.parametrize(
    ("row", "status", "body", "code", "posts"),
    [
        ("HTTP 408, 429, 502, 503, 504", 503, None, ExitCode.UNREACHABLE, "several"),
        ("HTTP 500 without a validation message", 500, None, ExitCode.UNREACHABLE, "several"),
        ("HTTP 500 saying the input is too long, invalid or not storable", 500,
         '{"code": 13, "message": "Failed to store run: Error 1406 (22001): Data too long for column"}',
         ExitCode.INVALID_INPUT, "one"),
        ("HTTP 400, 422 and other 4xx", 400, None, ExitCode.INVALID_INPUT, "one"),
        ("HTTP 401, 403; a login page", 401, None, ExitCode.AUTH, "several"),
    ],
)
def test_each_row_while_submitting_the_run(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, row: str, status: int, body: str | None, code: int, posts: str
) -> None:
    assert ROWS[row][1] == {ExitCode.UNREACHABLE: Failure.TRANSIENT, ExitCode.INVALID_INPUT: Failure.PERMANENT,
                            ExitCode.AUTH: Failure.AUTH}[ExitCode(code)]
    kfp.fail(status, method="POST", path=PATH_RUNS, times=None, body=body)
    result = launch(run_cli, project, kfp, KFP_LAUNCH_MAX_OUTAGE="0.5")
    assert result.exit_code == code, result.output
    attempts = len(kfp.requests_to("POST", PATH_RUNS))
    assert attempts == 1 if posts == "one" else attempts >= 2
    assert not kfp.runs


@pytest.mark.parametrize(
    ("row", "fault", "code"),
    [
        ("connection refused, reset or dropped; timeout", {"kind": "drop"}, ExitCode.UNREACHABLE),
        ("HTTP 408, 429, 502, 503, 504", {"status": 429}, ExitCode.UNREACHABLE),
        ("HTTP 500 without a validation message", {"status": 500}, ExitCode.UNREACHABLE),
        ("HTTP 500 saying the input is too long, invalid or not storable",
         {"status": 500, "body": '{"code": 3, "message": "InvalidInputError: run is invalid"}'}, ExitCode.UNREACHABLE),
        ("HTTP 400, 422 and other 4xx", {"status": 400}, ExitCode.UNREACHABLE),
        ("a 200 whose body is not a run or experiment (a create's: retried after looking the run up by key)",
         {"status": 200, "body": "{truncated", "content_type": "application/json"},
         ExitCode.UNREACHABLE),
        ("HTTP 401, 403; a login page", {"status": 403}, ExitCode.AUTH),
        ("HTTP 404", {"status": 404}, ExitCode.RUN_CANCELED),
        ("HTTP 409 (create experiment)", {"status": 409}, ExitCode.UNREACHABLE),
    ],
)
def test_each_row_while_waiting(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, row: str, fault: dict[str, object], code: int
) -> None:
    expected = {ExitCode.UNREACHABLE: Failure.TRANSIENT, ExitCode.AUTH: Failure.AUTH,
                ExitCode.RUN_CANCELED: Failure.NOT_FOUND}[ExitCode(code)]
    assert ROWS[row][2] == expected
    kfp.script_run(["RUNNING"])
    if fault.get("kind") == "drop":
        kfp.drop(method="GET", path=PATH_RUN, times=None, skip=1)
    else:
        kfp.fail(int(fault["status"]), method="GET", path=PATH_RUN, times=None, skip=1,  # type: ignore[call-overload]
                 body=fault.get("body"), content_type=str(fault.get("content_type", "application/json")))
    result = launch(run_cli, project, kfp, KFP_LAUNCH_MAX_OUTAGE="0.5")
    assert result.exit_code == code, result.output


def test_tls_failure_while_waiting_is_an_outage_and_before_submitting_is_invalid_input() -> None:
    tls = ROWS["TLS verification failed"]
    assert (tls[1], tls[2]) == (Failure.PERMANENT, Failure.TRANSIENT)
    from kfp_launch.errors import KfpTlsError, TransientKfpError
    from kfp_launch.failures import while_waiting

    waiting = while_waiting(KfpTlsError("TLS failed to read run r: certificate verify failed"))
    assert isinstance(waiting, TransientKfpError) and "certificate verify failed" in waiting.message


def test_a_dns_failure_is_named_as_such(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    real = socket.getaddrinfo

    def resolve(host: object, *args: object, **kwargs: object) -> object:
        if host == "kubeflow.invalid":  # answered here: no lookup leaves the machine
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    env = env_for(kfp, KFP_HOST="http://kubeflow.invalid", KFP_LAUNCH_MAX_OUTAGE="0.2")
    result = run_cli(["run", "good"], cwd=project, env=env)
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert "the host name kubeflow.invalid does not resolve (DNS lookup failed)" in result.stderr


def test_experiment_create_refused_as_too_long_is_not_retried(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    body = '{"code": 13, "message": "Failed to add experiment: Error 1406 (22001): Data too long for column \'Description\'"}'
    kfp.fail(500, method="POST", path=PATH_EXPERIMENTS, times=None, body=body)
    result = launch(run_cli, project, kfp)
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert len(kfp.requests_to("POST", PATH_EXPERIMENTS)) == 1


def test_the_readme_shows_the_table_in_code() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for what, _submitting, _waiting in TABLE:
        assert f"| {what} |" in readme


def test_the_markers_are_narrow_and_cover_the_large_spec_answers_of_later_backends() -> None:
    assert classify(500, "etcdserver: request is too large") == Failure.PERMANENT
    assert classify(500, "Request entity too large") == Failure.PERMANENT
    assert classify(500, 'Workflow.argoproj.io "run-x" is invalid: metadata.annotations: Too long') == Failure.PERMANENT
    assert classify(500, "x509: certificate is invalid for kubeflow.example.com") == Failure.TRANSIENT


def test_a_create_answered_with_something_that_is_not_a_run_finds_the_stored_run(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    kfp.fail(200, method="POST", path=PATH_RUNS, after_handling=True, body="garbage", content_type="text/plain")
    result = launch(run_cli, project, kfp)
    assert result.exit_code == 0, result.output
    assert len(runs(kfp)) == 1 and len(kfp.requests_to("POST", PATH_RUNS)) == 1


def test_a_job_refused_after_others_were_submitted_terminates_them(run_cli: RunCli, project: Path) -> None:
    (project / "pipelines" / "big.py").write_text(BIG_JOB.format(blob="x" * 390_000))
    with FakeKfpServer(annotation_limit_bytes=262_144) as kfp:
        kfp.script_run(["RUNNING"])
        result = run_cli(["run", "good", "big"], cwd=project, env=env_for(kfp))
        assert result.exit_code == ExitCode.INVALID_INPUT, result.output
        assert "The runs already submitted (good) were terminated." in result.stderr
        [good] = runs(kfp)
        assert [r.path for r in kfp.requests_to("POST", PATH_RUN_TERMINATE)] == [f"/apis/v2beta1/runs/{good['run_id']}:terminate"]


def test_requests_after_the_wait_end_by_the_deadline_too(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    from tests.fake_kfp import PATH_RUN_V1

    kfp.script_run(["RUNNING", "FAILED"])
    hung = kfp.hang(method="GET", path=PATH_RUN_V1, times=None)  # the workflow check never answers
    started = time.monotonic()
    result = launch(run_cli, project, kfp, "--timeout", "3s")
    took = time.monotonic() - started
    hung.release()
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert took < 10  # not the 30 s read timeout
    assert "possibly terminated" in result.output
