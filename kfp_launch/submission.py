"""Putting runs on Kubeflow: the branch's experiment, each run's name and description, and idempotent
submission that keeps the state file (``state_file.py``) true at every step.

Idempotency: every run's description ends with a key line
``kfp-launch-key: <project>/<CI pipeline id>/<CI job name>/<job>/<nonce>``. A create call that failed in a way that
may have created the run (5xx, timeout, dropped connection) is resolved by looking the run up by its
key, never by posting blindly again; and a retried CI job of the same CI pipeline attaches to that
pipeline's still-active run of the job instead of submitting another.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from kfp_launch import interrupts
from kfp_launch.app import App
from kfp_launch.ci_context import CiContext
from kfp_launch.descriptions import run_description
from kfp_launch.errors import (
    ConfigError,
    Interrupted,
    KfpLaunchError,
    KfpUnavailableError,
    TransientKfpError,
)
from kfp_launch.kfp_api import KfpApi
from kfp_launch.models import Experiment, RunStatus
from kfp_launch.naming import attach_prefixes, inputs_digest, new_run_key, run_key
from kfp_launch.pipeline_package import without_caching
from kfp_launch.plan import JobPlan
from kfp_launch.state_file import StateEntry, read_state, recorded_by_this_job, write_state
from kfp_launch.states import RunState
from kfp_launch.termination import terminate_runs

RUN_NAME_FIELDS = ("job", "commit", "pipeline", "branch", "ticket", "mr")


class RunApi(Protocol):
    """What submission needs from the KFP adapter (``kfp_api.KfpApi``)."""

    def list_runs(
        self, experiment_id: str, *, display_name: str | None = None, page_size: int = 100
    ) -> list[RunStatus]: ...


def run_name(template: str, *, job: str, ci: CiContext) -> str:
    """Render the run name template (fields: {job} {commit} {pipeline} {branch} {ticket} {mr});
    missing fields render empty and spaces collapse, so ``"{job} {commit} {pipeline}"`` gives
    ``"train 1a2b3c4d 1001"`` in CI and ``"train 1a2b3c4d"`` on a laptop.

    Raises:
        ConfigError: an unknown field, naming the ``run_name_template`` setting.
    """
    from kfp_launch.naming import sanitize_display_name

    values = {
        "job": job,
        "commit": ci.short_sha or "",
        "pipeline": ci.pipeline_id or "",
        "branch": ci.ref or "",
        "ticket": ci.ticket or "",
        "mr": f"!{ci.merge_request_iid}" if ci.merge_request_iid else "",
    }
    try:
        rendered = template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f'run_name_template "{template}" is invalid ({type(exc).__name__}: {exc}).',
            hint="valid fields: " + ", ".join("{" + f + "}" for f in RUN_NAME_FIELDS) + ".",
        ) from None
    name = " ".join(rendered.split()) or job
    return sanitize_display_name(name)


def find_earlier_attempt(
    api: RunApi, experiment_id: str, name: str, same_inputs: str, same_job: str
) -> tuple[RunStatus | None, RunStatus | None]:
    """This CI job's earlier runs of the job (by their keys, see ``naming.attach_prefixes``).

    Returns:
        ``(to attach to, other inputs)``: the newest run with the same inputs if it is still active or it
        SUCCEEDED (the retry after an outage, exit 5, during which it finished: its result is reported, not
        run again; FAILED, SKIPPED and canceled runs are run again), and the newest run of this CI job with
        other inputs (parameters, pipeline or options changed), or None for either.
    """
    other: RunStatus | None = None
    for run in api.list_runs(experiment_id, display_name=name):
        key = run_key(run.description) or ""
        if key.startswith(same_inputs):
            return (run if run.state.is_attachable or run.state == RunState.SUCCEEDED else None), other
        if key.startswith(same_job) and other is None:
            other = run
    return None, other


def find_by_key(api: RunApi, experiment_id: str, name: str, key: str) -> RunStatus | None:
    """The run named ``name`` whose key is exactly ``key``, or None."""
    return next((r for r in api.list_runs(experiment_id, display_name=name) if run_key(r.description) == key), None)


def create_run_once(
    api: RunApi,
    *,
    experiment_id: str,
    name: str,
    key: str,
    create: Callable[[], RunStatus],
    retry: Callable[[Callable[[], RunStatus]], RunStatus],
) -> RunStatus:
    """Create the run exactly once, despite ambiguous failures.

    After a failure that may have stored the run (``maybe_applied``), the next attempt first looks the
    run up by its key and returns it if it exists; only a confirmed absence allows another POST.

    Args:
        api: the adapter (for look-ups by key).
        experiment_id, name, key: identify the run being created.
        create: one create attempt (``POST /runs``).
        retry: runs an attempt with the transient-retry rule (``polling.call_with_retry``).

    Raises:
        KfpUnavailableError: still failing after the allowed outage (no duplicate was created).
    """
    must_check = False

    def attempt() -> RunStatus:
        nonlocal must_check
        if must_check:
            found = find_by_key(api, experiment_id, name, key)  # a transient failure here is retried too
            if found is not None:
                return found
            must_check = False
        try:
            return create()
        except TransientKfpError as exc:
            must_check = exc.maybe_applied
            raise

    return retry(attempt)


def environ_experiment_overrides(environ: Mapping[str, str]) -> list[str]:
    """The SDK's experiment-name variables that are set (we resolve the experiment ourselves and
    pass its id, so they are ignored: kubeflow/pipelines sdk/python/kfp/client/client.py (2.17.0),
    ``Client.create_run_from_pipeline_package``)."""
    names = ("KF_PIPELINES_DEFAULT_EXPERIMENT_NAME", "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME")
    return [n for n in names if environ.get(n, "").strip()]


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    """A run about to be submitted: what, under which name, with which key.

    Attributes:
        plan: the job, compiled, with its parameters.
        name: the run's display name.
        inputs: the digest of its inputs (``naming.inputs_digest``).
        key: the run's kfp-launch key (the first line of its description).
    """

    plan: JobPlan
    name: str
    inputs: str
    key: str


@dataclass(frozen=True, kw_only=True)
class SubmittedRun:
    """A run that exists on Kubeflow: ours, or this CI job's earlier attempt's (``attached``).

    Attributes:
        plan: the job, compiled, with its parameters.
        run: the run as created or found.
        url: its UI link.
        attached: True when a retried CI job took over its earlier attempt's run.
    """

    plan: JobPlan
    run: RunStatus
    url: str
    attached: bool


def plan_runs(app: App, plans: list[JobPlan]) -> list[PlannedRun]:
    """Name each run (``run_name_template``) and give it a fresh key.

    Raises:
        ConfigError: an invalid ``run_name_template``.
    """
    ci, settings = app.ci, app.settings
    options = {
        "no_cache": settings.no_cache,
        "service_account": settings.service_account,
        "pipeline_root": settings.pipeline_root,
    }
    planned = []
    for p in plans:
        inputs = inputs_digest(p.compiled.package_yaml, p.params.as_dict(), options)
        name = run_name(settings.run_name_template, job=p.job, ci=ci)
        planned.append(PlannedRun(plan=p, name=name, inputs=inputs, key=new_run_key(ci, p.job, inputs)))
    return planned


def submit_recorded(
    app: App,
    api: KfpApi,
    experiment: Experiment,
    planned: list[PlannedRun],
    on_submitted: Callable[[SubmittedRun], None] = lambda _run: None,
) -> list[SubmittedRun]:
    """Submit (or attach) each planned run, keeping the state file true at every step; ``on_submitted`` is
    told of each run as soon as it exists (``--report-status`` posts its ``running`` status then).

    The state file is written before the first request, with each run's key: an unwritable path fails
    before anything is submitted, and a job killed mid-submission leaves what ``cancel --state-file``
    needs to find its run. A signal during submission terminates what was created (``--on-cancel``),
    including a run whose create call was cut short (found by its key).

    Raises:
        InputError: the state file cannot be written (nothing submitted).
        KfpUnavailableError: Kubeflow failed for too long (exit 5): what was submitted is left for the
            CI job's retry, which attaches to it (the state file says ``detach``).
        Interrupted / KeyboardInterrupt: after terminating what was submitted.
    """
    ci, settings, console = app.ci, app.settings, app.console
    state_path = app.project_dir / settings.state_file
    entries = [
        StateEntry(
            run_id="",
            experiment_id=experiment.experiment_id,
            host=api.connection.host,
            namespace=api.connection.namespace,
            url="",
            job=p.plan.job,
            cancel_policy=settings.on_cancel,
            run_key=p.key,
            run_name=p.name,
            ci_job_id=ci.job_id or "",
        )
        for p in planned
    ]
    earlier = read_state(state_path) if recorded_by_this_job(state_path, ci.job_id) else []  # same CI job's runs
    write_state(state_path, earlier + entries)
    submitted: list[SubmittedRun] = []
    try:
        for i, p in enumerate(planned):
            run, attached = submit_or_attach(app, api, experiment, p)
            url = api.connection.run_url(run.run_id)
            entries[i] = replace(entries[i], run_id=run.run_id, url=url, run_key=run_key(run.description) or p.key)
            write_state(state_path, earlier + entries)
            console.url(p.plan.job if len(planned) > 1 else "run", url)
            if not attached:
                console.line("submitted run " + run.run_id)
            submitted.append(SubmittedRun(plan=p.plan, run=run, url=url, attached=attached))
            on_submitted(submitted[-1])
    except (Interrupted, KeyboardInterrupt):
        _terminate_submitted(app, api, experiment, planned, submitted)
        raise
    except KfpUnavailableError:
        write_state(state_path, earlier + [replace(e, cancel_policy="detach") for e in entries])
        raise
    except KfpLaunchError as exc:
        if not submitted:
            raise
        # A later job was refused (e.g. too large for the backend): the command fails, so it does not leave
        # the earlier runs behind unwatched.
        run_ids = [s.run.run_id for s in submitted]
        with interrupts.deferred():
            terminate_runs(api, run_ids, console, why=f"job {planned[len(submitted)].plan.job} was refused")
        exc.message += f" The runs already submitted ({', '.join(s.plan.job for s in submitted)}) were terminated."
        raise
    return submitted


def _terminate_submitted(
    app: App, api: KfpApi, experiment: Experiment, planned: list[PlannedRun], submitted: list[SubmittedRun]
) -> None:
    with interrupts.deferred():
        run_ids = [s.run.run_id for s in submitted]
        if (
            len(submitted) < len(planned) and app.settings.on_cancel != "detach"
        ):  # the create call in flight may have stored it
            cut = planned[len(submitted)]
            try:
                found = find_by_key(api, experiment.experiment_id, cut.name, cut.key)
            except KfpLaunchError:
                found = None
            run_ids += [found.run_id] if found else []
        terminate_runs(api, run_ids, app.console, why="interrupted while submitting", policy=app.settings.on_cancel)


def submit_or_attach(app: App, api: KfpApi, experiment: Experiment, planned: PlannedRun) -> tuple[RunStatus, bool]:
    """Attach to this CI job's active run of the job, or create the run exactly once (by its key).

    Returns:
        The run, and whether it was attached to rather than created.
    """
    ci, settings, retry = app.ci, app.settings, app.retry()
    compiled, params = planned.plan.compiled, planned.plan.params
    prefixes = attach_prefixes(ci, compiled.job, planned.inputs)
    if prefixes is not None:
        earlier, other = retry(lambda: find_earlier_attempt(api, experiment.experiment_id, planned.name, *prefixes))
        if earlier is not None and earlier.is_terminal:
            app.console.line(
                f"this CI job's run of {compiled.job} with the same inputs already {earlier.state}: "
                f"{earlier.run_id}; reporting it instead of running it again"
            )
            return earlier, True
        if earlier is not None:
            app.console.line(f"attached to the active run of this CI job with the same inputs: {earlier.run_id}")
            return earlier, True
        if other is not None:
            app.console.line(
                f"this CI job ran {compiled.job} with other inputs before (run {other.run_id}, {other.state}); "
                "submitting a new run"
            )
    description = run_description(compiled, ci, planned.key, jira_url=app.jira_url)
    package_yaml = without_caching(compiled.package_yaml) if settings.no_cache else compiled.package_yaml
    with tempfile.TemporaryDirectory(prefix="kfp-launch-") as tmp:
        package = Path(tmp) / "pipeline.yaml"
        package.write_text(package_yaml, encoding="utf-8")

        def create() -> RunStatus:
            return api.create_run(
                experiment_id=experiment.experiment_id,
                display_name=planned.name,
                description=description,
                package_path=str(package),
                parameters=params.arguments(),
                pipeline_root=settings.pipeline_root,
                enable_caching=None,  # --no-cache is in the package itself, for every task
                service_account=settings.service_account,
            )

        run = create_run_once(
            api, experiment_id=experiment.experiment_id, name=planned.name, key=planned.key, create=create, retry=retry
        )
    return run, False
