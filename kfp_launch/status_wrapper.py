"""The ``--report-status`` wrapper: the user's pipeline, unchanged, inside ``dsl.ExitHandler``, whose exit task
posts the run's final state to GitLab as a commit status.

KFP v2 runs an exit handler's task whatever happened to the tasks it guards and passes it
``dsl.PipelineTaskFinalStatus`` (state and error message; kfp/dsl/task_final_status.py); kfp.local does too,
so the same wrapper runs on a laptop. The user's pipeline is loaded back from its compiled package and called
as a nested pipeline with the same parameters, so its own exit handlers, platform settings (kfp-kubernetes
secrets, volumes) and defaults stay as they are.

The exit task's own code uses only the standard library. Its GitLab token comes from the environment
variable :data:`TOKEN_ENV`, filled on Kubernetes from the secret the target names (key ``token``) with
kfp-kubernetes ``use_secret_as_env(optional=True)``: a missing secret leaves it unset, and the task then logs
why it could not report and succeeds, so the run's own outcome is unchanged. Locally, kfp-launch gives the
variable to that one task (``local_runner.run_local``'s ``executor_env``).

The only module that imports kfp-kubernetes (lazily: it is needed only to build the wrapper).
"""

from __future__ import annotations

import inspect
import tempfile
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfp_launch.errors import PipelineError
from kfp_launch.models import CompiledPipeline, ParameterType, PipelineParameter, StatusTarget

if TYPE_CHECKING:
    from kfp import dsl

TOKEN_ENV = "KFP_LAUNCH_GITLAB_TOKEN"
"""The exit task's environment variable holding the GitLab token (from the Kubernetes secret's ``token``)."""

EXIT_TASK = "kfp-launch-report-status"
"""The exit task's component name (``comp-…``) and, with ``exec-``, its executor label."""

EXECUTOR = "exec-" + EXIT_TASK
"""The exit task's executor label in the compiled package's ``deploymentSpec``."""

_TARGET_INPUTS = ("gitlab_url", "project", "sha", "pipeline_id", "name", "run_url_prefix", "fallback_url")

_PYTHON_TYPES: dict[ParameterType, type] = {
    ParameterType.INTEGER: int,
    ParameterType.FLOAT: float,
    ParameterType.STRING: str,
    ParameterType.BOOLEAN: bool,
    ParameterType.LIST: list,
    ParameterType.STRUCT: dict,
}


