"""The fake KFP server (tests/fake_kfp.py) driven by the real ``kfp.Client``: shapes, validation, faults.

These tests pin the fake to the wire contract of kubeflow/pipelines 2.17 (what the SDK's
``sdk/python/kfp/client/client.py`` sends and the API server in ``backend/src/apiserver`` answers; see
docs/kfp-backend-notes.md), so the product's Kubeflow tests can trust it. No ``from __future__ import annotations`` here: kfp reads the component's
annotations at decoration time.
"""

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kfp
import kfp_server_api
import pytest
import urllib3
import yaml
from kfp import compiler, dsl
from kfp_server_api.exceptions import ApiException

from tests.fake_kfp import (
    EPOCH,
    PATH_EXPERIMENT,
    PATH_EXPERIMENTS,
    PATH_RUN,
    PATH_RUNS,
    PATH_TASK_LOG,
    FakeKfpServer,
    RunStep,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # every kfp.Client() warns

NAMESPACE = "team-a"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def echo(n: int, greeting: str) -> str:
    return f"{greeting} {n}"


@dsl.pipeline(name="tiny")
def tiny(n: int, greeting: str = "hi"):
    echo(n=n, greeting=greeting)


Connect = Callable[..., kfp.Client]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny pipeline as YAML: parameters n (NUMBER_INTEGER, required), greeting (STRING, default)."""
    path = tmp_path_factory.mktemp("package") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return str(path)


@pytest.fixture
def server() -> FakeKfpServer:
    with FakeKfpServer() as fake:
        yield fake


@pytest.fixture
def connect(server: FakeKfpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Connect:
    """Make a real kfp.Client for a fake (default: ``server``) with an isolated context file."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "context.json"))

    def make(token: str = "tok", *, fake: FakeKfpServer | None = None, **kwargs: object) -> kfp.Client:
        return kfp.Client(host=(fake or server).url, namespace=NAMESPACE, existing_token=token, **kwargs)

    return make


@pytest.fixture
def client(connect: Connect) -> kfp.Client:
    return connect()


def name_filter(name: str) -> str:
    """The filter kfp.Client sends to look an experiment up by name (``Client.get_experiment`` in
    sdk/python/kfp/client/client.py; docs/kfp-backend-notes.md, 'Name lookups')."""
    return json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})


def error_of(exc_info: pytest.ExceptionInfo[ApiException]) -> dict:
    return json.loads(exc_info.value.body)


