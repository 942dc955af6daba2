"""An in-process fake of the Kubeflow Pipelines 2.17 REST API server, for tests.

The real ``kfp.Client`` talks to it unchanged: plain HTTP/1.1 JSON under ``/apis/v2beta1`` (experiments, runs,
healthz) plus the task-log endpoint under ``/apis/v1alpha1``. It runs in a daemon thread on ``127.0.0.1:0``,
so tests in the same process and subprocesses (given ``server.url``) can reach it.

State is plain data in the wire shape (v2beta1 snake_case JSON, empty fields omitted like the server's
``protojson{UseProtoNames: true, EmitUnpopulated: false}``): ``experiments`` and ``runs`` are dicts keyed by
id, ``requests`` lists every request that arrived, in order. Tests assert on those, not on mocks.

Beyond the API itself a test can

* script each run's state sequence (``script_run``), advanced one step per ``GET`` of that run;
* pre-create experiments and runs (``add_experiment``, ``add_run``) and task logs (``set_task_log``);
* inject faults matched by method + path regex (``fail``, ``drop``, ``hang``, ``html_login``,
  ``unauthorized_after``, or ``add_fault`` with a ``Fault``), before or after the request is handled;
* accept only some bearer tokens (``accepted_tokens``), to simulate token rotation.

Modeled (v2beta1 unless noted):

* ``GET /healthz``; experiments: list (namespace, filter, page_size/page_token, sort_by), get, create
  (409 on a duplicate (display_name, namespace); 500 past the varchar(128)/varchar(63) columns),
  ``:archive`` (also archives the runs) and ``:unarchive``;
* runs: create from ``pipeline_spec`` or a ``pipeline_version_reference`` registered in
  ``pipeline_versions`` (400 for the server's parameter checks, 404 for an unknown experiment, new run
  PENDING), get, list (by experiment_id or namespace, filter, pages), ``:terminate`` (CANCELING, then
  ``terminated_state``, FAILED by default like KFP 2.17);
* ``GET /apis/v1alpha1/runs/{run_id}/nodes/{node_id}/log`` (text/plain, the whole log; errors are a 200
  with a JSON ``api.Error`` body, as up to 2.17; logs grow with ``RunStep.logs``);
* filters decoded twice like ``parseAPIFilter``; operations EQUALS, NOT_EQUALS, GREATER_THAN(_EQUALS),
  LESS_THAN(_EQUALS), IN, IS_SUBSTRING on the keys of the server's APIToModelFieldMap;
* multi-user (default) or single-user namespace rules; gRPC error bodies with the gateway's HTTP mapping.

Not modeled: pipelines and pipeline upload, recurring runs, run archive/delete/retry, experiment delete,
artifacts, ``view=FULL``, authorization per namespace (an accepted token may do anything), chunked request bodies, task states after a
terminate (tasks keep their last scripted details), and whether an empty ``run_details`` or
``runtime_config`` is sent as ``{}`` (omitted here, so clients must cope with None). Error ``message``
texts follow the backend's wrapping chain in form; only the key phrases are exact.

Sources: the kubeflow/pipelines backend at tag 2.17.0 (``backend/src/apiserver``; file names below are
relative to it; messages are approximations of its wording, codes and structure follow it), the kfp 2.17.3
SDK, and ``docs/kfp-backend-notes.md`` in this repository (cited with the heading of the note).

Example::

    with FakeKfpServer() as server:
        server.script_run(states=["RUNNING", "SUCCEEDED"])
        client = kfp.Client(host=server.url, namespace="team-a", existing_token="tok")
        ...
        assert server.requests[-1].headers["authorization"] == "Bearer tok"
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

from tests.loopback import LoopbackHandler, LoopbackServer

__all__ = [
    "EPOCH",
    "FINISHED_STATES",
    "PATH_EXPERIMENT",
    "PATH_EXPERIMENTS",
    "PATH_HEALTHZ",
    "PATH_RUN",
    "PATH_RUNS",
    "PATH_RUN_TERMINATE",
    "PATH_RUN_V1",
    "PATH_TASK_LOG",
    "RUN_STATES",
    "FakeKfpServer",
    "Fault",
    "RecordedRequest",
    "RunScript",
    "RunStep",
]

# Path regexes (matched with re.fullmatch against the request path, query excluded), handy for faults.
TEXT_COLUMN_CHARS = 255
"""Characters of a ``varchar(255)`` text column of backends up to 2.14 (see ``FakeKfpServer(text_columns=)``)."""

PATH_HEALTHZ = r"/apis/v2beta1/healthz"
PATH_EXPERIMENTS = r"/apis/v2beta1/experiments"
PATH_EXPERIMENT = r"/apis/v2beta1/experiments/[^/:]+"
PATH_RUNS = r"/apis/v2beta1/runs"
PATH_RUN = r"/apis/v2beta1/runs/[^/:]+"
PATH_RUN_TERMINATE = r"/apis/v2beta1/runs/[^/:]+:terminate"
PATH_TASK_LOG = r"/apis/v1alpha1/runs/[^/]+/nodes/[^/]+/log"
PATH_RUN_V1 = r"/apis/v1beta1/runs/[^/:]+"

# v1beta1 run status strings (model.RuntimeState.ToV1: the Argo phases).
_V1_STATUS = {"PENDING": "Pending", "RUNNING": "Running", "SUCCEEDED": "Succeeded", "FAILED": "Failed",
              "SKIPPED": "Skipped", "CANCELING": "Terminating", "CANCELED": "Canceled", "PAUSED": "Paused"}

# A zero google.protobuf.Timestamp as protojson prints it (docs/kfp-backend-notes.md, 'Response JSON').
EPOCH = "1970-01-01T00:00:00Z"
RUN_STATES = frozenset(
    {"RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "SUCCEEDED", "SKIPPED", "FAILED", "CANCELING",
     "CANCELED", "PAUSED"}
)  # V2beta1RuntimeState: backend/api/v2beta1/run.proto, enum RuntimeState
FINISHED_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})  # these set finished_at
TERMINABLE_STATES = frozenset({"PENDING", "RUNNING", "PAUSED", "RUNTIME_STATE_UNSPECIFIED"})  # run_store.go

# gRPC code -> HTTP status, grpc-gateway's HTTPStatusFromCode (grpc-ecosystem/grpc-gateway v2.28.0,
# runtime/errors.go; the version in kubeflow/pipelines' go.mod at 2.17.0).
GRPC_TO_HTTP = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
    12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}
# HTTP status -> the gRPC code an injected error body carries (the inverse for the common statuses).
HTTP_TO_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 499: 1, 500: 13, 501: 12, 503: 14, 504: 4}

_STATUS_TYPE = "type.googleapis.com/google.rpc.Status"
_DEFAULT_PAGE_SIZE, _MAX_PAGE_SIZE = 20, 200  # list_request_util.go
_OPERATIONS = {
    "OPERATION_UNSPECIFIED": 0, "EQUALS": 1, "NOT_EQUALS": 2, "GREATER_THAN": 3, "GREATER_THAN_EQUALS": 5,
    "LESS_THAN": 6, "LESS_THAN_EQUALS": 7, "IN": 8, "IS_SUBSTRING": 9,
}  # backend/api/v2beta1/filter.proto
_OPERATION_NAMES = {number: name for name, number in _OPERATIONS.items()}
_PREDICATE_VALUE_FIELDS = (
    "int_value", "long_value", "string_value", "timestamp_value",
    "int_values", "long_values", "string_values",
)
_TIMESTAMP_FIELDS = frozenset({"created_at", "finished_at", "scheduled_at", "last_run_created_at"})
# API filter/sort key -> wire field of the stored dicts (APIToModelFieldMap in model/experiment.go, run.go).
_EXPERIMENT_FILTER_KEYS = {
    "id": "experiment_id", "experiment_id": "experiment_id", "name": "display_name",
    "display_name": "display_name", "description": "description", "created_at": "created_at",
    "namespace": "namespace", "storage_state": "storage_state", "last_run_created_at": "last_run_created_at",
}
_RUN_FILTER_KEYS = {
    "id": "run_id", "run_id": "run_id", "name": "display_name", "display_name": "display_name",
    "description": "description", "created_at": "created_at", "scheduled_at": "scheduled_at",
    "finished_at": "finished_at", "storage_state": "storage_state", "namespace": "namespace",
    "experiment_id": "experiment_id", "state": "state", "recurring_run_id": "recurring_run_id",
}
_EXPERIMENT_SORT_KEYS = {"": "created_at", "id": "experiment_id", "experiment_id": "experiment_id",
                         "name": "display_name", "display_name": "display_name", "created_at": "created_at"}
_RUN_SORT_KEYS = {"": "created_at", "name": "display_name", "display_name": "display_name",
                  "created_at": "created_at"}

_LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Log in</title></head><body>"
    '<form method="post" action="/dex/auth/local"><input name="login"><input name="password" type="password">'
    "<button>Login</button></form></body></html>"
)


# ------------------------------------------------------------------------------------------------------------
# Public value types


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as it reached the fake, recorded on arrival (before any fault applies).

    Attributes:
        method: HTTP method, upper case (``"GET"``).
        path: request path as sent, without the query (``"/apis/v2beta1/runs/r1"``).
        query: query parameters after ONE decoding (``parse_qs``, blank values kept), e.g. the client's
            ``filter`` is the JSON text here; the server's second decoding of ``filter`` is not applied.
        raw_query: the query string exactly as sent (``"filter=%7B...&namespace=team-a"``).
        headers: request headers with lower-case names (repeated headers joined with ``", "``); the bearer
            token is in ``headers["authorization"]``, cookies in ``headers["cookie"]``.
        body: the JSON body parsed, or None when there was no body or it was not JSON.
        time: arrival time, seconds since the epoch (``time.time()``).
        raw_body: the body bytes as sent.
        status: HTTP status answered, or None while the request is in flight or when the connection was
            dropped without a response.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: dict[str, str]
    body: Any
    time: float
    raw_body: bytes = b""
    status: int | None = None

    @property
    def bearer_token(self) -> str | None:
        """The token of an ``authorization: Bearer <token>`` header, or None."""
        value = self.headers.get("authorization", "")
        return value[len("Bearer "):] if value.startswith("Bearer ") else None

    def param(self, name: str) -> str | None:
        """The first value of query parameter NAME (decoded once), or None if it was not sent."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class RunStep:
    """One step of a scripted run: the state shown and, optionally, the task details and a state error.

    Attributes:
        state: a V2beta1RuntimeState name (``"RUNNING"``); ``RUNTIME_STATE_UNSPECIFIED`` omits ``state``.
        task_details: V2beta1PipelineTaskDetail dicts put in ``run_details.task_details`` (keys such as
            ``task_id``, ``display_name``, ``state``, ``error``, ``pod_name``, ``child_tasks``,
            ``state_history``, ``create_time``/``start_time``/``end_time``); None keeps the current tasks.
        error: a google.rpc.Status dict (``{"code": 2, "message": "..."}``) stored with the
            ``state_history`` entry of this state, where the real server keeps failure detail
            (server/api_converter.go, toApiRun; docs/kfp-backend-notes.md, 'Where a failed run says why').
        logs: pod name -> text the pod writes when this step applies, appended to that pod's log of this
            run (a task's log grows while it runs; the text may end mid-line, as a real log read can).
    """

    state: str
    task_details: Sequence[Mapping[str, Any]] | None = None
    error: Mapping[str, Any] | None = None
    logs: Mapping[str, str] | None = None


