"""Reading the KFP API server's answers into our plain models: the JSON of experiments, runs and tasks
(snake_case, empty fields omitted: protojson with ``UseProtoNames: true, EmitUnpopulated: false``, see
docs/kfp-backend-notes.md, 'Response JSON'), error messages, and bodies that are not what they claim.

Pure functions over bytes and dicts; ``kfp_api.py`` makes the requests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kfp_launch.errors import KfpApiError, KfpAuthError
from kfp_launch.models import Experiment, RunStatus, TaskResult
from kfp_launch.states import RunState
from kfp_launch.status_wrapper import target_from_spec

_EPOCH_PREFIX = "1970-01-01T00:00:00"


def json_body(raw: Any, data: bytes, what: str, *, expect_json: bool) -> dict[str, Any]:
    content_type = (raw.headers.get("content-type") or "").lower()
    text = data.lstrip()[:1]
    if "html" in content_type or text == b"<":
        raise KfpAuthError(
            f"Kubeflow answered {what} with an HTML page (HTTP {raw.status}) instead of JSON: "
            "a login page of the authentication proxy in front of Kubeflow.",
            hint="the credentials are missing or expired: set KFP_TOKEN, KF_PIPELINES_SA_TOKEN_PATH or "
            "KFP_COOKIE (see README, Connecting to Kubeflow).",
        )
    if not data.strip():
        if expect_json:
            raise KfpApiError(f"Kubeflow answered {what} with an empty body (HTTP {raw.status}).")
        return {}
    try:
        parsed = json.loads(data)
    except ValueError:
        raise KfpApiError(f"Kubeflow answered {what} with a body that is not JSON (HTTP {raw.status}).") from None
    return parsed if isinstance(parsed, dict) else {}


def server_message(body: object) -> str:
    try:
        data = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        data = None
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str):
        return message
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    return " ".join(text.split())[:300]


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value or value.startswith(_EPOCH_PREFIX):
        return None
    try:
        return datetime.fromisoformat(value)  # Python 3.11 parses the "Z" suffix
    except ValueError:
        return None


def parse_experiment(data: Mapping[str, Any]) -> Experiment:
    if not data.get("experiment_id"):
        raise KfpApiError("Kubeflow returned an experiment without an id.")
    return Experiment(
        experiment_id=data["experiment_id"],
        name=data.get("display_name", ""),
        description=data.get("description", ""),
        namespace=data.get("namespace", ""),
        archived=data.get("storage_state") == "ARCHIVED",
    )


def _error_message(error: object) -> str:
    return str(error.get("message", "")) if isinstance(error, Mapping) else ""


def parse_run(data: Mapping[str, Any]) -> RunStatus:
    if not data.get("run_id"):
        raise KfpApiError("Kubeflow returned a run without an id.")
    details = data.get("run_details") or {}
    history = tuple(
        (RunState.parse(h.get("state")), _error_message(h.get("error"))) for h in data.get("state_history") or []
    )
    return RunStatus(
        run_id=data["run_id"],
        experiment_id=data.get("experiment_id", ""),
        name=data.get("display_name", ""),
        description=data.get("description", ""),
        state=RunState.parse(data.get("state")),
        created_at=_time(data.get("created_at")),
        finished_at=_time(data.get("finished_at")),
        error=_error_message(data.get("error")),
        state_history=history,
        tasks=tuple(_task(t) for t in details.get("task_details") or []),
        parameters=dict((data.get("runtime_config") or {}).get("parameters") or {}),
        parameter_defaults=_parameter_defaults(data.get("pipeline_spec")),
        status_target=target_from_spec(data.get("pipeline_spec")),
    )


def _parameter_defaults(spec: object) -> dict[str, object]:
    """The pipeline's parameter defaults from a run's ``pipeline_spec`` (``root.inputDefinitions.parameters
    .<name>.defaultValue``; a spec with a platform spec comes wrapped as ``{"pipeline_spec": ..., ...}``)."""
    if not isinstance(spec, Mapping):
        return {}
    if isinstance(spec.get("pipeline_spec"), Mapping):
        spec = spec["pipeline_spec"]
    root = spec.get("root") if isinstance(spec, Mapping) else None
    inputs = (root or {}).get("inputDefinitions") or {} if isinstance(root, Mapping) else {}
    parameters = inputs.get("parameters") or {} if isinstance(inputs, Mapping) else {}
    return {
        name: _typed(definition["defaultValue"], definition.get("parameterType"))
        for name, definition in parameters.items()
        if isinstance(definition, Mapping) and "defaultValue" in definition
    }


def _typed(value: object, parameter_type: object) -> object:
    # protobuf Struct numbers are doubles: an integer parameter's default 300 is stored as 300.0.
    if parameter_type == "NUMBER_INTEGER" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _task(data: Mapping[str, Any]) -> TaskResult:
    start, end = _time(data.get("start_time")), _time(data.get("end_time"))
    errors = [_error_message(data.get("error"))] + [
        _error_message(h.get("error")) for h in data.get("state_history") or []
    ]
    pods = [c.get("pod_name") for c in data.get("child_tasks") or [] if c.get("pod_name")]
    if data.get("pod_name"):
        pods.append(data["pod_name"])
    return TaskResult(
        name=data.get("display_name") or data.get("task_id", "?"),
        state=RunState.parse(data.get("state")),
        duration_s=(end - start).total_seconds() if start and end else None,
        error=next((e for e in errors if e), ""),
        node_ids=tuple(dict.fromkeys(pods)),
        task_id=str(data.get("task_id", "")),
        pod_name=str(data.get("pod_name") or ""),
    )
