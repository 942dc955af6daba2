"""Plain frozen values that cross module boundaries (no vendor types here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from kfp_launch.errors import ExitCode
from kfp_launch.states import OutcomeState, RunState


class ParameterType(StrEnum):
    """A pipeline parameter's type, as the compiled pipeline's IR declares it.

    Source: ``PipelineSpec.root.input_definitions.parameters[*].parameter_type``
    (``kfp.pipeline_spec.pipeline_spec_pb2.ParameterType``), which is also what the KFP API
    server validates run parameters against (kubeflow/pipelines backend/src/apiserver/template/v2_template.go
    (2.17.0), ``V2Spec.validatePipelineJobInputs``).
    """

    INTEGER = "NUMBER_INTEGER"
    FLOAT = "NUMBER_DOUBLE"
    STRING = "STRING"
    BOOLEAN = "BOOLEAN"
    LIST = "LIST"
    STRUCT = "STRUCT"
    TASK_FINAL_STATUS = "TASK_FINAL_STATUS"

    @property
    def label(self) -> str:
        """Short user-facing name: ``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``."""
        return _LABELS[self]

    @property
    def python_annotation(self) -> str:
        """The Python type annotation for a generated dataclass field, e.g. ``"list[object]"``."""
        return _ANNOTATIONS[self]


_LABELS = {
    ParameterType.INTEGER: "int",
    ParameterType.FLOAT: "float",
    ParameterType.STRING: "str",
    ParameterType.BOOLEAN: "bool",
    ParameterType.LIST: "list",
    ParameterType.STRUCT: "dict",
    ParameterType.TASK_FINAL_STATUS: "task-final-status",
}
_ANNOTATIONS = {
    ParameterType.INTEGER: "int",
    ParameterType.FLOAT: "float",
    ParameterType.STRING: "str",
    ParameterType.BOOLEAN: "bool",
    ParameterType.LIST: "list[object]",
    ParameterType.STRUCT: "dict[str, object]",
    ParameterType.TASK_FINAL_STATUS: "object",
}


@dataclass(frozen=True, kw_only=True)
class PipelineParameter:
    """One input parameter of a compiled pipeline.

    Attributes:
        name: the parameter name as in the pipeline function's signature.
        type: its IR type.
        default: the default value as a plain Python value (``None`` when there is none).
        has_default: whether the pipeline declares a default.
        optional: whether KFP accepts a run without a value (a default, or ``Optional[...] = None``).
        description: the parameter's docstring description, if any.
    """

    name: str
    type: ParameterType
    default: object = None
    has_default: bool = False
    optional: bool = False
    description: str = ""

    @property
    def is_required(self) -> bool:
        """True when a run must provide a value (not optional and no default)."""
        return not self.optional and not self.has_default


@dataclass(frozen=True, kw_only=True)
class CompiledPipeline:
    """A job's pipeline, compiled to a KFP v2 pipeline package.

    Attributes:
        job: the job name (module ``<package>.<job>``).
        module: the full module name, e.g. ``"pipelines.train"``.
        function: the name of the ``@dsl.pipeline`` object in the module.
        pipeline_name: the pipeline's name (``pipelineInfo.name``).
        description: the pipeline's description ('' if none).
        package_yaml: the pipeline package as YAML text (what ``kfp compile`` writes).
        parameters: the pipeline's input parameters, in signature order.
        profiles: the module's ``PROFILES`` mapping (profile name -> parameter values).
    """

    job: str
    module: str
    function: str
    pipeline_name: str
    description: str
    package_yaml: str
    parameters: tuple[PipelineParameter, ...]
    profiles: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def parameter(self, name: str) -> PipelineParameter | None:
        """Return the parameter called ``name``, or None."""
        return next((p for p in self.parameters if p.name == name), None)


@dataclass(frozen=True, kw_only=True)
class ParameterValue:
    """A resolved parameter value and where it came from.

    Attributes:
        name: parameter name.
        value: the typed value (int, float, str, bool, list or dict).
        source: where it came from: ``"default"``, ``"profile toy"``, ``"params file p.yaml"``
            or ``"--param"``.
    """

    name: str
    value: object
    source: str


@dataclass(frozen=True, kw_only=True)
class ResolvedParameters:
    """The parameters a run gets, after coercion and validation.

    Attributes:
        values: every parameter that has a value (given or default), in signature order.
    """

    values: tuple[ParameterValue, ...]

    def arguments(self) -> dict[str, object]:
        """The values to submit: those not taken from the pipeline's defaults, by name."""
        return {v.name: v.value for v in self.values if v.source != "default"}

    def as_dict(self) -> dict[str, object]:
        """Every value by name, defaults included."""
        return {v.name: v.value for v in self.values}


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    """How one task of a run ended.

    Attributes:
        name: the task's name (e.g. ``"build-and-fit"``).
        state: the task's state (the run states: SUCCEEDED, FAILED, SKIPPED, RUNNING…).
        duration_s: wall time in seconds, when known.
        error: the task's error message ('' if none).
        log_tail: the last lines of the task's log (empty when unknown).
        node_ids: on Kubeflow, the task's pods (its ``child_tasks`` pods and its own), for the API server's
            log endpoint; ``failure_logs.log_pods`` says which one holds the task's log.
        task_id: on Kubeflow, the task's id.
        pod_name: on Kubeflow, the task's own ``pod_name`` ('' if none).
        log_source: the pod ``log_tail`` was read from ('' when none, or on a laptop).
    """

    name: str
    state: RunState
    duration_s: float | None = None
    error: str = ""
    log_tail: tuple[str, ...] = ()
    node_ids: tuple[str, ...] = ()
    task_id: str = ""
    pod_name: str = ""
    log_source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", RunState.parse(self.state))  # a plain string becomes the enum