@dataclass
class RunScript:
    """The remaining state sequence of one run; advanced by the server, stays on the last step.

    Attributes:
        steps: the steps, in order; step 0 is shown by the first GET after the script applies.
        advance_on_list: if True a list response that includes the run also advances it (default: only
            ``GET /runs/{id}`` advances, so lists report the current state without changing it).
        position: index of the step currently shown, -1 before the first advance.
    """

    steps: list[RunStep]
    advance_on_list: bool = False
    position: int = -1


_FAULT_KINDS = ("status", "drop", "hang", "html")


@dataclass
class Fault:
    """A fault applied to matching requests; add with ``FakeKfpServer.add_fault`` or the shortcuts.

    A request matches when ``method`` (None: any) equals its method, ``path`` fullmatches its path and, if
    ``token`` is set, its bearer token equals ``token``. The first ``skip`` matching requests pass; the next
    ``times`` (None: all further) get the fault. Faults are checked in the order added; the first that fires
    wins. Counters are updated under the server lock, so a fault is thread-safe.

    Attributes:
        kind: ``"status"`` (answer ``status`` with ``body``, default a gRPC error JSON), ``"drop"`` (close
            the connection without a response), ``"hang"`` (block until ``release()``, a request matching
            ``release_on`` has been answered, or the server stops; then go on normally, or drop on stop),
            ``"html"`` (answer 200 with an HTML login page, like an auth proxy).
        method: HTTP method to match, or None for any.
        path: regex fullmatched against the request path (see the ``PATH_*`` constants).
        skip: matching requests to let through before firing.
        times: matching requests to fault after ``skip``; None means every one.
        status: HTTP status for ``kind="status"``.
        body: response body for ``kind="status"``; None builds a gRPC error JSON for ``status``.
        content_type: content type of ``body``.
        after_handling: if True the request is first handled normally (state changes happen, e.g. the run
            is stored) and only then is the response replaced by the fault (or, for ``hang``, delayed).
        token: only requests carrying this bearer token match.
        release_on: for ``hang``: ``(method or None, path regex)``; the hang is released once a request
            matching it has been answered since the fault was added (if that happened before the held
            request arrived, it is not held at all, so tests cannot deadlock on ordering).
        matched: matching requests seen so far.
        fired: requests the fault has been applied to so far.
        released: set when a ``hang`` is released.
    """

    kind: str
    method: str | None = None
    path: str = ".*"
    skip: int = 0
    times: int | None = 1
    status: int = 503
    body: str | None = None
    content_type: str = "application/json"
    after_handling: bool = False
    token: str | None = None
    release_on: tuple[str | None, str] | None = None
    matched: int = 0
    fired: int = 0
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {_FAULT_KINDS}")

    def release(self) -> None:
        """Let requests held by this ``hang`` fault (and later ones it catches) go on."""
        self.released.set()

    def matches(self, method: str, path: str, token: str | None) -> bool:
        """Whether a request with METHOD, PATH and bearer TOKEN is one this fault looks at."""
        return (
            (self.method is None or self.method == method)
            and re.fullmatch(self.path, path) is not None
            and (self.token is None or self.token == token)
        )

    def take(self, method: str, path: str, token: str | None) -> bool:
        """Count a request and return True if the fault fires for it (call under the server lock)."""
        if not self.matches(method, path, token):
            return False
        self.matched += 1
        if self.matched <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


# ------------------------------------------------------------------------------------------------------------
# Errors and small wire helpers


class _ApiError(Exception):
    """A gRPC status the fake answers with; HTTP status from ``GRPC_TO_HTTP``.

    See docs/kfp-backend-notes.md, 'Errors and status codes'.

    The real server's ``message`` is its internal error chain ("wrapper: wrapper: Kind: detail") and the
    detail status carries the external message alone (backend common/util/error.go, ToGRPCError).
    """

    def __init__(self, code: int, external: str, internal: str, wraps: Sequence[str] = ()) -> None:
        super().__init__(external)
        self.code = code
        self.external = external
        self.message = ": ".join([*wraps, internal])

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``{"code", "message", "details": [google.rpc.Status]}``."""
        detail = {"@type": _STATUS_TYPE, "code": self.code, "message": self.external}
        return {"code": self.code, "message": self.message, "details": [detail]}


def _invalid(message: str, *wraps: str) -> _ApiError:
    return _ApiError(3, message, f"Invalid input error: {message}", wraps)


def _not_found(resource: str, resource_id: str, *wraps: str) -> _ApiError:
    message = f"{resource} {resource_id} not found."
    return _ApiError(5, message, f"ResourceNotFoundError: {message}", wraps)


def _already_exists(message: str, *wraps: str) -> _ApiError:
    return _ApiError(6, message, f"Already exist error: {message}", wraps)


def _internal(message: str, *wraps: str) -> _ApiError:
    return _ApiError(13, "Internal Server Error", f"InternalServerError: {message}", wraps)


def _error_json(status: int, message: str) -> str:
    code = HTTP_TO_GRPC.get(status, 2)
    return json.dumps(_ApiError(code, message, message).body())


def _rfc3339(moment: datetime) -> str:
    """MOMENT as protojson prints a whole-second Timestamp: ``2025-01-02T03:04:05Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch_seconds(timestamp: str) -> int:
    """Seconds since the epoch of an RFC 3339 TIMESTAMP (``...Z`` or with an offset)."""
    return int(datetime.fromisoformat(timestamp).timestamp())


def _is_empty(value: Any) -> bool:
    """Whether protojson with EmitUnpopulated=false leaves VALUE out (zero scalar, empty list/map/string)."""
    if value is None or value is False or value in ("", [], {}):
        return True
    return type(value) in (int, float) and value == 0


