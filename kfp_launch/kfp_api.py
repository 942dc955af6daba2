"""The only ``kfp.Client`` user: experiments, runs, terminate, task logs, with our own error types.

Every call goes through the client's generated API objects with ``_request_timeout`` (the SDK passes
none anywhere, so a stuck request hangs forever: docs/kfp-backend-notes.md, 'Request timeouts';
kubeflow/pipelines#8661) and ``_preload_content=False``, so we see the raw response: a 200 that is an
HTML login page (an auth proxy) is an auth failure, not a model full of ``None``\\s (``kfp_server_api``
``ApiClient.deserialize``; docs/kfp-backend-notes.md, 'Login pages with status 200'). Responses are read
as the server's JSON (snake_case, empty fields omitted: kubeflow/pipelines
backend/src/apiserver/common/utils.go (2.17.0), ``CustomMarshaler``) into our plain models; no vendor
type leaves this module.

Errors are translated once, here (docs/kfp-backend-notes.md, 'Errors and status codes'): HTTP 401/403
and login pages -> :class:`KfpAuthError`; 408/429/5xx, refused/reset/dropped connections and timeouts ->
:class:`TransientKfpError` (retried by the caller); other statuses -> :class:`KfpApiError` (409 ->
:class:`KfpConflictError`).
"""

from __future__ import annotations

import json
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kfp_launch.connection import Connection
from kfp_launch.errors import (
    KfpApiError,
    KfpAuthError,
    KfpConflictError,
    KfpLaunchError,
    KfpTlsError,
    TransientKfpError,
)
from kfp_launch.failures import Failure, classify
from kfp_launch.kfp_responses import json_body, parse_experiment, parse_run, server_message
from kfp_launch.models import Experiment, RunStatus

# kfp.Client reads ~/.config/kfp/context.json (namespace, auth headers) in its constructor (kubeflow/pipelines
# sdk/python/kfp/client/client.py (2.17.0), Client._LOCAL_KFP_CONTEXT; docs/kfp-backend-notes.md, 'Client
# construction'): we point it at a path that does not exist (nothing creates it) so only our explicit
# settings apply.
_NO_CONTEXT_FILE = "/nonexistent/kfp-launch/kfp-context.json"
# With an empty namespace the constructor calls GET /healthz, retrying 5 times with 5 s sleeps, and may
# write a context file (client.py, Client.__init__ and get_kfp_healthz). Any other namespace means zero
# requests; we pass the real namespace on every call ourselves, so the constructor's value is never sent.
_CONSTRUCTOR_NAMESPACE = "kfp-launch-explicit-namespace"