def http(server: FakeKfpServer, path: str, *, method: str = "GET", token: str = "tok",
         body: object = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of a plain urllib request, errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def run_tiny(client: kfp.Client, package: str, experiment_id: str, **params: object) -> str:
    return client.run_pipeline(experiment_id=experiment_id, job_name="tiny-run",
                               pipeline_package_path=package, params=params).run_id


# ---- constructor, healthz, request log ---------------------------------------------------------------------


def test_client_with_namespace_sends_nothing_and_without_one_calls_healthz(server, connect):
    connect()
    assert server.requests == []

    bare = kfp.Client(host=server.url, existing_token="tok")

    assert [(r.method, r.path) for r in server.requests] == [("GET", "/apis/v2beta1/healthz")]
    assert bare.get_kfp_healthz().multi_user is True


def test_request_log_records_headers_cookie_and_query_decoded_once(server, connect):
    client = connect(cookies="authservice_session=abc")

    client.list_experiments(namespace=NAMESPACE, filter=name_filter("a+b"))

    [request] = server.requests
    assert request.headers["authorization"] == "Bearer tok" and request.bearer_token == "tok"
    assert request.headers["cookie"] == "authservice_session=abc"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("OpenAPI-Generator/2.17")
    assert request.query == {"page_token": [""], "page_size": ["10"], "sort_by": [""],
                             "filter": [name_filter("a+b")], "namespace": [NAMESPACE]}
    assert "filter=%7B%22predicates%22" in request.raw_query and "a%2Bb" in request.raw_query
    assert request.body is None and request.status == 200


def test_server_is_reachable_from_a_subprocess(server):
    fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"

    done = subprocess.run([sys.executable, "-c", fetch, server.url + "/apis/v2beta1/healthz"],
                          capture_output=True, text=True, timeout=10, check=True)

    assert json.loads(done.stdout) == {"commit_sha": "0000000", "tag_name": "2.17.0", "multi_user": True,
                                       "pipeline_store": "database"}


def test_unknown_route_is_404_and_wrong_method_is_501(server):
    assert http(server, "/apis/v2beta1/nothing")[0] == 404
    status, _, body = http(server, "/apis/v2beta1/runs/r1:terminate")
    assert status == 501 and json.loads(body)["code"] == 12


# ---- experiments -------------------------------------------------------------------------------------------


def test_create_experiment_lists_by_name_then_posts_and_stores_wire_shape(server, client):
    experiment = client.create_experiment("feature-x", description="branch feature-x", namespace=NAMESPACE)

    listing, post = server.requests
    assert [(r.method, r.path) for r in (listing, post)] == [
        ("GET", PATH_EXPERIMENTS), ("POST", PATH_EXPERIMENTS)]
    assert listing.param("filter") == name_filter("feature-x") and listing.param("namespace") == NAMESPACE
    assert post.body == {"display_name": "feature-x", "description": "branch feature-x",
                         "namespace": NAMESPACE}
    stored = server.experiments[experiment.experiment_id]
    assert stored == {"experiment_id": experiment.experiment_id, "display_name": "feature-x",
                      "description": "branch feature-x", "namespace": NAMESPACE, "storage_state": "AVAILABLE",
                      "created_at": stored["created_at"], "last_run_created_at": EPOCH}
    assert TIMESTAMP.fullmatch(stored["created_at"])
    assert experiment.created_at.tzinfo is not None and experiment.storage_state == "AVAILABLE"


def test_create_experiment_reuses_an_existing_one_without_posting(server, client):
    existing = server.add_experiment("feature-x")

    again = client.create_experiment("feature-x", namespace=NAMESPACE)

    assert again.experiment_id == existing["experiment_id"]
    assert server.requests_to("POST") == []


def test_empty_lists_are_empty_objects_and_description_is_omitted(server, client):
    assert http(server, "/apis/v2beta1/experiments?namespace=team-a")[2] == b"{}"
    experiment = client.create_experiment("plain", namespace=NAMESPACE)
    assert "description" not in server.experiments[experiment.experiment_id]


def test_get_experiment_by_id_by_name_and_unknown(server, client):
    added = server.add_experiment("exp-1")

    assert client.get_experiment(experiment_id=added["experiment_id"]).display_name == "exp-1"
    by_name = client.get_experiment(experiment_name="exp-1", namespace=NAMESPACE)
    assert by_name.experiment_id == added["experiment_id"]
    with pytest.raises(ValueError, match="No experiment is found with name nope"):
        client.get_experiment(experiment_name="nope", namespace=NAMESPACE)
    with pytest.raises(ApiException) as missing:
        client.get_experiment(experiment_id="missing")

    assert missing.value.status == 404
    body = error_of(missing)
    assert body["code"] == 5
    assert body["message"].endswith("ResourceNotFoundError: Experiment missing not found.")
    assert body["details"] == [{"@type": "type.googleapis.com/google.rpc.Status", "code": 5,
                                "message": "Experiment missing not found."}]


def test_duplicate_experiment_post_is_409_already_exists(server, client):
    server.add_experiment("dup")
    server.add_experiment("dup", namespace="team-b")  # the unique key is (name, namespace)

    with pytest.raises(ApiException) as duplicate:
        client._experiment_api.experiment_service_create_experiment(
            experiment=kfp_server_api.V2beta1Experiment(display_name="dup", namespace=NAMESPACE))

    assert duplicate.value.status == 409
    body = error_of(duplicate)
    assert body["code"] == 6
    assert body["details"][0]["message"] == (
        "Failed to create a new experiment. The name dup already exists. Please specify a new name")
    assert len(server.experiments) == 2


def test_multi_user_server_rejects_experiment_without_namespace(server, client):
    with pytest.raises(ApiException) as empty:
        client._experiment_api.experiment_service_create_experiment(
            experiment=kfp_server_api.V2beta1Experiment(display_name="x", namespace=""))
    assert empty.value.status == 400 and "empty namespace in multi-user mode" in error_of(empty)["message"]


def test_concurrent_create_experiment_loser_gets_409(server, connect):
    hold = server.hang(method="POST", path=PATH_EXPERIMENTS, release_on=("POST", PATH_EXPERIMENTS))
    first, second = connect(), connect()
    errors: list[ApiException] = []

    def create_first() -> None:
        try:
            first.create_experiment("race", namespace=NAMESPACE)
        except ApiException as error:
            errors.append(error)

    thread = threading.Thread(target=create_first)
    thread.start()
    server.wait_for_request("POST", PATH_EXPERIMENTS)  # first's POST is held now, after its empty lookup
    winner = second.create_experiment("race", namespace=NAMESPACE)
    thread.join(5)

    assert [error.status for error in errors] == [409]
    assert [e["display_name"] for e in server.experiments.values()] == ["race"]
    assert winner.experiment_id in server.experiments and hold.fired == 1
    assert [r.method for r in server.requests] == ["GET", "POST", "GET", "POST"]


def test_list_experiments_paginates_sorts_and_scopes_to_namespace(server, client):
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(25):
        server.add_experiment(f"exp-{i:02}", created_at=start + timedelta(seconds=i))
    server.add_experiment("elsewhere", namespace="team-b")

    first = client.list_experiments(page_size=0, namespace=NAMESPACE)  # 0 means 20
    second = client.list_experiments(page_token=first.next_page_token, page_size=0, namespace=NAMESPACE)
    newest = client.list_experiments(page_size=1, sort_by="created_at desc", namespace=NAMESPACE)

    assert (len(first.experiments), first.total_size, len(second.experiments)) == (20, 25, 5)
    assert second.next_page_token is None
    names = [e.display_name for e in first.experiments + second.experiments]
    assert names == [f"exp-{i:02}" for i in range(25)]
    assert [e.display_name for e in newest.experiments] == ["exp-24"]
    with pytest.raises(ApiException) as negative:
        client.list_experiments(page_size=-1, namespace=NAMESPACE)
    assert negative.value.status == 400
    assert "The page size should be greater than 0" in error_of(negative)["message"]


def test_archive_and_unarchive_experiment(server, client):
    experiment = server.add_experiment("old")
    run = server.add_run(experiment["experiment_id"], state="SUCCEEDED")
    archived = server.add_experiment("older", storage_state="ARCHIVED")

    client.archive_experiment(experiment["experiment_id"])
    assert server.experiments[experiment["experiment_id"]]["storage_state"] == "ARCHIVED"
    assert server.runs[run["run_id"]]["storage_state"] == "ARCHIVED"

    client.unarchive_experiment(experiment["experiment_id"])
    assert server.experiments[experiment["experiment_id"]]["storage_state"] == "AVAILABLE"
    assert server.runs[run["run_id"]]["storage_state"] == "ARCHIVED"  # runs stay archived, like KFP
    assert client.get_experiment(experiment_id=archived["experiment_id"]).storage_state == "ARCHIVED"


# ---- creating runs -----------------------------------------------------------------------------------------


def test_run_from_package_is_stored_pending_in_wire_shape(server, client, package):
    experiment = server.add_experiment("exp")

    result = client.create_run_from_pipeline_package(package, arguments={"n": 3}, run_name="r1",
                                                     experiment_id=experiment["experiment_id"])

    run = server.runs[result.run_id]
    assert result.run_info.state == "PENDING" and result.run_info.finished_at.year == 1970
    assert run["display_name"] == "r1" and run["experiment_id"] == experiment["experiment_id"]
    assert run["runtime_config"] == {"parameters": {"n": 3}}
    assert run["pipeline_spec"]["pipelineInfo"] == {"name": "tiny"}
    assert run["finished_at"] == EPOCH
    assert (run["storage_state"], run["service_account"]) == ("AVAILABLE", "pipeline-runner")
    assert run["state_history"] == [{"update_time": run["created_at"], "state": "PENDING"}]
    assert not {"error", "run_details", "description"} & set(run)
    assert server.experiments[experiment["experiment_id"]]["last_run_created_at"] == run["created_at"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "parameter n is not optional, yet has neither default value nor user provided value"),
        ({"n": "3"}, "input parameter n requires type double or integer, but the parameter value is not of "
                     "number value type"),
        ({"n": 3, "greeting": 5}, "input parameter greeting requires type string, but the input parameter is "
                                  "not of string value type"),
        ({"n": 3, "zzz": 1}, "parameter(s) provided are not required by pipeline: zzz"),
    ],
)
def test_server_validates_run_parameters_against_the_spec(server, client, package, params, message):
    experiment = server.add_experiment("exp")

    with pytest.raises(ApiException) as invalid:
        run_tiny(client, package, experiment["experiment_id"], **params)

    assert invalid.value.status == 400
    body = error_of(invalid)
    assert body["code"] == 3 and body["message"].endswith(message)
    assert body["details"][0]["message"] == message
    assert server.runs == {}