def _omit_empty(value: Any) -> Any:
    """VALUE with empty fields removed, recursively, like protojson output of a message (not of a Struct)."""
    if isinstance(value, Mapping):
        pruned = {key: _omit_empty(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if not _is_empty(item)}
    if isinstance(value, (list, tuple)):
        return [_omit_empty(item) for item in value]
    return value


def _first(query: Mapping[str, list[str]], name: str) -> str:
    values = query.get(name)
    return values[0] if values else ""


def _go_query_unescape(text: str) -> str:
    """Go's ``url.QueryUnescape``: ``+`` is a space, ``%XX`` a byte; a malformed ``%`` is an error.

    Raises:
        ValueError: with Go's message, e.g. ``invalid URL escape "%zz"``.
    """
    bad = re.search(r"%(?![0-9A-Fa-f]{2})", text)
    if bad:
        raise ValueError(f'invalid URL escape "{text[bad.start():bad.start() + 3]}"')
    return unquote_plus(text)


# ------------------------------------------------------------------------------------------------------------
# Listing: filters, sorting, page tokens


@dataclass(frozen=True)
class _Predicate:
    operation: str
    key: str
    value: Any  # a scalar, or a tuple for IN


@dataclass(frozen=True)
class _ListQuery:
    page_size: int
    sort_by: str  # normalized "field" or "field desc"
    sort_field: str  # wire field sorted on
    descending: bool
    filter_raw: str  # the filter as the gateway passed it on (decoded once); kept in page tokens
    predicates: tuple[_Predicate, ...]
    start: tuple[Any, str] | None  # (sort value, id) of the first item of this page, from the page token


def _parse_predicate(raw: Any, filter_keys: Mapping[str, str]) -> _Predicate:
    if not isinstance(raw, dict):
        raise ValueError("predicate is not an object")
    snake = {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): value for key, value in raw.items()}
    unknown = set(snake) - {"operation", "key", *_PREDICATE_VALUE_FIELDS}
    if unknown:
        raise ValueError(f"unknown field {min(unknown)!r}")
    operation = snake.get("operation", 0)
    name = _OPERATION_NAMES.get(operation) if isinstance(operation, int) else operation
    if name not in _OPERATIONS or name == "OPERATION_UNSPECIFIED":
        raise ValueError(f"invalid predicate operation {operation!r}")
    key = snake.get("key", "")
    if key not in filter_keys:
        raise ValueError(f"no support for filtering on unrecognized field {key!r}")
    values = [field_name for field_name in _PREDICATE_VALUE_FIELDS if field_name in snake]
    if len(values) != 1:
        raise ValueError(f"predicate on {key!r} needs exactly one value field")
    return _Predicate(name, key, _predicate_value(values[0], snake[values[0]]))


def _predicate_value(field_name: str, raw: Any) -> Any:
    if field_name == "timestamp_value":
        return _epoch_seconds(raw)
    if field_name in ("int_value", "long_value"):
        return int(raw)
    if field_name == "string_value":
        return str(raw)
    items = raw.get("values", []) if isinstance(raw, dict) else []
    return tuple(str(item) if field_name == "string_values" else int(item) for item in items)


def _parse_filter(encoded: str, filter_keys: Mapping[str, str]) -> tuple[str, tuple[_Predicate, ...]]:
    """Decode a ``filter`` query value the way the server does and parse it.

    The gateway already decoded the query once; ``parseAPIFilter`` (list_request_util.go) runs
    ``url.QueryUnescape`` again, so ``+`` in a name becomes a space and a stray ``%`` is an error
    (docs/kfp-backend-notes.md, 'Experiment names'). Accepts ``operation`` as an integer or an enum name,
    and camelCase or snake_case value keys, as the server's ``protojson.Unmarshal`` does
    (docs/kfp-backend-notes.md, 'Name lookups').
    """
    if encoded == "":
        return "", ()
    try:
        decoded = _go_query_unescape(encoded)
        document = json.loads(decoded)
        if not isinstance(document, dict) or set(document) - {"predicates"}:
            raise ValueError("a filter is an object with only a 'predicates' list")
        predicates = tuple(_parse_predicate(raw, filter_keys) for raw in document.get("predicates") or [])
    except (ValueError, TypeError, AttributeError) as error:
        raise _invalid(f"failed to parse valid filter from {encoded!r}: {error}",
                       "Failed to create list options") from error
    return decoded, predicates


def fold_ai_ci(text: str) -> str:
    """TEXT as MySQL 8's default collation ``utf8mb4_0900_ai_ci`` compares it: accents and case ignored
    (kubeflow/pipelines#5172: with ``Untitled`` stored, ``untitled`` is refused with 409)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


def _compare(operation: str, actual: Any, wanted: Any, fold: Callable[[str], str] = lambda text: text) -> bool:
    if operation in ("EQUALS", "NOT_EQUALS") and isinstance(actual, str) and isinstance(wanted, str):
        actual, wanted = fold(actual), fold(wanted)
    if operation == "IN":
        return actual in wanted
    if operation == "IS_SUBSTRING":
        return str(wanted) in str(actual)
    if isinstance(wanted, int) and not isinstance(actual, int):
        actual = int(actual) if str(actual).lstrip("-").isdigit() else actual
    if type(actual) is not type(wanted):
        actual, wanted = str(actual), str(wanted)
    return {
        "EQUALS": actual == wanted, "NOT_EQUALS": actual != wanted,
        "GREATER_THAN": actual > wanted, "GREATER_THAN_EQUALS": actual >= wanted,
        "LESS_THAN": actual < wanted, "LESS_THAN_EQUALS": actual <= wanted,
    }[operation]


def _field_value(item: Mapping[str, Any], wire_field: str) -> Any:
    value = item.get(wire_field, "")
    if wire_field in _TIMESTAMP_FIELDS:
        return _epoch_seconds(value) if value else 0
    return value


def _encode_token(query: _ListQuery, start: tuple[Any, str]) -> str:
    token = {"sort_by": query.sort_by, "filter": query.filter_raw, "start": list(start)}
    return base64.b64encode(json.dumps(token).encode()).decode()


def _decode_token(token: str) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.b64decode(token, validate=True))
        if not isinstance(decoded, dict) or not isinstance(decoded.get("start"), list):
            raise ValueError("not a page token")
        return decoded
    except (ValueError, binascii.Error) as error:
        raise _invalid("Invalid package token.", "Failed to create list options") from error


def _page_size(query: Mapping[str, list[str]]) -> int:
    """``page_size`` with the server's rules: 0 or absent means 20, above 200 means 200, negative is 400."""
    raw = _first(query, "page_size") or "0"
    try:
        size = int(raw)
    except ValueError as error:
        raise _invalid(f"type mismatch, parameter: page_size, error: strconv.ParseInt: parsing {raw!r}: "
                       "invalid syntax") from error
    if size < 0:
        raise _invalid(f"The page size should be greater than 0. Got {size}", "Failed to create list options")
    return min(size or _DEFAULT_PAGE_SIZE, _MAX_PAGE_SIZE)


def _sort_order(sort_by: str, sort_keys: Mapping[str, str]) -> tuple[str, bool]:
    words = sort_by.lower().split()
    if len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
        raise _invalid(f"Received invalid sort by format `{sort_by}`. Supported format: \"field_name\", "
                       '"field_name desc", or "field_name asc"', "Failed to create list options")
    name = words[0] if words else ""
    if name not in sort_keys:
        supported = ", ".join(key for key in sort_keys if key)
        raise _invalid(f"Cannot sort on field {name}. Supported fields [{supported}].",
                       "Failed to create list options")
    return sort_keys[name], len(words) == 2 and words[1] == "desc"


def _list_query(query: Mapping[str, list[str]], filter_keys: Mapping[str, str],
                sort_keys: Mapping[str, str]) -> _ListQuery:
    """Page size, sort order, filter and page token of a list request (list_request_util.go).

    A page token carries the filter and sort order it was made with; a request that also sends a
    different non-empty filter or sort_by gets 400, like ``validatedListOptions``.
    """
    page_size = _page_size(query)
    sort_by, filter_raw = _first(query, "sort_by"), _first(query, "filter")
    token = _first(query, "page_token")
    _sort_order(sort_by, sort_keys)  # a malformed sort_by or filter is a 400 even with a page token
    _parse_filter(filter_raw, filter_keys)
    start = None
    if token:
        saved = _decode_token(token)
        if (sort_by and sort_by != saved["sort_by"]) or (filter_raw and filter_raw != saved["filter"]):
            raise _invalid("page token does not match the supplied sort by and/or filtering criteria. Either "
                           "specify the same criteria or leave the latter empty if page token is specified.",
                           "Failed to create list options")
        sort_by, filter_raw = saved["sort_by"], saved["filter"]
        start = (saved["start"][0], saved["start"][1])
    sort_field, descending = _sort_order(sort_by, sort_keys)
    predicates = _parse_filter(filter_raw, filter_keys)[1]
    return _ListQuery(page_size, sort_by, sort_field, descending, filter_raw, predicates, start)