class KfpApi:
    """A session with one KFP API server.

    Args:
        connection: where and how to connect (secrets included; never logged).
        connect_timeout_s: TCP connect timeout per request, seconds.
        read_timeout_s: read timeout per request, seconds.
    """

    def __init__(self, connection: Connection, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0) -> None:
        import kfp

        self.connection = connection
        self.namespace = connection.namespace
        self._timeout = (connect_timeout_s, read_timeout_s)
        credentials = None
        if connection.token_file and not connection.token:
            from kfp.client import ServiceAccountTokenVolumeCredentials

            # Its hook runs before every request, so a rotated projected token is picked up
            # (docs/kfp-backend-notes.md, 'Credentials and TLS').
            credentials = ServiceAccountTokenVolumeCredentials(path=connection.token_file)
        with _isolated_client_construction(kfp.Client):
            self._client = kfp.Client(
                host=connection.host,
                namespace=connection.namespace or _CONSTRUCTOR_NAMESPACE,
                existing_token=connection.token,
                credentials=credentials,
                cookies=connection.cookie,
                proxy=connection.proxy,
                ssl_ca_cert=connection.ca_bundle,
            )
        self._experiments = self._client._experiment_api
        self._runs = self._client._run_api
        _no_hidden_retries(self._runs.api_client)
        self.requests_made = 0

    # -- experiments ---------------------------------------------------------------------------

    def find_experiments(self, name: str) -> list[Experiment]:
        """The experiments of our namespace the server finds by this name (``GET /experiments?filter=``
        with EQUALS): on MySQL, names that differ only in case or accents match too (its default collation).

        Raises:
            KfpAuthError, TransientKfpError, KfpApiError: as the module says.
        """
        data = self._call(
            self._experiments.experiment_service_list_experiments,
            f'look up experiment "{name}"',
            filter=_name_filter(name),
            namespace=self.namespace,
            page_size=10,
        )
        return [parse_experiment(e) for e in data.get("experiments") or []]

    def create_experiment(self, name: str, description: str) -> Experiment:
        """Create an experiment (``POST /experiments``).

        Raises:
            KfpConflictError: it exists already (HTTP 409; e.g. a concurrent job created it).
        """
        import kfp_server_api

        body = kfp_server_api.V2beta1Experiment(display_name=name, description=description, namespace=self.namespace)
        data = self._call(
            self._experiments.experiment_service_create_experiment,
            f'create experiment "{name}"',
            experiment=body,
            write=True,
        )
        return parse_experiment(data)

    def unarchive_experiment(self, experiment_id: str) -> None:
        """Unarchive an experiment (``POST /experiments/{id}:unarchive``)."""
        self._call(
            self._experiments.experiment_service_unarchive_experiment,
            f"unarchive experiment {experiment_id}",
            experiment_id=experiment_id,
            write=True,
            expect_json=False,
        )

    # -- runs ----------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        experiment_id: str,
        display_name: str,
        description: str,
        package_path: str,
        parameters: Mapping[str, object],
        pipeline_root: str | None,
        enable_caching: bool | None,
        service_account: str | None,
    ) -> RunStatus:
        """Submit a run of a pipeline package (``POST /runs``) with a description.

        The request body is built by the SDK's own ``_create_job_config`` (the same spec, caching
        override and runtime config as ``Client.run_pipeline``), which cannot set a description itself.

        Raises:
            TransientKfpError: with ``maybe_applied`` when the run may exist despite the error.
        """
        import kfp_server_api

        config = self._client._create_job_config(
            params=dict(parameters),
            pipeline_package_path=package_path,
            pipeline_id=None,
            version_id=None,
            enable_caching=enable_caching,
            cache_key=None,
            pipeline_root=pipeline_root,
        )
        body = kfp_server_api.V2beta1Run(
            experiment_id=experiment_id,
            display_name=display_name,
            description=description,
            pipeline_spec=config.pipeline_spec,
            runtime_config=config.runtime_config,
            service_account=service_account,
        )
        what = f'create run "{display_name}"'
        try:
            return parse_run(self._call(self._runs.run_service_create_run, what, run=body, write=True))
        except KfpApiError as exc:
            if exc.status:  # a refusal: the run was not created
                raise
            # A 2xx whose body is not a run: it may have been stored; the caller finds it by its key.
            raise TransientKfpError(exc.message, maybe_applied=True) from None

    def get_run(self, run_id: str, *, timeout_s: float | None = None) -> RunStatus:
        """Read a run with its task details (``GET /runs/{id}``), within ``timeout_s`` seconds if given."""
        data = self._call(
            self._runs.run_service_get_run, f"read run {run_id}", run_id=run_id, timeout=self._bounded(timeout_s)
        )
        return parse_run(data)

    def list_runs(
        self, experiment_id: str, *, display_name: str | None = None, page_size: int = 100
    ) -> list[RunStatus]:
        """The newest runs of an experiment (``GET /runs?experiment_id=``), optionally by exact name.

        Args:
            experiment_id: the experiment.
            display_name: only runs with exactly this name.
            page_size: how many (the server caps it at 200).
        """
        kwargs: dict[str, Any] = {"experiment_id": experiment_id, "page_size": page_size, "sort_by": "created_at desc"}
        if display_name is not None:
            kwargs["filter"] = _name_filter(display_name)
        data = self._call(self._runs.run_service_list_runs, f"list runs of experiment {experiment_id}", **kwargs)
        return [parse_run(r) for r in data.get("runs") or []]

    def recent_runs(self, *, page_size: int = 200) -> list[RunStatus]:
        """The newest runs of our namespace (``GET /runs?namespace=&sort_by=created_at desc``), at most
        ``page_size`` (the server's cap is 200)."""
        data = self._call(
            self._runs.run_service_list_runs,
            f"list the runs of namespace {self.namespace or '(single-user)'}",
            namespace=self.namespace,
            page_size=page_size,
            sort_by="created_at desc",
        )
        return [parse_run(r) for r in data.get("runs") or []]

    def list_runs_by_id(
        self, experiment_id: str, run_ids: list[str], *, timeout_s: float | None = None
    ) -> list[RunStatus]:
        """Read many runs with one request (``GET /runs?experiment_id=&filter=`` with ``run_id IN [...]``),
        so polling N runs costs one request per tick, not N. At most 200 ids (the server's page cap).
        """
        if not run_ids:
            return []
        if len(run_ids) > 200:
            raise ValueError("at most 200 runs per request")
        predicate = {"key": "run_id", "operation": "IN", "string_values": {"values": list(run_ids)}}
        data = self._call(
            self._runs.run_service_list_runs,
            f"read {len(run_ids)} runs of experiment {experiment_id}",
            experiment_id=experiment_id,
            page_size=len(run_ids),
            filter=json.dumps({"predicates": [predicate]}),
            timeout=self._bounded(timeout_s),
        )
        return [parse_run(r) for r in data.get("runs") or []]

    def terminate_run(self, run_id: str, *, timeout_s: float | None = None) -> None:
        """Ask KFP to terminate a run (``POST /runs/{id}:terminate``; the run goes CANCELING).

        Args:
            run_id: the run.
            timeout_s: a shorter per-request timeout (e.g. while handling SIGTERM).

        Raises:
            KfpApiError: HTTP 400 when the run is no longer active (KFP answers "Row not found").
        """
        self._call(
            self._runs.run_service_terminate_run,
            f"terminate run {run_id}",
            run_id=run_id,
            write=True,
            expect_json=False,
            timeout=self._bounded(timeout_s),
        )

    def server_version(self, *, timeout_s: float | None = None) -> str | None:
        """The API server's version from ``GET /apis/v2beta1/healthz``: ``tag_name`` from the API server (a
        handler of its own in backend/src/apiserver/main.go, 2.17.0), ``apiServerTagName`` when the host is the
        KFP UI, which answers that path itself (frontend/server/handlers/healthz.ts); None when neither says
        one, the path is unknown (404) or the body is not JSON.

        Raises:
            KfpAuthError: 401/403, or an HTML login page. TransientKfpError: as for any request.
        """
        import kfp_server_api

        healthz = kfp_server_api.HealthzServiceApi(self._runs.api_client).healthz_service_get_healthz
        try:
            document = self._call(healthz, "read the server's version", timeout=self._bounded(timeout_s))
        except KfpApiError as exc:
            if exc.status in (0, 404):  # no such path, or a body that is not JSON: the version is unknown
                return None
            raise
        tag = document.get("tag_name") or document.get("apiServerTagName")
        return str(tag) if tag else None

    def task_log(self, run_id: str, node_id: str, *, timeout_s: float | None = None) -> str:
        """A task's log as text (``GET /apis/v1alpha1/runs/{run}/nodes/{node}/log``: kubeflow/pipelines
        backend/src/apiserver/server/run_log_server.go (2.17.0), ``ReadRunLogV1``): the ``main`` container
        of the pod named ``node_id`` (backend ``ResourceManager.ReadLog``), whole: the handler reads ``follow``
        from the path variables, where the route has none, so it is never set.

        Up to 2.17 the handler writes status 200 before reading the log, so a log it cannot read (a pod not
        created yet, or gone with no log archive) is a 200 whose body is the JSON ``api.Error``
        (``{"error_message": ..., "error_details": ...}``); that body is an error here, not log text.
        Backends with kubeflow/pipelines#13684 (after 2.17) authorize the read first: HTTP 403.

        Raises:
            KfpApiError: the log cannot be read (an error body, or a 404). KfpAuthError: 401/403.
            TransientKfpError: 5xx, timeouts, dropped connections.
        """
        path = f"/apis/v1alpha1/runs/{run_id}/nodes/{node_id}/log"
        body = self._get_raw(path, f"read the log of {node_id}", "text/plain", timeout_s=timeout_s)
        error = _log_error(body)
        if error is not None:
            raise KfpApiError(f"Kubeflow could not read the log of {node_id}: {error}")
        return body.decode("utf-8", errors="replace")

    def workflow_terminated(self, run_id: str, *, timeout_s: float | None = None) -> bool | None:
        """Whether KFP terminated the run's workflow: True when its stored Argo Workflow has
        ``spec.activeDeadlineSeconds`` 0, which is how ``TerminateWorkflow`` stops it
        (backend/src/apiserver/resource/resource_manager.go (2.17.0)) and what stays after the run ends FAILED,
        while the CANCELING state may never have been seen (``RunStore.TerminateRun`` records no history).
        Read from the v1beta1 run detail (``GET /apis/v1beta1/runs/{id}``, ``pipeline_runtime.workflow_manifest``).

        Returns:
            True or False from the manifest; None when it cannot tell (refused, absent, unreadable).
        """
        try:
            path, what = f"/apis/v1beta1/runs/{run_id}", f"read the workflow of run {run_id}"
            body = self._get_raw(path, what, "application/json", timeout_s=timeout_s)
            manifest = json.loads(json.loads(body)["pipeline_runtime"]["workflow_manifest"])
            deadline = manifest["spec"].get("activeDeadlineSeconds")
        except (KfpLaunchError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return bool(deadline == 0)

    def _get_raw(self, path: str, what: str, accept: str, *, timeout_s: float | None = None) -> bytes:
        """GET a path outside the generated v2beta1 API (same client, auth headers and timeout); the body."""
        with self._translated(what, write=False):
            raw = self._runs.api_client.call_api(
                path,
                "GET",
                header_params={"Accept": accept},
                auth_settings=["Bearer"],
                _preload_content=False,
                _request_timeout=self._bounded(timeout_s) or self._timeout,
                _return_http_data_only=True,
            )
            body = bytes(raw.data or b"")
        self.requests_made += 1
        return body

    # -- plumbing ------------------------------------------------------------------------------

    def _bounded(self, timeout_s: float | None) -> tuple[float, float] | None:
        """The (connect, read) timeout of a request that must end within ``timeout_s`` seconds."""
        if timeout_s is None:
            return None
        limit = max(timeout_s, 0.05)
        connect = min(self._timeout[0], limit / 2)  # connect and read together stay within the limit
        return (connect, min(self._timeout[1], limit - connect))

    def _call(
        self,
        method: Callable[..., Any],
        what: str,
        *,
        write: bool = False,
        expect_json: bool = True,
        timeout: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        with self._translated(what, write=write):
            raw = method(_preload_content=False, _request_timeout=timeout or self._timeout, **kwargs)
            body = bytes(raw.data or b"")  # read inside: a connection cut mid-body is a transport error too
        self.requests_made += 1
        try:
            return json_body(raw, body, what, expect_json=expect_json)
        except KfpAuthError as exc:  # a login page: say what to set, as for a 401
            raise KfpAuthError(exc.message, hint=self.connection.auth_hint()) from None

    @contextmanager
    def _translated(self, what: str, *, write: bool) -> Iterator[None]:
        import kfp_server_api
        import urllib3

        try:
            # Only the generated low-level API is used: it prints nothing (the high-level Client
            # methods print "Run details: <url>" to stdout: sdk/python/kfp/client/client.py (2.17.0),
            # Client.run_pipeline).
            yield
        except kfp_server_api.ApiException as exc:
            raise _api_error(exc, what, self.connection, write=write) from None
        except urllib3.exceptions.HTTPError as exc:
            raise _transport_error(exc, what, self.connection, write=write) from None


def _no_hidden_retries(api_client: Any) -> None:
    """Make each request one attempt: urllib3 retries a failed connection or read 3 times by itself
    (``urllib3.util.Retry`` default; ``kfp_server_api/rest.py`` passes no ``retries`` unless configured), which
    multiplies every timeout by 4 and hides the time a request takes from the deadline. Our own retry rule
    (``polling.call_with_retry``) decides instead. Redirects are still followed (an auth proxy's login page)."""
    import urllib3

    pool_manager = api_client.rest_client.pool_manager
    pool_manager.connection_pool_kw["retries"] = urllib3.util.Retry(
        total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_redirect=False
    )


@contextmanager
def _isolated_client_construction(client_class: Any) -> Iterator[None]:
    original = client_class._LOCAL_KFP_CONTEXT
    client_class._LOCAL_KFP_CONTEXT = _NO_CONTEXT_FILE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the constructor's FutureWarning on every call
            yield
    finally:
        client_class._LOCAL_KFP_CONTEXT = original


def _name_filter(name: str) -> str:
    # The client's own form (sdk/python/kfp/client/client.py (2.17.0), Client.get_experiment): operation 1 = EQUALS.
    return json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})