def test_run_in_unknown_experiment_is_404(server, client, package):
    with pytest.raises(ApiException) as unknown:
        run_tiny(client, package, "no-such-experiment", n=1)
    assert unknown.value.status == 404 and error_of(unknown)["details"][0]["message"] == (
        "Experiment no-such-experiment not found.")


def test_run_from_registered_pipeline_version(server, client, package):
    experiment = server.add_experiment("exp")
    server.pipeline_versions["v1"] = yaml.safe_load(Path(package).read_text())

    run_id = client.run_pipeline(experiment_id=experiment["experiment_id"], job_name="from-version",
                                 params={"n": 2}, pipeline_id="p1", version_id="v1").run_id
    with pytest.raises(ApiException) as missing:
        client.run_pipeline(experiment_id=experiment["experiment_id"], job_name="x", params={"n": 2},
                            pipeline_id="p1", version_id="v2")

    reference = server.runs[run_id]["pipeline_version_reference"]
    assert reference == {"pipeline_id": "p1", "pipeline_version_id": "v1"}
    assert "pipeline_spec" not in server.runs[run_id]
    assert missing.value.status == 404


# ---- run states: scripts, lists, terminate -----------------------------------------------------------------


def test_get_run_follows_the_script_and_stays_on_the_last_state(server, client, package):
    experiment = server.add_experiment("exp")
    running = {"task_id": "t1", "display_name": "echo", "state": "RUNNING", "pod_name": "tiny-1-echo",
               "start_time": "2025-01-01T00:00:01Z", "child_tasks": [{"pod_name": "tiny-1-echo"}]}
    done = {**running, "state": "SUCCEEDED", "end_time": "2025-01-01T00:00:09Z",
            "state_history": [{"update_time": "2025-01-01T00:00:01Z", "state": "RUNNING"},
                              {"update_time": "2025-01-01T00:00:09Z", "state": "SUCCEEDED"}]}
    server.script_run([RunStep("RUNNING", [running]), "RUNNING", RunStep("SUCCEEDED", [done])])
    run_id = run_tiny(client, package, experiment["experiment_id"], n=1)

    first = client.get_run(run_id)
    listed = client.list_runs(experiment_id=experiment["experiment_id"]).runs  # lists do not advance
    later = [client.get_run(run_id) for _ in range(3)]

    assert [first.state, *[r.state for r in listed], *[r.state for r in later]] == [
        "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED", "SUCCEEDED"]
    assert first.finished_at.year == 1970 and later[-1].finished_at.year > 1970
    task = later[-1].run_details.task_details[0]
    assert isinstance(task, kfp_server_api.V2beta1PipelineTaskDetail)
    assert (task.run_id, task.display_name, task.state) == (run_id, "echo", "SUCCEEDED")
    assert task.pod_name == "tiny-1-echo"
    assert task.child_tasks[0].pod_name == "tiny-1-echo" and task.end_time.year == 2025
    assert [h["state"] for h in server.runs[run_id]["state_history"]] == ["PENDING", "RUNNING", "SUCCEEDED"]