def _paginate(items: Iterable[dict[str, Any]], query: _ListQuery, id_field: str,
              value_of: Callable[[dict[str, Any], str], Any],
              fold: Callable[[str], str] = lambda text: text) -> tuple[list[dict[str, Any]], int, str]:
    """One page of ITEMS (filtered, sorted by (sort field, id), from the token's start), total, next token."""
    wanted = [item for item in items
              if all(_compare(p.operation, value_of(item, p.key), p.value, fold) for p in query.predicates)]

    def order(item: dict[str, Any]) -> tuple[Any, str]:
        return _field_value(item, query.sort_field), item[id_field]

    rows = sorted(wanted, key=order, reverse=query.descending)
    if query.start is not None:
        start = tuple(query.start)
        rows = [row for row in rows if (order(row) <= start if query.descending else order(row) >= start)]
    page, rest = rows[:query.page_size], rows[query.page_size:]
    return page, len(wanted), _encode_token(query, order(rest[0])) if rest else ""


def _list_response(name: str, page: list[dict[str, Any]], total: int, next_token: str) -> dict[str, Any]:
    """``{name: [...], "total_size": n, "next_page_token": t}``, empty parts omitted (``{}`` if none).

    Only the top level is pruned: the items are already in wire shape and hold Structs (``pipeline_spec``,
    ``runtime_config.parameters``) whose zero values protojson keeps.
    """
    response: dict[str, Any] = {name: copy.deepcopy(page), "total_size": total, "next_page_token": next_token}
    return {key: value for key, value in response.items() if not _is_empty(value)}


# ------------------------------------------------------------------------------------------------------------
# Pipeline-spec parameter validation (backend template/v2_template.go, validatePipelineJobInputs)