@dataclass(frozen=True, kw_only=True)
class StatusTarget:
    """Where a run's state goes as a GitLab commit status (``--report-status``), captured at submission.

    GitLab's ``POST /projects/:id/statuses/:sha`` (docs.gitlab.com/api/commits, 'Set the pipeline status of
    a commit') takes these; with ``pipeline_id`` the status is a job of that pipeline, so it gates the merge
    request like any job.

    Attributes:
        gitlab_url: GitLab's base URL (``CI_SERVER_URL``), e.g. ``https://gitlab.example.com``.
        project: the project id or ``group/project`` path (``CI_PROJECT_ID``).
        sha: the pipeline's commit (``CI_COMMIT_SHA``: GitLab requires the pipeline's own sha).
        pipeline_id: the GitLab pipeline (``CI_PIPELINE_ID``), '' on a laptop (GitLab then picks or creates
            one for the commit).
        name: the status's name, ``kfp: <job>`` plus the CI job's parallel/matrix suffix.
        run_url_prefix: the KFP UI's run link without the run id ('' for a local run).
        fallback_url: the link when there is no run page (a local run: the CI job, ``CI_JOB_URL``), or ''.
        ca_bundle: PEM text of the CA that signs GitLab's certificate ('' : the image's own CAs).
        proxy: the HTTPS proxy to reach GitLab through ('' : none).
        secret: the Kubernetes secret (key ``token``) that gives the exit task its GitLab token.
        image: the exit task's container image.
    """

    gitlab_url: str
    project: str
    sha: str
    pipeline_id: str
    name: str
    run_url_prefix: str = ""
    fallback_url: str = ""
    ca_bundle: str = ""
    proxy: str = ""
    secret: str = "kfp-launch-gitlab"
    image: str = "python:3.11"


@dataclass(frozen=True, kw_only=True)
class MetricValue:
    """One scalar logged to a ``Metrics`` artifact (``metrics.log_metric(name, value)``).

    Attributes:
        task: the task that logged it.
        artifact: the output artifact's name (e.g. ``"metrics"``).
        name: the metric's name.
        value: its value (a number).
    """

    task: str
    artifact: str
    name: str
    value: float