def test_wait_for_run_completion_follows_a_scripted_failure(server, client, package):
    experiment = server.add_experiment("exp")
    server.script_run(["RUNNING", RunStep("FAILED", error={"code": 2, "message": "exit code 1"})])
    run_id = run_tiny(client, package, experiment["experiment_id"], n=1)

    finished = client.wait_for_run_completion(run_id, timeout=5, sleep_duration=0.01)

    assert finished.state == "FAILED" and finished.state_history[-1].error.message == "exit code 1"
    assert len(server.requests_to("GET", PATH_RUN)) == 2


def test_script_for_an_existing_run_can_advance_on_lists(server, client):
    experiment = server.add_experiment("exp")
    run = server.add_run(experiment["experiment_id"], state="RUNNING")
    script = server.script_run(["SUCCEEDED"], run_id=run["run_id"], advance_on_list=True)

    [listed] = client.list_runs(experiment_id=experiment["experiment_id"]).runs

    assert listed.state == "SUCCEEDED" and script.position == 0


def test_zero_values_inside_structs_survive_get_and_list(server, client):
    experiment = server.add_experiment("exp")
    parameters = {"n": 0, "flag": False, "text": "", "items": []}
    spec = {"root": {"dag": {"tasks": {"t": {"cachingOptions": {}}}}}}
    run_id = server.add_run(experiment["experiment_id"], parameters=parameters, pipeline_spec=spec)["run_id"]

    got = client.get_run(run_id)
    [listed] = client.list_runs(experiment_id=experiment["experiment_id"]).runs

    for run in (got, listed):
        assert run.runtime_config.parameters == parameters and run.pipeline_spec == spec


