"""Putting a run on Kubeflow: the branch's experiment, the run's name and description, idempotent
submission, and the state file that lets ``kfp-launch cancel`` find the run later.

Idempotency: every run's description ends with a key line
``kfp-launch-key: <project>/<CI pipeline id>/<CI job name>/<job>/<nonce>``. A create call that failed in a way that
may have created the run (5xx, timeout, dropped connection) is resolved by looking the run up by its
key, never by posting blindly again; and a retried CI job of the same CI pipeline attaches to that
pipeline's still-active run of the job instead of submitting another.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from kfp_launch.ci_context import CiContext
from kfp_launch.errors import ConfigError, InputError
from kfp_launch.models import CompiledPipeline, Experiment, RunStatus

KEY_PREFIX = "kfp-launch-key: "
RUN_NAME_FIELDS = ("job", "commit", "pipeline", "branch", "ticket", "mr")


class RunApi(Protocol):
    """What submission needs from the KFP adapter (``kfp_api.KfpApi``)."""

    def find_experiment(self, name: str) -> Experiment | None: ...
    def create_experiment(self, name: str, description: str) -> Experiment: ...
    def unarchive_experiment(self, experiment_id: str) -> None: ...
    def list_runs(
        self, experiment_id: str, *, display_name: str | None = None, page_size: int = 100
    ) -> list[RunStatus]: ...


def experiment_description(ci: CiContext, *, jira_url: str | None) -> str:
    """The experiment's description: JIRA ticket (a link with ``JIRA_URL``), branch, project."""
    parts = []
    if ci.ticket:
        parts.append(f"JIRA {ci.ticket}" + (f" {jira_url.rstrip('/')}/browse/{ci.ticket}" if jira_url else ""))
    parts.append(f"{'tag' if ci.ref_kind == 'tag' else 'branch'} {ci.ref}")
    if ci.project_path:
        parts.append(f"project {ci.project_path}" + (f" {ci.project_url}" if ci.project_url else ""))
    return " · ".join(parts) + " · runs launched by kfp-launch"


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


ATTACHABLE_STATES = frozenset({"RUNTIME_STATE_UNSPECIFIED", "PENDING", "RUNNING", "PAUSED"})
"""States of a run a retried CI job attaches to. Not CANCELING: a run on its way out (e.g. terminated by
the previous attempt's after_script) is replaced by a new one, not waited for."""


def _key_base(ci: CiContext, job: str) -> str:
    # The CI job's full name (url-quoted: it may hold "/" as in "train 1/3") keeps parallel and matrix
    # jobs of one pipeline job apart; the pipeline job keeps the runs of one `run --all` apart.
    ci_job = quote(ci.job_name, safe="") if ci.job_name else "-"
    return f"{ci.project_path or 'local'}/{ci.pipeline_id or 'local'}/{ci_job}/{job}/"


def new_run_key(ci: CiContext, job: str) -> str:
    """A fresh key ``<project>/<CI pipeline id>/<CI job name>/<job>/<nonce>`` (``local``/``-`` outside CI)."""
    return _key_base(ci, job) + secrets.token_hex(6)


def attach_prefix(ci: CiContext, job: str) -> str | None:
    """The key prefix shared by every attempt of this CI job in this CI pipeline (None outside CI)."""
    if not (ci.in_ci and ci.pipeline_id):
        return None
    return _key_base(ci, job)


def run_key(description: str) -> str | None:
    """The key in a run description, or None."""
    for line in reversed(description.splitlines()):
        if line.startswith(KEY_PREFIX):
            return line[len(KEY_PREFIX) :].strip()
    return None


def run_description(compiled: CompiledPipeline, ci: CiContext, key: str, *, jira_url: str | None) -> str:
    """The run's description: links back to commit, branch, MR, CI pipeline and job, the ticket and
    the triggering user, ending with the key line."""
    lines = [f"Launched by kfp-launch: job {compiled.job} ({compiled.module}:{compiled.function})"]
    ref_kind = "Tag" if ci.ref_kind == "tag" else "Branch"
    lines.append(f"{ref_kind}: {ci.ref}" + (f" {ci.project_url}/-/tree/{ci.ref}" if ci.project_url and ci.ref else ""))
    if ci.commit_sha:
        title = f' "{ci.commit_title}"' if ci.commit_title else ""
        link = f" {ci.project_url}/-/commit/{ci.commit_sha}" if ci.project_url else ""
        lines.append(f"Commit: {ci.commit_sha}{title}{link}")
    if ci.merge_request_iid:
        lines.append(f"Merge request: !{ci.merge_request_iid} {ci.merge_request_url or ''}".rstrip())
    if ci.pipeline_url:
        lines.append(f"GitLab pipeline: {ci.pipeline_url}")
    if ci.job_url:
        lines.append(f"GitLab job: {ci.job_url}")
    if ci.ticket:
        lines.append(f"Ticket: {ci.ticket}" + (f" {jira_url.rstrip('/')}/browse/{ci.ticket}" if jira_url else ""))
    if ci.user_login or ci.user_name:
        lines.append(f"Triggered by: {ci.user_login or ci.user_name}")
    lines.append(KEY_PREFIX + key)
    return "\n".join(lines)