def _api_error(exc: Any, what: str, connection: Connection, *, write: bool) -> Exception:
    status = int(exc.status or 0)
    message = server_message(exc.body)
    if status in (401, 403):
        verb = "refused the credentials" if status == 401 else "denied permission"
        return KfpAuthError(
            f"Kubeflow {verb} to {what}: HTTP {status} {message}".rstrip(),
            hint=connection.auth_hint(),
        )
    kind = classify(status, message)
    if kind == Failure.TRANSIENT:
        return TransientKfpError(f"Kubeflow failed to {what}: HTTP {status} {message}".rstrip(), maybe_applied=write)
    error_class = KfpConflictError if kind == Failure.CONFLICT else KfpApiError
    if status == 404:
        return KfpApiError(
            f"Kubeflow could not {what}: not found (HTTP 404) {message}".rstrip(),
            hint="check the id (kfp-launch runs lists this branch's runs) and the namespace (KFP_NAMESPACE).",
            status=404,
        )
    hint = "nothing was changed by this request."
    if status >= 500:
        hint = (
            "the server cannot store or run this as sent, so it was not retried; see README, 'Transient or permanent'."
        )
    return error_class(f"Kubeflow refused to {what}: HTTP {status} {message}".rstrip(), hint=hint, status=status)


def _transport_error(exc: Exception, what: str, connection: Connection, *, write: bool) -> Exception:
    reason = getattr(exc, "reason", None)
    import ssl

    if isinstance(reason, ssl.SSLError) or "SSL" in type(reason).__name__:
        return KfpTlsError(
            f"TLS failed to {what} at {connection.host}: {reason}",
            hint="if Kubeflow uses a private CA, set KFP_CA_BUNDLE to its PEM file; verification is never skipped.",
        )
    name = type(reason or exc).__name__
    hint = "check KFP_HOST and that Kubeflow's API server is up and reachable from here (proxy: HTTPS_PROXY/NO_PROXY)."
    if "NameResolution" in name:
        host = urllib.parse.urlsplit(connection.host).hostname
        return TransientKfpError(
            f"Could not reach Kubeflow to {what}: the host name {host} does not resolve (DNS lookup failed)",
            hint=f"check KFP_HOST ({connection.host}) for a typo, and that this runner can resolve it.",
            maybe_applied=write,
        )
    if "Timeout" in name:
        name = f"no answer in time ({name})"
    return TransientKfpError(
        f"Could not reach Kubeflow at {connection.host} to {what}: {name}", hint=hint, maybe_applied=write
    )


def _log_error(body: bytes) -> str | None:
    """The message of an ``api.Error`` JSON body the log endpoint answered with status 200 (KFP <= 2.17,
    backend/src/apiserver/server/run_log_server.go ``writeErrorToResponse``), or None for log text."""
    if not body.startswith(b'{"error_'):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or not set(document) <= {"error_message", "error_details"}:
        return None
    return str(document.get("error_message") or "unknown error")