def test_list_runs_by_experiment_namespace_and_filters(server, client):
    exp_a, exp_b = server.add_experiment("a"), server.add_experiment("b")
    exp_other = server.add_experiment("c", namespace="team-b")
    server.add_run(exp_a["experiment_id"], "nightly", description="kfp-launch key=abc123", state="RUNNING")
    server.add_run(exp_b["experiment_id"], "nightly", state="SUCCEEDED")
    server.add_run(exp_a["experiment_id"], "adhoc", state="PENDING")
    server.add_run(exp_other["experiment_id"], "nightly")

    def names(**kwargs: object) -> list[str]:
        return sorted(r.display_name for r in client.list_runs(**kwargs).runs or [])

    def only(*predicates: dict) -> str:
        return json.dumps({"predicates": list(predicates)})

    assert names(experiment_id=exp_a["experiment_id"]) == ["adhoc", "nightly"]
    assert names(namespace=NAMESPACE) == ["adhoc", "nightly", "nightly"]
    assert names(namespace=NAMESPACE, filter=only(
        {"operation": "EQUALS", "key": "display_name", "string_value": "nightly"})) == ["nightly", "nightly"]
    assert names(namespace=NAMESPACE, filter=only(
        {"operation": 9, "key": "description", "stringValue": "key=abc123"})) == ["nightly"]
    assert names(namespace=NAMESPACE, filter=only(
        {"operation": "IN", "key": "state", "stringValues": {"values": ["PENDING", "SUCCEEDED"]}})) == [
        "adhoc", "nightly"]
    with pytest.raises(ApiException) as unknown_key:
        names(namespace=NAMESPACE, filter=only({"operation": 1, "key": "colour", "stringValue": "x"}))
    assert unknown_key.value.status == 400


def test_terminate_goes_canceling_then_failed_and_only_once(server, client):
    experiment = server.add_experiment("exp")
    run_id = server.add_run(experiment["experiment_id"], state="RUNNING")["run_id"]

    assert client.terminate_run(run_id) == {}
    assert server.runs[run_id]["state"] == "CANCELING"
    states = [client.get_run(run_id).state for _ in range(3)]
    with pytest.raises(ApiException) as again:
        client.terminate_run(run_id)
    with pytest.raises(ApiException) as unknown:
        client.terminate_run("no-such-run")

    assert states == ["CANCELING", "FAILED", "FAILED"]  # real KFP 2.17 ends a terminated run as FAILED
    assert server.runs[run_id]["finished_at"] != EPOCH
    assert again.value.status == 400
    assert f"Failed to terminate a run {run_id}. Row not found" in error_of(again)["message"]
    assert unknown.value.status == 404


def test_terminate_can_be_configured_to_end_canceled(connect):
    with FakeKfpServer(terminated_state="CANCELED", canceling_polls=0) as fake:
        client = connect(fake=fake)
        run_id = fake.add_run(fake.add_experiment("exp")["experiment_id"], state="PENDING")["run_id"]

        client.terminate_run(run_id)

        assert client.get_run(run_id).state == "CANCELED"
        history = [h["state"] for h in fake.runs[run_id]["state_history"]]
        # TerminateRun sets CANCELING without a history entry (storage/run_store.go: "TODO(gkcalat): append
        # CANCELLING to StateHistory"); what stays is the Workflow's deadline patched to 0.
        assert history == ["PENDING", "CANCELED"]
        assert fake.workflows[run_id]["spec"]["activeDeadlineSeconds"] == 0


