"""Connection settings, durations, the poll policy and the progress display (no server needed), the
client's construction making no surprising calls (fake server), and a response cut mid-read being transient."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kfp_launch.connection import Connection, connection_from
from kfp_launch.console import Console
from kfp_launch.errors import ConfigError, KfpAuthError, TransientKfpError
from kfp_launch.kfp_api import KfpApi
from kfp_launch.models import RunStatus, TaskResult
from kfp_launch.polling import PollPolicy, WaitResult, call_with_retry, wait_for_runs
from kfp_launch.progress import RunProgress
from kfp_launch.setting_values import parse_duration
from kfp_launch.settings import load_settings
from tests.fake_kfp import PATH_HEALTHZ, FakeKfpServer
from tests.helpers import FakeClock


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0.5", 0.5), ("90", 90), ("90s", 90), ("45m", 2700), ("6h", 21600), ("1h30m", 5400), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "ten", "5d", "-3", "1h x", "m"])
def test_bad_durations_are_config_errors_naming_the_setting(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="KFP_LAUNCH_TIMEOUT"):
        load_settings({}, {"KFP_LAUNCH_TIMEOUT": text or "x"}, tmp_path)


def conn(tmp_path: Path, env: dict[str, str], **flags: object):  # type: ignore[no-untyped-def]
    return connection_from(load_settings(flags, env, tmp_path), env)


def test_host_from_kfp_host_or_the_sdk_variable_and_flag_wins(tmp_path: Path) -> None:
    assert conn(tmp_path, {"KF_PIPELINES_ENDPOINT": "https://a/pipeline/"}).host == "https://a/pipeline"
    both = conn(tmp_path, {"KFP_HOST": "https://b", "KF_PIPELINES_ENDPOINT": "https://a"})
    assert (both.host, both.sources["host"]) == ("https://b", "env KFP_HOST")
    assert conn(tmp_path, {"KFP_HOST": "https://b"}, host="https://c").host == "https://c"


def test_all_connection_problems_in_one_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        conn(tmp_path, {"KFP_CA_BUNDLE": str(tmp_path / "nope.pem"), "KF_PIPELINES_SA_TOKEN_PATH": "/nope/token"})
    assert "no Kubeflow host" in info.value.message
    assert "nope.pem" in info.value.message and "/nope/token" in info.value.message


def test_host_must_be_a_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        conn(tmp_path, {"KFP_HOST": "kubeflow.example.com"})


def test_token_wins_over_token_file_and_secrets_never_in_summary(tmp_path: Path) -> None:
    token_file = tmp_path / "t"
    token_file.write_text("file-token")
    c = conn(tmp_path, {"KFP_HOST": "https://k", "KFP_TOKEN": "tok-secret", "KF_PIPELINES_SA_TOKEN_PATH": str(token_file),
                        "KFP_COOKIE": "session=cookie-secret"})
    assert (c.token, c.token_file) == ("tok-secret", None)
    text = repr(c) + repr(c.summary_rows())
    assert "tok-secret" not in text and "cookie-secret" not in text
    assert "bearer token (KFP_TOKEN)" in c.auth_kind and "session cookie" in c.auth_kind


def test_ca_bundle_precedence(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    env = {"KFP_HOST": "https://k", "REQUESTS_CA_BUNDLE": str(pem), "SSL_CERT_FILE": "/nope"}
    assert conn(tmp_path, env).ca_bundle == str(pem)
    assert conn(tmp_path, {**env, "KFP_CA_BUNDLE": str(pem)}).sources["ca_bundle"] == "env KFP_CA_BUNDLE"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HTTPS_PROXY": "http://user:pw@proxy:3128"}, "http://user:pw@proxy:3128"),
        ({"https_proxy": "http://proxy:3128", "NO_PROXY": "kubeflow.example.com"}, None),
        ({"HTTPS_PROXY": "http://proxy:3128", "no_proxy": ".example.com"}, None),
        ({"HTTP_PROXY": "http://proxy:3128"}, None),  # an https host uses HTTPS_PROXY only
        ({}, None),
    ],
)
def test_proxy_from_environment_honours_no_proxy(tmp_path: Path, env: dict[str, str], expected: str | None) -> None:
    c = conn(tmp_path, {"KFP_HOST": "https://kubeflow.example.com/pipeline", **env})
    assert c.proxy == expected
    assert "pw" not in str(c.summary_rows())


def test_ui_links_single_user_and_behind_the_central_dashboard(tmp_path: Path) -> None:
    plain = conn(tmp_path, {"KFP_HOST": "https://k/pipeline"})
    assert plain.run_url("r1") == "https://k/pipeline/#/runs/details/r1"
    dash = conn(tmp_path, {"KFP_HOST": "https://k/pipeline", "KFP_UI_URL": "https://k/_/pipeline/", "KFP_NAMESPACE": "team-a"})
    assert dash.run_url("r1") == "https://k/_/pipeline/?ns=team-a#/runs/details/r1"


@pytest.mark.parametrize("namespace", ["", "team-a"])
def test_client_construction_makes_no_request(tmp_path: Path, namespace: str) -> None:
    with FakeKfpServer(multi_user=bool(namespace)) as server:
        api = KfpApi(conn(tmp_path, {"KFP_HOST": server.url, "KFP_NAMESPACE": namespace}))
        assert server.requests == []
        api.find_experiments("x")
        assert [r.path for r in server.requests] == ["/apis/v2beta1/experiments"]
        assert server.requests[0].param("namespace") == namespace
        assert not server.requests_to("GET", PATH_HEALTHZ)


def test_a_body_cut_mid_read_is_a_transient_failure_not_a_crash() -> None:
    import urllib3

    class CutBody:
        status = 200
        headers = {"content-type": "application/json"}

        @property
        def data(self) -> bytes:
            raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(10 bytes read, 90 more expected)")

    api = KfpApi(Connection(host="http://127.0.0.1:9", namespace="team-a"))
    with pytest.raises(TransientKfpError) as info:
        api._call(lambda **_kwargs: CutBody(), "read run r1", write=True)
    assert info.value.maybe_applied  # a write whose answer was lost may have happened


def wait_for_run(get: Callable[[], RunStatus], **options: Any) -> WaitResult:
    """The poll loop over one run read by ``get``."""
    def fetch() -> dict[str, RunStatus]:
        status = get()
        return {status.run_id: status}

    return wait_for_runs(fetch, **options)


def test_poll_policy_backs_off_to_age_dependent_caps() -> None:
    policy = PollPolicy(first_interval_s=2, backoff=1.5, young_cap_s=10, young_age_s=300, cap_s=30)
    assert [round(policy.interval(n, 0), 2) for n in range(6)] == [2, 3, 4.5, 6.75, 10, 10]
    assert policy.interval(20, 299) == 10 and policy.interval(20, 301) == 30


def test_wait_retries_transient_errors_and_auth_once() -> None:
    clock = FakeClock()
    replies: list[object] = [TransientKfpError("503"), KfpAuthError("401"), RunStatus(run_id="r", state="RUNNING"),
                             RunStatus(run_id="r", state="SUCCEEDED")]

    def get() -> RunStatus:
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply  # type: ignore[return-value]

    result = wait_for_run(get, policy=PollPolicy(), clock=clock, sleep=clock.sleep)
    assert (result.reason, result.polls, result.statuses["r"].state) == ("terminal", 2, "SUCCEEDED")


def test_wait_raises_on_a_second_auth_refusal() -> None:
    def get() -> RunStatus:
        raise KfpAuthError("401")

    clock = FakeClock()
    with pytest.raises(KfpAuthError):
        wait_for_run(get, policy=PollPolicy(), clock=clock, sleep=clock.sleep)


def test_call_with_retry_gives_up_after_the_outage() -> None:
    clock = FakeClock()
    calls = 0

    def failing() -> None:
        nonlocal calls
        calls += 1
        raise TransientKfpError("HTTP 503")

    with pytest.raises(TransientKfpError):
        call_with_retry(failing, policy=PollPolicy(max_outage_s=60), clock=clock, sleep=clock.sleep)
    assert 60 <= clock.now <= 61 and 4 < calls < 20


def test_progress_prints_one_line_per_change_in_ci() -> None:
    out = io.StringIO()
    progress = RunProgress(Console(out=out, err=out, color=False), live=False)
    tasks = (TaskResult(name="train", state="RUNNING"),)
    with progress:
        progress.update({"r": RunStatus(run_id="r", state="RUNNING", tasks=tasks)})
        progress.update({"r": RunStatus(run_id="r", state="RUNNING", tasks=tasks)})
        progress.update({"r": RunStatus(run_id="r", state="SUCCEEDED", tasks=(TaskResult(name="train", state="SUCCEEDED", duration_s=12),))})
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == ["run RUNNING", "  task train RUNNING", "run SUCCEEDED", "  task train SUCCEEDED (12s)"]


def test_progress_on_a_terminal_draws_a_table() -> None:
    out = io.StringIO()
    progress = RunProgress(Console(out=out, err=out, color=False, width=60), live=True)
    with progress:
        progress.update({"r": RunStatus(run_id="r", state="RUNNING", tasks=(TaskResult(name="train", state="RUNNING"),))})
    text = out.getvalue()
    assert "run RUNNING" in text and "train" in text and "state" in text


def test_a_refusal_after_a_transient_failure_still_counts_as_the_second_refusal() -> None:
    clock = FakeClock()
    replies: list[Exception] = [KfpAuthError("401"), TransientKfpError("503")] * 10

    def alternating() -> None:
        raise replies.pop(0)

    with pytest.raises(KfpAuthError):
        call_with_retry(alternating, policy=PollPolicy(), clock=clock, sleep=clock.sleep)
    assert len(replies) == 17  # 401, 503, 401: refused twice before any success ends the call


def test_an_outage_during_a_long_wait_keeps_the_grown_interval() -> None:
    clock = FakeClock()
    sleeps: list[float] = []
    replies: list[object] = [RunStatus(run_id="r", state="RUNNING")] * 20 + [TransientKfpError("503")] * 3
    replies.append(RunStatus(run_id="r", state="SUCCEEDED"))

    def fetch() -> dict[str, RunStatus]:
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, RunStatus)
        return {"r": reply}

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.sleep(seconds)

    result = wait_for_runs(fetch, policy=PollPolicy(), clock=clock, sleep=sleep, age_at_start_s=3600)
    assert result.reason == "terminal"
    assert sleeps[-4:] == [30.0, 30.0, 30.0, 30.0]  # the outage's retries did not start again at 2 s


def test_a_shorter_retry_window_is_the_limit_its_warnings_name(tmp_path: Path) -> None:
    from kfp_launch.app import App

    out = io.StringIO()
    clock = FakeClock()
    from kfp_launch.app import Runtime

    wired = App(settings=load_settings({}, {}, tmp_path, command="run"), environ={}, project_dir=tmp_path,
                console=Console(out=out, err=out, color=False), runtime=Runtime(clock=clock, sleep=clock.sleep))

    def failing() -> None:
        raise TransientKfpError("HTTP 503")

    with pytest.raises(TransientKfpError):
        wired.retry(max_outage_s=30)(failing)
    assert 30 <= clock.now <= 31
    assert "of at most 30s" in out.getvalue() and "of at most 600s" not in out.getvalue()