def report_status(
    status: dsl.PipelineTaskFinalStatus,
    gitlab_url: str,
    project: str,
    sha: str,
    pipeline_id: str,
    name: str,
    run_url_prefix: str,
    run_id: str,
    fallback_url: str,
    ca_bundle: str,
    proxy: str,
) -> None:
    """The exit task: post the run's final state to GitLab (``POST /api/v4/projects/:id/statuses/:sha``).

    Runs in the exit task's container with the standard library only: it must not fail the run, so every
    problem is printed and the task still succeeds. States: the KFP backend passes ML Metadata's execution
    state name (``COMPLETE``, ``CACHED``, ``FAILED``, ``CANCELED``: kubeflow/pipelines 2.17.0
    backend/src/v2/driver/resolve.go, ``GetLastKnownState().String()``, with an empty error message), kfp.local
    ``SUCCEEDED``/``FAILED`` with one: COMPLETE, CACHED, SUCCEEDED -> success; CANCELED, CANCELLED, CANCELING
    -> canceled; anything else -> failed. The description is KFP's error message when it gives one (at most
    255 characters). Retries HTTP 409 (another update in progress), 429, 5xx and network errors 3 times.
    """
    import json
    import os
    import ssl
    import sys
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    final = str(getattr(status, "state", "") or "").upper()
    state = {
        "SUCCEEDED": "success",
        "COMPLETE": "success",
        "CACHED": "success",
        "CANCELED": "canceled",
        "CANCELLED": "canceled",
        "CANCELING": "canceled",
    }.get(final, "failed")
    token = os.environ.get("KFP_LAUNCH_GITLAB_TOKEN", "").strip()
    if not token:
        print(
            f"kfp-launch: cannot report '{state}' to GitLab as '{name}': the variable KFP_LAUNCH_GITLAB_TOKEN is "
            "empty, so the Kubernetes secret that should fill it (key 'token') is missing in this namespace. "
            "Create it with a GitLab token of the api scope (Developer role); the run's outcome is unchanged.",
            file=sys.stderr,
        )
        return
    error = str(getattr(status, "error_message", "") or "").strip()
    said = {"success": "the run succeeded", "canceled": "the run was canceled"}
    description = (error or said.get(state, f"the run failed ({final or 'no state'}); its page says why"))[:255]
    link = run_url_prefix + run_id if run_url_prefix else fallback_url
    data: dict[str, object] = {"state": state, "name": name, "description": description}
    if link:
        data["target_url"] = link
    if pipeline_id:
        data["pipeline_id"] = int(pipeline_id)
    problem = ""
    try:  # nothing here may fail the run it reports on
        url = f"{gitlab_url.rstrip('/')}/api/v4/projects/{urllib.parse.quote(project, safe='')}/statuses/{sha}"
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=ca_bundle or None))
        ]
        if proxy:
            handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
        opener = urllib.request.build_opener(*handlers)
        request = urllib.request.Request(
            url,
            data=json.dumps(data).encode(),
            headers={"PRIVATE-TOKEN": token, "Content-Type": "application/json"},
            method="POST",
        )
        for attempt in range(4):
            try:
                with opener.open(request, timeout=30) as response:
                    print(f"kfp-launch: reported '{state}' to GitLab as '{name}' (HTTP {response.status})")
                    return
            except urllib.error.HTTPError as exc:
                answer = exc.read()[:300].decode("utf-8", "replace")
                if exc.code not in (409, 429) and exc.code < 500:
                    print(
                        f"kfp-launch: GitLab refused '{state}' for '{name}': HTTP {exc.code} {answer}", file=sys.stderr
                    )
                    return
                problem = f"HTTP {exc.code} {answer}"
            except Exception as exc:  # noqa: BLE001 - OSError, http.client.HTTPException...: retried
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < 3:
                time.sleep(2 ** (attempt + 1))
    except Exception as exc:  # noqa: BLE001 - a bad CA bundle, URL...: said, never raised
        problem = f"{type(exc).__name__}: {exc}"
    print(f"kfp-launch: could not report '{state}' to GitLab as '{name}': {problem}", file=sys.stderr)


def wrap_for_status(compiled: CompiledPipeline, target: StatusTarget) -> CompiledPipeline:
    """``compiled`` inside an exit handler that reports to ``target``: same name, parameters and defaults.

    Raises:
        PipelineError: the wrapper does not compile (the message says why; nothing was submitted).
    """
    from kfp import compiler, components, dsl, kubernetes

    user = components.load_component_from_text(compiled.package_yaml)
    exit_component = dsl.component(base_image=target.image)(_typed_exit_function(dsl.PipelineTaskFinalStatus))
    # The component's name is the function's: rename it so that it cannot collide with a user's component.
    exit_component.component_spec.name = EXIT_TASK
    signature = _signature(compiled.parameters)

    def pipeline_body(*args: Any, **kwargs: Any) -> None:
        arguments = dict(signature.bind(*args, **kwargs).arguments)
        exit_task = exit_component(
            gitlab_url=target.gitlab_url,
            project=target.project,
            sha=target.sha,
            pipeline_id=target.pipeline_id,
            name=target.name,
            run_url_prefix=target.run_url_prefix,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            fallback_url=target.fallback_url,
            ca_bundle=target.ca_bundle,
            proxy=target.proxy,
        )
        exit_task.set_display_name("report status to GitLab")
        exit_task.set_caching_options(False)
        kubernetes.use_secret_as_env(
            exit_task, secret_name=target.secret, secret_key_to_env={"token": TOKEN_ENV}, optional=True
        )
        with dsl.ExitHandler(exit_task, name=compiled.pipeline_name):
            user(**arguments)

    pipeline_body.__signature__ = signature  # type: ignore[attr-defined]
    pipeline_body.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    with tempfile.TemporaryDirectory(prefix="kfp-launch-") as tmp:
        path = Path(tmp) / "wrapped.yaml"
        try:
            wrapper = dsl.pipeline(name=compiled.pipeline_name, description=compiled.description or None)(pipeline_body)
            compiler.Compiler().compile(pipeline_func=wrapper, package_path=str(path))
        except Exception as exc:  # noqa: BLE001 - the SDK's errors, said as the job's
            raise PipelineError(
                f"Wrapping job {compiled.job} for --report-status failed with {type(exc).__name__}: {exc}",
                hint="run it without --report-status, and tell the kfp-launch maintainers; nothing was submitted.",
            ) from None
        wrapped = _with_pipeline_settings(path.read_text(encoding="utf-8"), compiled.package_yaml)
    return replace(compiled, package_yaml=wrapped)