def ensure_experiment(
    api: RunApi, name: str, description: str, *, say: Callable[[str], None], lookups: int = 3
) -> Experiment:
    """Find the experiment by name or create it; unarchive it if archived.

    Two jobs racing to create it end in the same one: a 409 on create means the other won, so we
    look it up again (reference kfp-api.md §1.4).

    Raises:
        KfpApiError: the name is still unknown after a 409 and ``lookups`` look-ups.
    """
    from kfp_launch.kfp_api import KfpConflictError

    experiment = api.find_experiment(name)
    if experiment is None:
        try:
            experiment = api.create_experiment(name, description)
            say(f'created experiment "{name}"')
        except KfpConflictError:
            for _ in range(lookups):
                experiment = api.find_experiment(name)
                if experiment is not None:
                    break
            if experiment is None:
                raise
            say(f'experiment "{name}" was just created by another job; using it')
    else:
        say(f'using experiment "{name}"')
    if experiment.archived:
        api.unarchive_experiment(experiment.experiment_id)
        say(f'experiment "{name}" was archived: unarchived it')
    return experiment


def find_active_attempt(api: RunApi, experiment_id: str, name: str, prefix: str) -> RunStatus | None:
    """The run a retried CI job takes over: the newest run named ``name`` whose key starts with
    ``prefix``, if it is still active or it SUCCEEDED (the retry after an outage, exit 5, during which it
    finished: its result is reported, not run again). FAILED, SKIPPED and canceled runs are run again."""
    for run in api.list_runs(experiment_id, display_name=name):
        key = run_key(run.description)
        if key and key.startswith(prefix):
            return run if run.state in ATTACHABLE_STATES or run.state == "SUCCEEDED" else None
    return None


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
        retry: runs an attempt with the transient-retry rule (``watch.call_with_retry``).

    Raises:
        KfpUnavailableError: still failing after the allowed outage (no duplicate was created).
    """
    from kfp_launch.kfp_api import TransientKfpError

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


@dataclass(frozen=True, kw_only=True)
class StateEntry:
    """One run in ``.kfp-launch/state.json`` (what ``kfp-launch cancel --state-file`` needs).

    Attributes:
        run_id, experiment_id: the KFP ids (``run_id`` is '' while the run is being created: then
            ``run_key`` and ``run_name`` find it).
        host, namespace: where the run lives.
        url: the run's UI link.
        job: the job name.
        cancel_policy: ``"terminate"`` or ``"detach"`` (``--on-cancel``).
        created_at: when kfp-launch recorded it, ISO 8601 UTC.
        run_key: the run's kfp-launch key.
        run_name: the run's display name.
        ci_job_id: the GitLab job that recorded it (``CI_JOB_ID``): ``cancel`` in another job (which got
            this file as an artifact) leaves the run alone.
    """

    run_id: str
    experiment_id: str
    host: str
    namespace: str
    url: str
    job: str
    cancel_policy: str
    created_at: str = ""
    run_key: str = ""
    run_name: str = ""
    ci_job_id: str = ""


def write_state(path: Path, entries: list[StateEntry]) -> None:
    """Write ``{"runs": [...]}`` atomically (temp file + rename), creating the directory.

    Raises:
        InputError: the file cannot be written.
    """
    stamped = [asdict(e) | {"created_at": e.created_at or datetime.now(UTC).isoformat()} for e in entries]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"runs": stamped}, handle, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(
            f"Cannot write the state file {path}: {exc.strerror or exc}.", hint="set --state-file to a writable path."
        ) from None


def read_state(path: Path) -> list[StateEntry]:
    """Read the runs of a state file.

    Raises:
        InputError: missing, unreadable or malformed file.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [
            StateEntry(**{k: v for k, v in run.items() if k in StateEntry.__dataclass_fields__}) for run in data["runs"]
        ]
    except FileNotFoundError:
        raise InputError(
            f"No state file at {path}: no run was recorded there.",
            hint="kfp-launch run writes it when it submits a run.",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"The state file {path} is unreadable or malformed: {exc}.",
            hint='it must be {"runs": [{"run_id": ..., "host": ...}]}.',
        ) from None


def environ_experiment_overrides(environ: Mapping[str, str]) -> list[str]:
    """The SDK's experiment-name variables that are set (we resolve the experiment ourselves and
    pass its id, so they are ignored: reference kfp-api.md §1.4)."""
    names = ("KF_PIPELINES_DEFAULT_EXPERIMENT_NAME", "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME")
    return [n for n in names if environ.get(n, "").strip()]