def test_filter_is_url_decoded_a_second_time_like_the_server(server, client):
    server.add_experiment("a b")

    found = client.get_experiment(experiment_name="a+b", namespace=NAMESPACE)  # '+' reads as a space
    with pytest.raises(ApiException) as bad_escape:
        client.get_experiment(experiment_name="100%zz", namespace=NAMESPACE)

    assert found.display_name == "a b"
    assert json.loads(server.requests[0].param("filter"))["predicates"][0]["stringValue"] == "a+b"
    assert bad_escape.value.status == 400
    assert 'invalid URL escape "%zz"' in error_of(bad_escape)["message"]


# ---- task logs ---------------------------------------------------------------------------------------------


def test_task_log_endpoint_serves_plain_text_and_errors_as_json_with_status_200(server):
    run_id = server.add_run(server.add_experiment("exp")["experiment_id"])["run_id"]
    server.set_task_log(run_id, "tiny-1-echo", "line 1\nline 2\n")

    log_path = f"/apis/v1alpha1/runs/{run_id}/nodes/tiny-1-echo/log"
    status, content_type, text = http(server, log_path + "?follow=false")
    missing_status, _, missing = http(server, f"/apis/v1alpha1/runs/{run_id}/nodes/other/log")

    assert (status, content_type, text) == (200, "text/plain; charset=utf-8", b"line 1\nline 2\n")
    # KFP <= 2.17 writes 200 before reading the log: an unknown pod is a 200 carrying a JSON api.Error.
    assert missing_status == 200 and "pods \"other\" not found" in json.loads(missing)["error_message"]
    assert server.requests_to("GET", PATH_TASK_LOG)[0].headers["authorization"] == "Bearer tok"


# ---- faults ------------------------------------------------------------------------------------------------


def test_burst_of_503_on_run_polls_then_recovery(server, client):
    run_id = server.add_run(server.add_experiment("exp")["experiment_id"])["run_id"]
    burst = server.fail(503, method="GET", path=PATH_RUN, times=2)

    statuses = []
    for _ in range(2):
        with pytest.raises(ApiException) as unavailable:
            client.get_run(run_id)
        statuses.append(unavailable.value.status)
    recovered = client.get_run(run_id)

    assert statuses == [503, 503] and error_of(unavailable)["code"] == 14
    assert recovered.state == "RUNNING" and burst.fired == 2
    assert [r.status for r in server.requests_to("GET", PATH_RUN)] == [503, 503, 200]


def test_hung_request_does_not_block_others_until_released(server, client):
    experiment = server.add_experiment("exp")
    run_id = server.add_run(experiment["experiment_id"])["run_id"]
    hang = server.hang(method="GET", path=PATH_RUN)
    results: list[kfp_server_api.V2beta1Run] = []

    thread = threading.Thread(target=lambda: results.append(client.get_run(run_id)))
    thread.start()
    held = server.wait_for_request("GET", PATH_RUN)
    meanwhile = client.get_experiment(experiment_id=experiment["experiment_id"])
    assert held.status is None and results == []
    hang.release()
    thread.join(5)

    assert meanwhile.display_name == "exp"
    assert [r.state for r in results] == ["RUNNING"]


def test_hung_request_ends_with_the_clients_read_timeout(server, client):
    run_id = server.add_run(server.add_experiment("exp")["experiment_id"])["run_id"]
    server.hang(method="GET", path=PATH_RUN, times=None)

    with pytest.raises(urllib3.exceptions.MaxRetryError) as timed_out:
        client._run_api.run_service_get_run(run_id=run_id, _request_timeout=(1, 0.05))

    assert isinstance(timed_out.value.reason, urllib3.exceptions.ReadTimeoutError)
    assert len(server.requests_to("GET", PATH_RUN)) == 4  # urllib3 retries a GET 3 times


def test_stop_returns_promptly_while_a_request_hangs():
    fake = FakeKfpServer().start()
    fake.hang(times=None)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            urllib.request.urlopen(fake.url + "/apis/v2beta1/healthz", timeout=5)
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=call)
    thread.start()
    fake.wait_for_request()
    started = time.monotonic()
    fake.stop()
    elapsed = time.monotonic() - started
    thread.join(5)

    assert elapsed < 1 and not thread.is_alive() and len(outcome) == 1
    assert fake.requests[0].status is None