def _with_pipeline_settings(wrapped_yaml: str, original_yaml: str) -> str:
    """The wrapped package with the user's pipeline-level settings, which a nested pipeline does not carry:
    ``defaultPipelineRoot``, ``pipelineInfo.displayName`` and the platform spec's ``pipelineConfig``
    (workspace, TTL, active deadline: kfp 2.17 ``dsl.pipeline(pipeline_config=...)``)."""
    import yaml

    original = list(yaml.safe_load_all(original_yaml))
    wrapped = list(yaml.safe_load_all(wrapped_yaml))
    spec, user = wrapped[0], original[0]
    if "defaultPipelineRoot" in user:
        spec["defaultPipelineRoot"] = user["defaultPipelineRoot"]
    if "displayName" in user.get("pipelineInfo", {}):
        spec["pipelineInfo"]["displayName"] = user["pipelineInfo"]["displayName"]
    config = (original[1] if len(original) > 1 else {}).get("platforms", {}).get("kubernetes", {}).get("pipelineConfig")
    if config is not None:
        if len(wrapped) < 2:
            wrapped.append({"platforms": {"kubernetes": {}}})
        wrapped[1].setdefault("platforms", {}).setdefault("kubernetes", {})["pipelineConfig"] = config
    return yaml.safe_dump_all(wrapped, sort_keys=False)


def _typed_exit_function(final_status_type: type) -> Callable[..., None]:
    """:func:`report_status` with its annotations as types (this module's are strings), as the component
    factory reads them; its source, which the exit task runs, is the same function's."""
    function = types.FunctionType(report_status.__code__, report_status.__globals__, report_status.__name__)
    function.__annotations__ = {
        name: (final_status_type if name == "status" else str) for name in inspect.signature(report_status).parameters
    } | {"return": None}
    function.__doc__ = report_status.__doc__
    return function


def _signature(parameters: tuple[PipelineParameter, ...]) -> inspect.Signature:
    """The user's pipeline signature from its compiled parameters (types by the IR, the same defaults)."""
    built = []
    for p in parameters:
        annotation: Any = _PYTHON_TYPES.get(p.type, str)
        if p.optional and not p.has_default:
            annotation = typing.Optional[annotation]  # noqa: UP045 - KFP's tracer reads Optional, not X | None
        default = p.default if p.has_default else (None if p.optional else inspect.Parameter.empty)
        built.append(
            inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)
        )
    return inspect.Signature(built)


def target_from_spec(pipeline_spec: object) -> StatusTarget | None:
    """The :class:`StatusTarget` a wrapped run reports to, read back from its pipeline spec (the exit task's
    constant inputs in the root DAG), or None for a run submitted without ``--report-status``."""
    spec: Any = pipeline_spec
    if isinstance(spec, Mapping) and isinstance(spec.get("pipeline_spec"), Mapping):
        spec = spec["pipeline_spec"]  # a spec with a platform spec comes wrapped
    try:
        tasks = spec["root"]["dag"]["tasks"]
        task = next(t for t in tasks.values() if t["componentRef"]["name"] == "comp-" + EXIT_TASK)
        inputs = task["inputs"]["parameters"]
        values = {name: str(inputs[name]["runtimeValue"]["constant"]) for name in _TARGET_INPUTS}
        url = urllib.parse.urlsplit(values["gitlab_url"])
    except (KeyError, TypeError, StopIteration, AttributeError, ValueError):
        return None
    if (
        url.scheme not in ("http", "https")
        or not url.netloc
        or (not values["pipeline_id"].isdigit() and values["pipeline_id"])
    ):
        return None  # not what kfp-launch writes: a spec edited by hand
    return StatusTarget(**values)