def _spec_get(mapping: Mapping[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    return mapping.get(camel, mapping.get(snake, default))


def _unwrap_pipeline_spec(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """The PipelineSpec of a run body's ``pipeline_spec`` (which wraps it when a platform spec is present)."""
    if "root" not in spec and isinstance(spec.get("pipeline_spec"), Mapping):
        return spec["pipeline_spec"]
    return spec


def _check_pipeline_spec(spec: Any) -> Mapping[str, Any]:
    """The PipelineSpec in SPEC, or a 500 like the server's template error (resource_manager.CreateRun)."""
    wraps = ("Failed to create a new run", "Failed to create a run due to error fetching manifest")
    if not isinstance(spec, Mapping):
        raise _internal("no pipeline spec is provided", *wraps)
    spec = _unwrap_pipeline_spec(spec)
    if _spec_get(spec, "schemaVersion", "schema_version") != "2.1.0":
        raise _internal("KFP only supports schema version 2.1.0", *wraps)
    if not _spec_get(spec, "pipelineInfo", "pipeline_info", {}).get("name"):
        raise _internal("invalid v2 pipeline spec: name is empty", *wraps)
    if not isinstance(spec.get("root"), Mapping):
        raise _internal("invalid v2 pipeline spec: root component is empty", *wraps)
    return spec


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_NOT_A_NUMBER = "requires type double or integer, but the parameter value is not of number value type"
# IR parameter type -> (JSON kind check, complaint); structpb kinds as checked by validatePipelineJobInputs.
_KIND_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "NUMBER_INTEGER": (_is_number, _NOT_A_NUMBER),
    "NUMBER_DOUBLE": (_is_number, _NOT_A_NUMBER),
    "STRING": (lambda v: isinstance(v, str),
               "requires type string, but the input parameter is not of string value type"),
    "BOOLEAN": (lambda v: isinstance(v, bool),
                "requires type bool, but the input parameter is not of bool value type"),
    "LIST": (lambda v: isinstance(v, list),
             "requires type list, but the input parameter is not of list value type"),
    "STRUCT": (lambda v: isinstance(v, dict),
               "requires type struct, but the input parameter is not of struct value type"),
}


def _validate_parameters(spec: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
    """400 unless PARAMETERS fit ``root.inputDefinitions.parameters`` of SPEC (template/v2_template.go,
    ``V2Spec.validatePipelineJobInputs``).

    Checks, in the spec's parameter order (the server iterates a Go map, so its order is random): a
    missing parameter must be optional or have a default; a given one must have the right JSON kind;
    then no parameter may be extra.
    """
    wraps = ("Failed to create a new run", "Failed to generate the ExecutionSpec",
             "invalid pipeline job inputs")
    root = spec.get("root", {})
    definitions = _spec_get(root, "inputDefinitions", "input_definitions", {}) or {}
    declared: Mapping[str, Any] = definitions.get("parameters", {}) or {}
    for name, definition in declared.items():
        if name not in parameters:
            has_default = _spec_get(definition, "defaultValue", "default_value") is not None
            if not _spec_get(definition, "isOptional", "is_optional", False) and not has_default:
                raise _invalid(f"parameter {name} is not optional, yet has neither default value nor user "
                               "provided value", *wraps)
            continue
        parameter_type = _spec_get(definition, "parameterType", "parameter_type", "")
        if parameter_type == "TASK_FINAL_STATUS":
            raise _invalid(f"input parameter {name} requires type TASK_FINAL_STATUS, which is invalid for "
                           "root component", *wraps)
        if parameter_type not in _KIND_CHECKS:
            raise _invalid(f"input parameter {name} has unspecified type", *wraps)
        is_kind, complaint = _KIND_CHECKS[parameter_type]
        if not is_kind(parameters[name]):
            raise _invalid(f"input parameter {name} {complaint}", *wraps)
    extra = [name for name in parameters if name not in declared]
    if extra:
        raise _invalid(f"parameter(s) provided are not required by pipeline: {', '.join(extra)}", *wraps)


# ------------------------------------------------------------------------------------------------------------
# HTTP plumbing


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    drop: bool = False  # close the connection without answering

    @classmethod
    def json(cls, document: Any, status: int = 200) -> _Response:
        return cls(status, json.dumps(document).encode())

    @classmethod
    def error(cls, error: _ApiError) -> _Response:
        return cls.json(error.body(), GRPC_TO_HTTP[error.code])


_Route = tuple[str, "re.Pattern[str]", str]
_ROUTES: tuple[_Route, ...] = tuple(
    (method, re.compile(pattern), handler)
    for method, pattern, handler in (
        ("GET", r"/apis/v2beta1/healthz", "_healthz"),
        ("GET", r"/apis/v2beta1/experiments", "_list_experiments"),
        ("POST", r"/apis/v2beta1/experiments", "_create_experiment"),
        ("GET", r"/apis/v2beta1/experiments/(?P<experiment_id>[^/:]+)", "_get_experiment"),
        ("POST", r"/apis/v2beta1/experiments/(?P<experiment_id>[^/:]+):archive", "_archive_experiment"),
        ("POST", r"/apis/v2beta1/experiments/(?P<experiment_id>[^/:]+):unarchive", "_unarchive_experiment"),
        ("GET", r"/apis/v2beta1/runs", "_list_runs"),
        ("POST", r"/apis/v2beta1/runs", "_create_run"),
        ("GET", r"/apis/v2beta1/runs/(?P<run_id>[^/:]+)", "_get_run"),
        ("POST", r"/apis/v2beta1/runs/(?P<run_id>[^/:]+):terminate", "_terminate_run"),
        ("GET", r"/apis/v1alpha1/runs/(?P<run_id>[^/]+)/nodes/(?P<node_id>[^/]+)/log", "_read_task_log"),
        ("GET", r"/apis/v1beta1/runs/(?P<run_id>[^/:]+)", "_get_run_v1"),
    )
)


# ------------------------------------------------------------------------------------------------------------
# The server


class FakeKfpServer(LoopbackServer):
    """A fake KFP 2.17 API server on ``127.0.0.1:<free port>``, state as data, every request recorded.

    Use as a context manager (``with FakeKfpServer() as server:``) or call ``start()``/``stop()``.
    All public state is guarded by one lock (``lock``); read it freely from tests between calls, and hold
    ``server.lock`` if you read while another thread is calling the server.

    Args:
        multi_user: behave as a multi-user (Kubeflow profiles) deployment: experiments and run listings
            need a namespace, runs need an experiment id; healthz says ``multi_user: true``. When False,
            namespaces are replaced by "" (single-user ``ReplaceNamespace``) and a run without experiment
            goes to the experiment "Default".
        terminated_state: the state a terminated run ends in; real KFP 2.17 ends as ``FAILED``
            (docs/kfp-backend-notes.md, 'Terminating a run'),
            set ``"CANCELED"`` to model a backend that reports cancellation.
        canceling_polls: how many GETs of a terminated run still show ``CANCELING`` before the terminal state.
        service_account: ``service_account`` set on runs that do not ask for one (KFP's default runner).
        accepted_tokens: if not None, only requests with ``authorization: Bearer <t>`` for t in this set are
            served; others get 401 (Unauthenticated). Reassign ``server.accepted_tokens`` to rotate.
        clock: returns the current time (timezone-aware); timestamps are cut to whole seconds.
        text_columns: how the database stores run ``display_name``/``description`` and experiment
            ``description``, which backends up to 2.14 created as ``varchar(255)`` (GORM v1's default for a
            string without a size: kubeflow/pipelines ``backend/src/apiserver/model/run.go`` and
            ``model/experiment.go`` at 2.14.0): ``"strict"`` (MySQL's default ``STRICT_TRANS_TABLES``:
            longer text is refused, 500 "Error 1406 (22001): Data too long"), ``"truncate"`` (non-strict
            MySQL: cut to 255 characters without a word), or ``"wide"`` (2.15+ with GORM v2: ``longtext``).
        name_collation: ``"ai_ci"`` (default): names compare as MySQL 8's default collation does, ignoring
            case and accents, in filters and in the experiments' unique (name, namespace) index
            (kubeflow/pipelines#5172); ``"binary"``: exactly.
        utf8mb3: the database uses MySQL's 3-byte ``utf8`` charset, as older deployments do: a character
            outside the Basic Multilingual Plane in those columns is refused in strict mode (500 "Error 1366
            (HY000): Incorrect string value") and stored as ``?`` otherwise.
        annotation_limit_bytes: model a backend before kubeflow/pipelines#10979 (KFP 2.0-2.2), which put
            component specs in the Argo Workflow's annotations: Kubernetes refuses annotations of more than
            262,144 bytes in all (k8s.io/apimachinery ``pkg/api/validation/objectmeta.go``,
            ``TotalAnnotationSizeLimitB``), so a run whose pipeline spec is larger gets 500 "Too long: must
            have at most 262144 bytes" on every try. None (default): no such limit.

    Attributes:
        experiments: experiment_id -> V2beta1Experiment wire dict.
        runs: run_id -> V2beta1Run wire dict (``pipeline_spec`` as sent, camelCase inside).
        requests: every request in arrival order (``RecordedRequest``).
        run_scripts: run_id -> ``RunScript`` still driving that run.
        pending_scripts: scripts waiting for the next created runs (first in, first used).
        task_logs: (run_id, node_id) -> text served by the log endpoint.
        pipeline_versions: pipeline_version_id -> PipelineSpec dict, for runs made from a version reference.
        workflows: run_id -> the run's Argo Workflow as the backend stores it (``WorkflowRuntimeManifest``),
            served by the v1beta1 run detail; a terminate sets its ``spec.activeDeadlineSeconds`` to 0.
        faults: the registered ``Fault`` objects, in matching order.
        lock: the ``threading.RLock`` guarding all of the above.
    """

    thread_name = "fake-kfp"

    def __init__(
        self,
        *,
        multi_user: bool = True,
        terminated_state: str = "FAILED",
        canceling_polls: int = 1,
        service_account: str = "pipeline-runner",
        accepted_tokens: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        text_columns: str = "strict",
        name_collation: str = "ai_ci",
        utf8mb3: bool = True,
        annotation_limit_bytes: int | None = None,
    ) -> None:
        if text_columns not in ("strict", "truncate", "wide"):
            raise ValueError("text_columns must be strict, truncate or wide")
        self.text_columns = text_columns
        self.fold: Callable[[str], str] = fold_ai_ci if name_collation == "ai_ci" else (lambda text: text)
        self.utf8mb3 = utf8mb3
        self.annotation_limit_bytes = annotation_limit_bytes
        if terminated_state not in FINISHED_STATES:
            raise ValueError(f"terminated_state must be one of {sorted(FINISHED_STATES)}")
        self.multi_user = multi_user
        self.terminated_state = terminated_state
        self.canceling_polls = canceling_polls
        self.service_account = service_account
        self.accepted_tokens: set[str] | None = None if accepted_tokens is None else set(accepted_tokens)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.run_scripts: dict[str, RunScript] = {}
        self.pending_scripts: list[RunScript] = []
        self.task_logs: dict[tuple[str, str], str] = {}
        self.version = "2.17.0"  # healthz's tag_name
        self.healthz_from_ui = False  # answer healthz as the KFP UI does (KFP_HOST = the UI's /pipeline URL)
        self.workflows: dict[str, dict[str, Any]] = {}
        self.pipeline_versions: dict[str, dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._request_arrived = threading.Condition(self.lock)
        super().__init__()

    # ---- arranging state -----------------------------------------------------------------------------------

    def add_experiment(
        self,
        display_name: str,
        namespace: str = "team-a",
        *,
        description: str = "",
        storage_state: str = "AVAILABLE",
        experiment_id: str | None = None,
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Store an experiment directly (no request, no uniqueness check) and return its wire dict.

        ``storage_state`` is ``"AVAILABLE"`` or ``"ARCHIVED"``; ``created_at`` defaults to the clock (give
        distinct times to make list order deterministic: ties are ordered by id, as on the real server).
        """
        with self.lock:
            namespace = self._namespace(namespace)
            experiment = self._new_experiment(display_name, namespace, description, created_at)
            if experiment_id is not None:
                experiment["experiment_id"] = experiment_id
            experiment["storage_state"] = storage_state
            self.experiments[experiment["experiment_id"]] = experiment
            return experiment

    def add_run(
        self,
        experiment_id: str,
        display_name: str = "run",
        *,
        state: str = "RUNNING",
        description: str = "",
        run_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        pipeline_spec: Mapping[str, Any] | None = None,
        task_details: Sequence[Mapping[str, Any]] | None = None,
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Store a run directly in STATE (no request, no validation) and return its wire dict.

        The run goes through PENDING to STATE in its ``state_history``; a pending script (``script_run``)
        is not consumed by it.
        """
        with self.lock:
            body: dict[str, Any] = {
                "experiment_id": experiment_id, "display_name": display_name, "description": description,
                "runtime_config": {"parameters": dict(parameters or {})},
            }
            if pipeline_spec is not None:
                body["pipeline_spec"] = dict(pipeline_spec)
            run = self._new_run(body, created_at)
            if run_id is not None:
                run["run_id"] = run_id
            self._apply_step(run, RunStep(state, task_details))
            self.runs[run["run_id"]] = run
            return run

    def script_run(
        self,
        states: Sequence[str | RunStep],
        *,
        task_details: Sequence[Mapping[str, Any]] | None = None,
        run_id: str | None = None,
        advance_on_list: bool = False,
    ) -> RunScript:
        """Script a run's states: each ``GET /runs/{id}`` shows the next step, then stays on the last.

        Args:
            states: state names or ``RunStep`` objects; the first GET after creation shows ``states[0]``
                (the create response itself shows ``PENDING``).
            task_details: task detail dicts for every step that does not bring its own.
            run_id: script an existing run; None scripts the next created run (``POST /runs``). Several
                calls with None queue scripts for successive runs.
            advance_on_list: also advance when a list response includes the run (default: GET only).

        Returns:
            The ``RunScript`` (its ``position`` shows how far the run has advanced).
        """
        steps = [step if isinstance(step, RunStep) else RunStep(step) for step in states]
        if not steps:
            raise ValueError("script_run needs at least one state")
        unknown = [step.state for step in steps if step.state not in RUN_STATES]
        if unknown:
            raise ValueError(f"unknown run states {unknown}; expected names from {sorted(RUN_STATES)}")
        if task_details is not None:
            steps = [step if step.task_details is not None else replace(step, task_details=task_details)
                     for step in steps]
        script = RunScript(steps, advance_on_list)
        with self.lock:
            if run_id is None:
                self.pending_scripts.append(script)
            else:
                if run_id not in self.runs:
                    raise KeyError(f"no run {run_id!r}")
                self.run_scripts[run_id] = script
        return script

    def set_task_log(self, run_id: str, node_id: str, text: str) -> None:
        """Serve TEXT at ``GET /apis/v1alpha1/runs/{run_id}/nodes/{node_id}/log`` (run_id ``"*"``: any run)."""
        with self.lock:
            self.task_logs[(run_id, node_id)] = text

    # ---- faults --------------------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Register FAULT (checked after the ones already registered) and return it."""
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove all faults, releasing any request a ``hang`` fault still holds."""
        with self.lock:
            faults, self.faults = self.faults, []
        for fault in faults:
            fault.release()

    def fail(self, status: int, *, method: str | None = None, path: str = ".*", times: int | None = 1,
             skip: int = 0, body: str | None = None, content_type: str = "application/json",
             after_handling: bool = False, token: str | None = None) -> Fault:
        """Answer matching requests with HTTP STATUS (body: gRPC error JSON unless BODY is given).

        E.g. a burst of 503 on the next 3 polls: ``fail(503, method="GET", path=PATH_RUN, times=3)``;
        a create-run that stores the run but answers 500: ``fail(500, method="POST", path=PATH_RUNS,
        after_handling=True)``.
        """
        return self.add_fault(Fault("status", method, path, skip, times, status, body, content_type,
                                    after_handling, token))

    def drop(self, *, method: str | None = None, path: str = ".*", times: int | None = 1, skip: int = 0,
             after_handling: bool = False, token: str | None = None) -> Fault:
        """Close the connection of matching requests without answering.

        A default ``kfp.Client``'s urllib3 retries a dropped GET up to 3 times silently and raises
        ``ProtocolError`` at once for a POST (kfp-launch turns urllib3's retries off: every drop reaches it)
        (docs/kfp-backend-notes.md, 'Errors and status codes').
        """
        return self.add_fault(Fault("drop", method, path, skip, times, after_handling=after_handling,
                                    token=token))

    def hang(self, *, method: str | None = None, path: str = ".*", times: int | None = 1, skip: int = 0,
             release_on: tuple[str | None, str] | None = None, after_handling: bool = False,
             token: str | None = None) -> Fault:
        """Hold matching requests until ``fault.release()``, a RELEASE_ON request is answered, or stop.

        Other requests are served meanwhile. E.g. hold the first create-experiment until another client
        has listed experiments: ``hang(method="POST", path=PATH_EXPERIMENTS, release_on=("GET",
        PATH_EXPERIMENTS))``, or until it has created one (a deterministic 409 for the held request):
        ``release_on=("POST", PATH_EXPERIMENTS)``. A client ``_request_timeout`` ends a hung call early.
        """
        return self.add_fault(Fault("hang", method, path, skip, times, after_handling=after_handling,
                                    token=token, release_on=release_on))

    def html_login(self, *, method: str | None = None, path: str = ".*", times: int | None = 1,
                   skip: int = 0, token: str | None = None) -> Fault:
        """Answer matching requests with 200 ``text/html`` login page, like an auth proxy
        (docs/kfp-backend-notes.md, 'Login pages with status 200')."""
        return self.add_fault(Fault("html", method, path, skip, times, token=token))

    def unauthorized_after(self, n_ok: int, *, method: str | None = None, path: str = ".*",
                           token: str | None = None) -> Fault:
        """Serve the first N_OK matching requests, answer 401 (Unauthenticated) to all later ones."""
        return self.fail(401, method=method, path=path, times=None, skip=n_ok, token=token)

    # ---- reading the request log ---------------------------------------------------------------------------

    def requests_to(self, method: str | None = None, path: str = ".*") -> list[RecordedRequest]:
        """Recorded requests with METHOD (None: any) whose path fullmatches the regex PATH."""
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and re.fullmatch(path, r.path)]

    def wait_for_request(self, method: str | None = None, path: str = ".*", *, count: int = 1,
                         timeout_s: float = 5.0) -> RecordedRequest:
        """Block until COUNT matching requests arrived; return the COUNT-th (TimeoutError after TIMEOUT_S)."""
        deadline = time.monotonic() + timeout_s
        with self._request_arrived:
            while len(matching := self.requests_to(method, path)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{count} x {method or '*'} {path} not seen within {timeout_s} s")
                self._request_arrived.wait(remaining)
            return matching[count - 1]

    # ---- request handling ----------------------------------------------------------------------------------

    def _serve(self, handler: LoopbackHandler) -> None:
        """Record, apply a fault or handle, answer; runs in the connection's thread."""
        index, request = self._record(handler)
        fault = self._take_fault(request)
        response: _Response | None = None
        if fault is not None and not fault.after_handling:
            response = self._fault_response(fault)
        if response is None:
            response = self._handle(request)
            if fault is not None and fault.after_handling:
                response = self._fault_response(fault) or response
        if self._stopping.is_set():
            response = _Response(0, drop=True)
        self._answer(handler, index, response)
        self._release_holds(request)

    def _record(self, handler: LoopbackHandler) -> tuple[int, RecordedRequest]:
        target = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw_body = handler.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None
        headers: dict[str, str] = {}
        for name, value in handler.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = RecordedRequest(
            method=handler.command, path=target.path,
            query=parse_qs(target.query, keep_blank_values=True), raw_query=target.query,
            headers=headers, body=body, time=time.time(), raw_body=raw_body,
        )
        with self._request_arrived:
            self.requests.append(request)
            self._request_arrived.notify_all()
            return len(self.requests) - 1, request

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.take(request.method, request.path, request.bearer_token):
                    return fault
        return None

    def _fault_response(self, fault: Fault) -> _Response | None:
        """The response FAULT gives; None for a ``hang`` that was released (the request goes on)."""
        if fault.kind == "hang":
            while not fault.released.wait(0.05):
                if self._stopping.is_set():
                    return _Response(0, drop=True)
            return _Response(0, drop=True) if self._stopping.is_set() else None
        if fault.kind == "drop":
            return _Response(0, drop=True)
        if fault.kind == "html":
            return _Response(200, _LOGIN_PAGE.encode(), "text/html; charset=utf-8")
        body = fault.body if fault.body is not None else _error_json(
            fault.status, f"injected by FakeKfpServer: HTTP {fault.status} {_reason(fault.status)}")
        return _Response(fault.status, body.encode(), fault.content_type)

    def _release_holds(self, request: RecordedRequest) -> None:
        with self.lock:
            for fault in self.faults:
                if fault.kind == "hang" and fault.release_on is not None:
                    method, path = fault.release_on
                    if (method is None or method == request.method) and re.fullmatch(path, request.path):
                        fault.release()

    def _answer(self, handler: LoopbackHandler, index: int, response: _Response) -> None:
        status = None if response.drop else response.status
        with self.lock:
            self.requests[index] = replace(self.requests[index], status=status)
        if response.drop:
            handler.close_connection = True
            return
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            handler.end_headers()
            handler.wfile.write(response.body)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the client gave up (e.g. its read timeout)

    def _handle(self, request: RecordedRequest) -> _Response:
        """Authenticate and route REQUEST to its endpoint method; errors become gRPC error responses."""
        if self.accepted_tokens is not None and request.bearer_token not in self.accepted_tokens:
            message = "Request is not authenticated: the bearer token is missing, invalid or expired"
            return _Response.error(
                _ApiError(16, message, f"Unauthenticated: {message}", ("Failed to authorize with API",)))
        path = unquote(request.path)
        allowed = False
        for method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            allowed = True
            if method == request.method:
                try:
                    with self.lock:
                        result = getattr(self, name)(request, **match.groupdict())
                except _ApiError as error:
                    return _Response.error(error)
                except Exception as error:
                    return _Response.error(_internal(f"fake_kfp bug: {error!r}", f"{method} {path}"))
                return result if isinstance(result, _Response) else _Response.json(result)
        # grpc-gateway routing errors: unknown path -> NotFound, known path with another method -> 501.
        if allowed:
            return _Response.json({"code": 12, "message": "Method Not Allowed", "details": []}, 501)
        return _Response.json({"code": 5, "message": "Not Found", "details": []}, 404)

    # ---- endpoints (called under the lock) -----------------------------------------------------------------

    def _healthz(self, request: RecordedRequest) -> dict[str, Any]:
        # A hand-written handler in main.go, not the gateway: all four keys, always.
        if self.healthz_from_ui:  # the KFP UI answers this path itself (frontend/server/handlers/healthz.ts)
            return {"apiServerCommitHash": "0000000", "apiServerTagName": self.version, "apiServerMultiUser":
                    self.multi_user, "multi_user": self.multi_user, "frontendTagName": self.version}
        return {"commit_sha": "0000000", "tag_name": self.version, "multi_user": self.multi_user,
                "pipeline_store": "database"}

    def _create_experiment(self, request: RecordedRequest) -> dict[str, Any]:
        wraps = ("Failed to create a experiment",)
        body = request.body if isinstance(request.body, dict) else {}
        name = body.get("display_name", "")
        if not name:
            raise _invalid("Experiment must have a non-empty name",
                           "[ExperimentServer]: Failed to create a experiment due to conversion error")
        namespace = self._namespace(body.get("namespace", ""))
        if self.multi_user and not namespace:
            raise _invalid("An experiment cannot have an empty namespace in multi-user mode",
                           *wraps, "Failed to authorize the request")
        if any(self.fold(e["display_name"]) == self.fold(name) and e.get("namespace", "") == namespace
               for e in self.experiments.values()):
            raise _already_exists(f"Failed to create a new experiment. The name {name} already exists. "
                                  "Please specify a new name", *wraps)
        # experiments.Name is varchar(128), Namespace varchar(63) (model/experiment.go): MySQL rejects more.
        if len(name) > 128 or len(namespace) > 63:
            column = "Name" if len(name) > 128 else "Namespace"
            raise _internal(f"Failed to add experiment to experiment table: Error 1406: Data too long for "
                            f"column '{column}' at row 1", *wraps)
        description = self._stored_text("experiment", "Description", body.get("description", ""), *wraps)
        experiment = self._new_experiment(name, namespace, description, None)
        self.experiments[experiment["experiment_id"]] = experiment
        return copy.deepcopy(experiment)

    def _get_experiment(self, request: RecordedRequest, experiment_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._experiment_or_404(experiment_id, "Failed to fetch experiment"))

    def _list_experiments(self, request: RecordedRequest) -> dict[str, Any]:
        query = _list_query(request.query, _EXPERIMENT_FILTER_KEYS, _EXPERIMENT_SORT_KEYS)
        namespace = self._namespace(_first(request.query, "namespace"))
        if self.multi_user and not namespace:
            raise _invalid("An experiment cannot have an empty namespace in multi-user mode",
                           "List experiments failed", "Failed to authorize with API")
        candidates = [e for e in self.experiments.values()
                      if not namespace or e.get("namespace") == namespace]
        page, total, token = _paginate(candidates, query, "experiment_id",
                                       lambda e, key: _field_value(e, _EXPERIMENT_FILTER_KEYS[key]), self.fold)
        return _list_response("experiments", page, total, token)

    def _archive_experiment(self, request: RecordedRequest, experiment_id: str) -> dict[str, Any]:
        """Archive the experiment and all its runs (resource_manager.ArchiveExperiment)."""
        experiment = self._experiment_or_404(experiment_id, "Failed to archive experiment")
        experiment["storage_state"] = "ARCHIVED"
        for run in self.runs.values():
            if run.get("experiment_id") == experiment_id:
                run["storage_state"] = "ARCHIVED"
        return {}

    def _unarchive_experiment(self, request: RecordedRequest, experiment_id: str) -> dict[str, Any]:
        """Unarchive the experiment only; its runs stay archived (resource_manager.UnarchiveExperiment)."""
        experiment = self._experiment_or_404(experiment_id, "Failed to unarchive experiment")
        experiment["storage_state"] = "AVAILABLE"
        return {}

    def _create_run(self, request: RecordedRequest) -> dict[str, Any]:
        """Validate like ``RunServer.CreateRun`` (name, experiment, spec, parameters), store in PENDING."""
        wraps = ("Failed to create a new run",)
        body = request.body if isinstance(request.body, dict) else {}
        if ("pipeline_spec" in body) == ("pipeline_version_reference" in body):
            raise _invalid("Failed to convert a run: exactly one of pipeline_spec or "
                           "pipeline_version_reference must be set",
                           "Failed to create a run due to conversion error")
        if not body.get("display_name"):
            raise _invalid("The run name is empty. Please specify a valid name",
                           *wraps, "Failed to create a run due to invalid name")
        experiment_id = self._run_experiment_id(body.get("experiment_id", ""))
        spec = self._run_pipeline_spec(body)
        parameters = (body.get("runtime_config") or {}).get("parameters") or {}
        _validate_parameters(spec, parameters)
        self._check_annotation_size(spec, *wraps)
        stored = {column: self._stored_text("run", column.capitalize(), body.get(column, ""), *wraps)
                  for column in ("display_name", "description")}
        run = self._new_run({**body, **stored, "experiment_id": experiment_id}, None)
        self.runs[run["run_id"]] = run
        self.experiments[experiment_id]["last_run_created_at"] = run["created_at"]
        if self.pending_scripts:
            self.run_scripts[run["run_id"]] = self.pending_scripts.pop(0)
        return copy.deepcopy(run)

    def _get_run(self, request: RecordedRequest, run_id: str) -> dict[str, Any]:
        run = self._run_or_404(run_id, "Failed to get a run")
        self._advance(run_id, via_list=False)
        return copy.deepcopy(run)

    def _list_runs(self, request: RecordedRequest) -> dict[str, Any]:
        query = _list_query(request.query, _RUN_FILTER_KEYS, _RUN_SORT_KEYS)
        experiment_id = _first(request.query, "experiment_id")
        if experiment_id:
            self._experiment_or_404(
                experiment_id, "Failed to list runs",
                f"Failed to list runs due to error fetching namespace for experiment {experiment_id}. "
                "Try filtering based on namespace")
            candidates = [r for r in self.runs.values() if r.get("experiment_id") == experiment_id]
        else:
            namespace = self._namespace(_first(request.query, "namespace"))
            if self.multi_user and not namespace:
                raise _invalid("A run cannot be listed with an empty namespace in multi-user mode",
                               "Failed to list runs", "Failed to list runs due to authorization error")
            candidates = [r for r in self.runs.values()
                          if not namespace or self._run_namespace(r) == namespace]
        page, total, token = _paginate(candidates, query, "run_id", self._run_filter_value, self.fold)
        for run in page:
            self._advance(run["run_id"], via_list=True)
        return _list_response("runs", page, total, token)

    def _terminate_run(self, request: RecordedRequest, run_id: str) -> dict[str, Any]:
        """CANCELING now, ``terminated_state`` after ``canceling_polls`` more GETs (run_store.go)."""
        wraps = ("Failed to terminate a run", f"Failed to terminate run {run_id}")
        run = self._run_or_404(run_id, wraps[0],
                               f"Failed to terminate run {run_id} due to error fetching the run")
        if run.get("state", "RUNTIME_STATE_UNSPECIFIED") not in TERMINABLE_STATES:
            raise _invalid(f"Failed to terminate a run {run_id}. Row not found", *wraps)
        # The run store sets CANCELING without a state_history entry ("TODO(gkcalat): append CANCELLING to
        # StateHistory", storage/run_store.go, TerminateRun), and TerminateWorkflow patches the Workflow's
        # spec.activeDeadlineSeconds to 0 (resource/resource_manager.go), which its stored manifest keeps.
        self._set_state(run, "CANCELING", record=False)
        self.workflows.setdefault(run_id, self._workflow(run))["spec"]["activeDeadlineSeconds"] = 0
        previous = self.run_scripts.get(run_id)
        steps = [RunStep("CANCELING")] * self.canceling_polls + [RunStep(self.terminated_state)]
        self.run_scripts[run_id] = RunScript(steps, previous.advance_on_list if previous else False)
        return {}

    def _get_run_v1(self, request: RecordedRequest, run_id: str) -> dict[str, Any]:
        """The v1beta1 run detail (``toApiRunDetailV1``, server/api_converter.go): the run and its stored
        Workflow manifest, as a JSON string in ``pipeline_runtime.workflow_manifest``."""
        run = self._run_or_404(run_id, "Failed to get a run")
        workflow = self.workflows.setdefault(run_id, self._workflow(run))
        v1_run = {"id": run_id, "name": run.get("display_name", ""), "status": _V1_STATUS.get(run.get("state", ""), "")}
        return {"run": _omit_empty(v1_run), "pipeline_runtime": {"workflow_manifest": json.dumps(workflow)}}

    def _workflow(self, run: Mapping[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": f"{run.get('display_name', 'run')[:20].lower().replace(' ', '-')}-{run['run_id'][:5]}"},
                "spec": {"entrypoint": "entrypoint", "serviceAccountName": self.service_account}, "status": {}}

    def _read_task_log(self, request: RecordedRequest, run_id: str, node_id: str) -> _Response:
        """The whole log of a pod, as text (``ReadRunLogV1``, backend/src/apiserver/server/run_log_server.go
        at 2.17.0; ``follow`` comes from the route's path variables, so it is never set).

        The handler writes status 200 before ``ResourceManager.ReadLog`` runs, so when the run or the pod is
        unknown (a pod not created yet, or deleted with no log archive) the answer is still 200, its body
        the JSON ``api.Error`` ``{"error_message": ..., "error_details": ...}`` (``writeErrorToResponse``:
        the second WriteHeader is ignored). Backends after 2.17 authorize first (kubeflow/pipelines#13684):
        inject that 403 with ``fail(403, path=PATH_TASK_LOG)``.
        """
        text = self.task_logs.get((run_id, node_id), self.task_logs.get(("*", node_id)))
        if run_id not in self.runs or text is None:
            cause = (f"Failed to read logs from pod {node_id} due to error opening log stream: "
                     f'pods "{node_id}" not found') if run_id in self.runs else f"Run {run_id} not found"
            message = f"Failed to read logs for run {run_id}: {cause}"
            body = json.dumps({"error_message": message, "error_details": message}, separators=(",", ":"))
            return _Response(200, body.encode(), "text/plain; charset=utf-8")
        return _Response(200, text.encode(), "text/plain; charset=utf-8")

    # ---- state helpers (called under the lock) -------------------------------------------------------------

    def _now(self) -> str:
        return _rfc3339(self.clock())

    def _namespace(self, namespace: str) -> str:
        """The namespace the server uses: as given in multi-user mode, "" otherwise (ReplaceNamespace)."""
        return namespace if self.multi_user else ""

    def _stored_text(self, table: str, column: str, text: str, *wraps: str) -> str:
        """TEXT as the database stores it in a ``varchar(255)`` column (see ``text_columns``, ``utf8mb3``)."""
        if self.text_columns == "wide" and not self.utf8mb3:
            return text
        column = "DisplayName" if column == "Display_name" else column
        store = f"Failed to store {table} to table"
        if self.utf8mb3 and any(ord(char) > 0xFFFF for char in text):
            if self.text_columns == "strict":
                raise _internal(f"{store}: Error 1366 (HY000): Incorrect string value: "
                                f"'{text.encode()[:12]!r}...' for column '{column}' at row 1", *wraps)
            text = "".join("?" if ord(char) > 0xFFFF else char for char in text)
        if self.text_columns != "wide" and len(text) > TEXT_COLUMN_CHARS:
            if self.text_columns == "strict":
                raise _internal(f"{store}: Error 1406 (22001): Data too long for column '{column}' at row 1", *wraps)
            text = text[:TEXT_COLUMN_CHARS]
        return text

    def _check_annotation_size(self, spec: Mapping[str, Any], *wraps: str) -> None:
        """Refuse a spec too large for the Workflow's annotations, as Kubernetes does (``annotation_limit_bytes``)."""
        if self.annotation_limit_bytes is None:
            return
        size = len(json.dumps(spec, separators=(",", ":")).encode("utf-8"))
        if size > self.annotation_limit_bytes:
            raise _internal(
                "Failed to create a workflow: Workflow.argoproj.io \"run-x\" is invalid: metadata.annotations: "
                f"Too long: must have at most {self.annotation_limit_bytes} bytes", *wraps)

    def _new_experiment(self, name: str, namespace: str, description: str,
                        created_at: datetime | None) -> dict[str, Any]:
        return _omit_empty({
            "experiment_id": str(uuid.uuid4()), "display_name": name, "description": description,
            "created_at": _rfc3339(created_at) if created_at else self._now(), "namespace": namespace,
            "storage_state": "AVAILABLE", "last_run_created_at": EPOCH,
        })

    def _new_run(self, body: Mapping[str, Any], created_at: datetime | None) -> dict[str, Any]:
        now = _rfc3339(created_at) if created_at else self._now()
        run: dict[str, Any] = {
            "experiment_id": body["experiment_id"], "run_id": str(uuid.uuid4()),
            "display_name": body.get("display_name", ""), "storage_state": "AVAILABLE",
            "description": body.get("description", ""),
            "service_account": body.get("service_account") or self.service_account,
            "created_at": now, "scheduled_at": now, "finished_at": EPOCH, "state": "PENDING",
            "state_history": [{"update_time": now, "state": "PENDING"}],
        }
        for source in ("pipeline_spec", "pipeline_version_reference"):
            if source in body:
                run[source] = copy.deepcopy(body[source])  # a Struct: kept verbatim, empty values included
        config = body.get("runtime_config")
        if config is not None:
            run["runtime_config"] = {key: copy.deepcopy(value) for key, value in config.items()
                                     if not _is_empty(value)}
        return {key: value for key, value in run.items() if key == "pipeline_spec" or not _is_empty(value)}

    def _experiment_or_404(self, experiment_id: str, *wraps: str) -> dict[str, Any]:
        experiment = self.experiments.get(experiment_id)
        if experiment is None:
            raise _not_found("Experiment", experiment_id, *wraps, f"Failed to get experiment {experiment_id}")
        return experiment

    def _run_or_404(self, run_id: str, *wraps: str) -> dict[str, Any]:
        run = self.runs.get(run_id)
        if run is None:
            raise _not_found("Run", run_id, *wraps, f"Failed to fetch run {run_id}")
        return run

    def _run_namespace(self, run: Mapping[str, Any]) -> str:
        return self.experiments.get(run.get("experiment_id", ""), {}).get("namespace", "")

    def _run_filter_value(self, run: dict[str, Any], key: str) -> Any:
        wire_field = _RUN_FILTER_KEYS[key]
        return self._run_namespace(run) if wire_field == "namespace" else _field_value(run, wire_field)

    def _run_experiment_id(self, experiment_id: str) -> str:
        """The run's experiment: must exist (404); multi-user needs one; single-user falls back to Default."""
        wraps = ("Failed to create a new run",
                 "Failed to create a run due to invalid experimentId and namespace combination")
        if experiment_id:
            self._experiment_or_404(experiment_id, *wraps,
                                    f"Failed to fetch namespace for experiment {experiment_id}")
            return experiment_id
        if self.multi_user:
            raise _invalid("Experiment id can not be empty in multi-user mode", *wraps)
        default = next((e for e in self.experiments.values() if e["display_name"] == "Default"), None)
        if default is None:
            default = self._new_experiment("Default", "", "All runs created without specifying an experiment "
                                           "will be grouped here.", None)
            self.experiments[default["experiment_id"]] = default
        return default["experiment_id"]

    def _run_pipeline_spec(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The PipelineSpec the run's parameters are checked against: inline, or a registered version's."""
        reference = body.get("pipeline_version_reference")
        if reference is not None:
            version_id = (reference or {}).get("pipeline_version_id", "")
            if version_id not in self.pipeline_versions:
                raise _not_found("PipelineVersion", version_id, "Failed to create a new run",
                                 "Failed to create a run due to error fetching manifest")
            return _check_pipeline_spec(self.pipeline_versions[version_id])
        return _check_pipeline_spec(body.get("pipeline_spec"))

    def _advance(self, run_id: str, *, via_list: bool) -> None:
        """Move a scripted run one step (GETs always; lists only if the script says so)."""
        script = self.run_scripts.get(run_id)
        if script is None or (via_list and not script.advance_on_list):
            return
        if script.position < len(script.steps) - 1:
            script.position += 1
            self._apply_step(self.runs[run_id], script.steps[script.position])

    def _apply_step(self, run: dict[str, Any], step: RunStep) -> None:
        self._set_state(run, step.state, step.error)
        for pod, text in (step.logs or {}).items():
            key = (run["run_id"], pod)
            self.task_logs[key] = self.task_logs.get(key, "") + text
        if step.task_details is not None:
            tasks = [_omit_empty({"run_id": run["run_id"], **task}) for task in step.task_details]
            details = run.setdefault("run_details", {})
            if tasks:
                details["task_details"] = tasks
            else:
                details.pop("task_details", None)
                if not details:
                    run.pop("run_details")

    def _set_state(self, run: dict[str, Any], state: str, error: Mapping[str, Any] | None = None,
                   *, record: bool = True) -> None:
        """Set STATE, appending to ``state_history`` on a change (unless not RECORD) and setting ``finished_at``
        when finished."""
        current = run.get("state", "RUNTIME_STATE_UNSPECIFIED")
        if state == current and error is None:
            return
        now = self._now()
        entry: dict[str, Any] = {"update_time": now, "state": state}
        if error:
            entry["error"] = _omit_empty(dict(error))
        if record:
            run.setdefault("state_history", []).append(_omit_empty(entry))
        if state == "RUNTIME_STATE_UNSPECIFIED":
            run.pop("state", None)
        else:
            run["state"] = state
        if state in FINISHED_STATES and run.get("finished_at", EPOCH) == EPOCH:
            run["finished_at"] = now


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