def test_dropped_connections_post_raises_get_is_retried(server, client):
    experiment = server.add_experiment("exp")
    server.drop(method="POST", path=PATH_EXPERIMENTS)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        client._experiment_api.experiment_service_create_experiment(
            experiment=kfp_server_api.V2beta1Experiment(display_name="new", namespace=NAMESPACE))
    assert [e["display_name"] for e in server.experiments.values()] == ["exp"]

    server.drop(method="GET", path=PATH_EXPERIMENT)  # once: urllib3 retries silently
    assert client.get_experiment(experiment_id=experiment["experiment_id"]).display_name == "exp"
    assert [r.status for r in server.requests_to("GET", PATH_EXPERIMENT)] == [None, 200]

    server.drop(method="GET", path=PATH_EXPERIMENT, times=None)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        client.get_experiment(experiment_id=experiment["experiment_id"])
    assert len(server.requests_to("GET", PATH_EXPERIMENT)) == 2 + 4


def test_create_run_can_fail_after_the_run_was_stored(server, client, package):
    experiment_id = server.add_experiment("exp")["experiment_id"]
    server.fail(500, method="POST", path=PATH_RUNS, after_handling=True)
    with pytest.raises(ApiException) as internal:
        run_tiny(client, package, experiment_id, n=1)
    assert internal.value.status == 500 and len(server.runs) == 1

    server.drop(method="POST", path=PATH_RUNS, after_handling=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        run_tiny(client, package, experiment_id, n=2)
    assert sorted(r["runtime_config"]["parameters"]["n"] for r in server.runs.values()) == [1, 2]


def test_unauthorized_from_the_nth_request_on(server, client):
    server.unauthorized_after(2)

    client.list_experiments(namespace=NAMESPACE)
    client.list_experiments(namespace=NAMESPACE)
    with pytest.raises(ApiException) as rejected:
        client.list_experiments(namespace=NAMESPACE)

    assert rejected.value.status == 401 and error_of(rejected)["code"] == 16
    assert [r.status for r in server.requests] == [200, 200, 401]


def test_token_rotation_only_accepts_the_configured_tokens(server, connect):
    server.accepted_tokens = {"new"}

    with pytest.raises(ApiException) as stale:
        connect("old").list_experiments(namespace=NAMESPACE)
    connect("new").list_experiments(namespace=NAMESPACE)

    assert stale.value.status == 401 and error_of(stale)["code"] == 16
    assert [(r.bearer_token, r.status) for r in server.requests] == [("old", 401), ("new", 200)]


def test_fault_can_target_one_token(server, connect):
    server.fail(403, token="tok", times=None)

    with pytest.raises(ApiException) as denied:
        connect("tok").list_experiments(namespace=NAMESPACE)
    connect("other").list_experiments(namespace=NAMESPACE)

    assert denied.value.status == 403 and error_of(denied)["code"] == 7


def test_html_login_page_gives_the_client_an_empty_model(server, client):
    experiment_id = server.add_experiment("exp")["experiment_id"]
    server.html_login(method="GET", path=PATH_EXPERIMENT, times=2)

    got = client.get_experiment(experiment_id=experiment_id)
    status, content_type, page = http(server, f"/apis/v2beta1/experiments/{experiment_id}")

    assert got.experiment_id is None and got.display_name is None
    assert status == 200 and content_type.startswith("text/html") and b"<form" in page


# ---- single-user mode --------------------------------------------------------------------------------------


def test_single_user_server_drops_namespaces_and_uses_default_experiment(connect, package):
    with FakeKfpServer(multi_user=False) as fake:
        client = connect(fake=fake)
        experiment = client.create_experiment("exp", namespace=NAMESPACE)
        spec = yaml.safe_load(Path(package).read_text())
        status, _, body = http(fake, "/apis/v2beta1/runs", method="POST",
                               body={"display_name": "r", "pipeline_spec": spec,
                                     "runtime_config": {"parameters": {"n": 1}}})

        assert "namespace" not in fake.experiments[experiment.experiment_id]
        assert status == 200
        default_id = json.loads(body)["experiment_id"]
        assert fake.experiments[default_id]["display_name"] == "Default"
        assert kfp.Client(host=fake.url, existing_token="tok").get_kfp_healthz().multi_user is False