@dataclass(frozen=True, kw_only=True)
class LocalRunOutcome:
    """The result of a pipeline run with ``kfp.local``.

    Attributes:
        job: the job name.
        state: SUCCEEDED or FAILED.
        tasks: tasks in the order they finished.
        outputs: the pipeline's declared outputs (empty on failure).
        metrics: every ``Metrics`` value the tasks logged.
        error: the failure message without ANSI codes ('' on success).
        failed_task: the innermost failing task's name ('' on success or when unknown).
        run_dir: the directory holding the run's artifacts.
        log_path: the file holding the full kfp.local log of the run.
        duration_s: wall time of the run in seconds.
    """

    job: str
    state: RunState
    tasks: tuple[TaskResult, ...]
    outputs: Mapping[str, object]
    metrics: tuple[MetricValue, ...]
    error: str
    failed_task: str
    run_dir: str
    log_path: str
    duration_s: float

    @property
    def succeeded(self) -> bool:
        """True when the run ended in SUCCEEDED."""
        return self.state == RunState.SUCCEEDED


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    """How a launched run ended (or why the wait stopped): what reports, notes and the exit code use.

    Attributes:
        job: the job name.
        pipeline_name: the pipeline's name.
        state: how it ended (:class:`~kfp_launch.states.OutcomeState`): the run's final state, or why the
            wait stopped first.
        exit_code: the process exit code this outcome maps to (:func:`kfp_launch.states.exit_code_for`).
        run_id: the KFP run id ('' for local runs).
        run_url: the run's UI link ('' for local runs).
        experiment_id: the KFP experiment id ('' for local runs).
        experiment: the experiment's name ('' when none).
        tasks: the run's tasks as last seen.
        metrics: ``Metrics`` values logged by the tasks (local runs only).
        metrics_available: False on Kubeflow, where the v2beta1 API exposes no metric values (they live
            in ML Metadata): say so rather than guess.
        parameters: the parameter values the run got, by name.
        duration_s: the run's duration in seconds, when known.
        message: one line explaining a non-success ('' on success).
        local: True for a kfp.local run.
    """

    job: str
    pipeline_name: str
    state: OutcomeState
    exit_code: ExitCode
    run_id: str = ""
    run_url: str = ""
    experiment_id: str = ""
    experiment: str = ""
    tasks: tuple[TaskResult, ...] = ()
    metrics: tuple[MetricValue, ...] = ()
    metrics_available: bool = True
    parameters: Mapping[str, object] = field(default_factory=dict)
    duration_s: float | None = None
    message: str = ""
    local: bool = False


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """A KFP experiment.

    Attributes:
        experiment_id: its id.
        name: its display name.
        description: its description.
        namespace: its namespace ('' in single-user mode).
        archived: whether its storage state is ARCHIVED.
    """

    experiment_id: str
    name: str
    description: str = ""
    namespace: str = ""
    archived: bool = False


@dataclass(frozen=True, kw_only=True)
class RunStatus:
    """A KFP run as last read from the API server.

    Attributes:
        run_id, experiment_id, name, description: as KFP stores them.
        state: the run state (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ...; ``RUNTIME_STATE_UNSPECIFIED``
            when the server omits it).
        created_at, finished_at: aware datetimes (``finished_at`` None until the run finishes).
        error: the run's top-level error message (usually empty even for FAILED runs: kubeflow/pipelines
            backend/src/apiserver/server/api_converter.go (2.17.0), ``toApiRun``; docs/kfp-backend-notes.md,
            'Where a failed run says why').
        state_history: ``(state, error message)`` pairs, oldest first.
        tasks: the run's tasks (``run_details.task_details``).
        parameters: the runtime parameters (the values the run was given).
        parameter_defaults: the pipeline's defaults, from the run's pipeline spec (empty for runs of a
            pipeline version, whose spec the run does not carry).
        status_target: where a run submitted with ``--report-status`` reports its state (read back from its
            exit task in the pipeline spec), or None.
    """

    run_id: str
    experiment_id: str = ""
    name: str = ""
    description: str = ""
    state: RunState = RunState.UNSPECIFIED
    created_at: datetime | None = None
    finished_at: datetime | None = None
    error: str = ""
    state_history: tuple[tuple[RunState, str], ...] = ()
    tasks: tuple[TaskResult, ...] = ()
    parameters: Mapping[str, object] = field(default_factory=dict)
    parameter_defaults: Mapping[str, object] = field(default_factory=dict)
    status_target: StatusTarget | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", RunState.parse(self.state))  # a plain string becomes the enum

    @property
    def effective_parameters(self) -> dict[str, tuple[object, bool]]:
        """Every parameter's value and whether it is the pipeline's default (not given to the run)."""
        values: dict[str, tuple[object, bool]] = {n: (v, False) for n, v in self.parameters.items()}
        values.update({n: (v, True) for n, v in self.parameter_defaults.items() if n not in values})
        return values

    @property
    def is_terminal(self) -> bool:
        """True when the state can no longer change (SUCCEEDED, FAILED, SKIPPED, CANCELED)."""
        return self.state.is_terminal

    @property
    def was_canceling(self) -> bool:
        """True when the state history shows CANCELING (someone asked KFP to terminate it)."""
        return any(state == RunState.CANCELING for state, _ in self.state_history)
