"""``--report-status``: gate the merge request on the run without holding a runner.

The run is submitted wrapped in an exit handler (``status_wrapper.py``) whose task posts the run's final state
as a GitLab commit status of the CI pipeline; kfp-launch itself posts ``pending`` before submitting (the proof
that ``GITLAB_TOKEN`` may post statuses: nothing is submitted otherwise, exit 3), ``running`` with the run's
link as each run is submitted, ``failed``/``canceled`` for a job whose run could not be submitted or was
terminated, and ``canceled`` from ``kfp-launch cancel`` and when kfp-launch itself terminates a run (KFP
terminates a run by ending its Argo workflow, and an exit handler may not run then). A status gates the merge
request like a job of the pipeline (docs.gitlab.com/api/commits, 'Set the pipeline status of a commit';
docs/gitlab-notes.md, 'Commit statuses').
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from kfp_launch.app import App
from kfp_launch.commit_statuses import CommitStatusError, CommitStatuses
from kfp_launch.errors import ConfigError, ExitCode, InputError, KfpLaunchError
from kfp_launch.models import RunStatus, StatusTarget
from kfp_launch.plan import JobPlan
from kfp_launch.polling import PREFLIGHT_OUTAGE_S
from kfp_launch.states import RunState

if TYPE_CHECKING:
    from kfp_launch.kfp_api import KfpApi

MIN_KFP_VERSION = (2, 15)
"""The oldest KFP backend whose exit task gets its final status (2.0-2.5 refuse one: "task final status not
supported yet", backend/src/v2/compiler/argocompiler/dag.go) and honours an optional secret as environment
variable (backend/src/v2/driver/k8s.go from 2.15: on 2.14 a missing secret keeps the exit task from starting)."""

_TOKEN_HINT = (
    "set GITLAB_TOKEN (a masked CI/CD variable of type Variable) to a project access token with the api scope "
    "and the Developer role (Maintainer, or a user allowed to push or merge, for protected branches: GitLab's "
    "update_pipeline rule); a CI_JOB_TOKEN may not post commit statuses"
)
_FINAL = ("success", "failed", "canceled", "skipped")


class GitLabUnavailableError(KfpLaunchError):
    """GitLab did not answer (timeout, 5xx, 409 "another update is in progress") before anything was
    submitted (exit 5: the CI template retries it)."""

    exit_code = ExitCode.UNREACHABLE


def status_name(app: App, job: str) -> str:
    """``kfp: <job>``, with the CI job's own name when it differs from the job (``kfp: train-gpu/train``: two
    CI jobs that run one pipeline job each get their own status) and its ``parallel``/``matrix`` suffix
    (``kfp: train 1/3``). GitLab refuses a status named like one of the pipeline's jobs, which ``kfp:`` avoids."""
    ci = app.ci
    suffix = ""
    if ci.job_name and ci.job and ci.job_name.startswith(ci.job) and ci.job_name != ci.job:
        suffix = ci.job_name[len(ci.job) :]
    owner = f"{ci.job}/" if ci.job and ci.job != job else ""
    return f"kfp: {owner}{job}{suffix}"


def final_state(run: RunStatus) -> str:
    """The commit status a run that has ended deserves: success, failed, or canceled (also for a run
    terminated from outside: FAILED after CANCELING, or still CANCELING)."""
    if run.state in (RunState.SUCCEEDED, RunState.SKIPPED):
        return "success"
    if run.state in (RunState.CANCELED, RunState.CANCELING) or run.was_canceling:
        return "canceled"
    return "failed"


class StatusGate:
    """The commit statuses of one ``run --report-status``: one per job.

    Args:
        app: settings, CI context, environment and console.
        plans: the jobs to run.
        run_url_prefix: the KFP UI's run link without the run id ('' for local runs).

    Raises:
        InputError: no usable ``GITLAB_TOKEN`` (a job token cannot post statuses; a File-type variable holds a
            path), or no GitLab URL, project or commit to post to (exit 3, before anything is submitted).
        ConfigError: ``CI_SERVER_TLS_CA_FILE`` cannot be read.
    """

    def __init__(self, app: App, plans: Sequence[JobPlan], *, run_url_prefix: str) -> None:
        self._app = app
        config = app.gitlab
        ci = app.ci
        commit = ci.checkout_sha or ci.commit_sha
        project = app.environ.get("CI_PROJECT_ID", "").strip() or app.environ.get("CI_PROJECT_PATH", "").strip()
        needed = (("GITLAB_TOKEN", config.token), ("CI_SERVER_URL", config.url), ("CI_PROJECT_ID", project))
        missing = [name for name, value in (*needed, ("CI_COMMIT_SHA", commit)) if not value]
        if missing:
            raise InputError(
                f"--report-status needs {', '.join(missing)} to post the run's commit status to GitLab; "
                "nothing was submitted.",
                hint=_TOKEN_HINT if "GITLAB_TOKEN" in missing else "run it in a GitLab CI job, or set the variables.",
            )
        if ci.pipeline_id and not ci.pipeline_id.isdigit():
            raise InputError(
                f"CI_PIPELINE_ID is {ci.pipeline_id!r}, not a pipeline id (digits); nothing was submitted.",
                hint="leave CI_PIPELINE_ID to GitLab, which sets it in every CI job.",
            )
        token = str(config.token)
        if token.startswith("/") and Path(token).is_file():
            raise InputError(
                "GITLAB_TOKEN holds a file path (a CI/CD variable of type File), not a token; nothing was submitted.",
                hint="change the variable's type to Variable (Settings > CI/CD > Variables).",
            )
        self._statuses = CommitStatuses(config)
        self._running: set[str] = set()
        self.targets = {
            plan.job: StatusTarget(
                gitlab_url=str(config.url),
                project=project,
                sha=str(commit),
                pipeline_id=ci.pipeline_id or "",
                name=status_name(app, plan.job),
                run_url_prefix=run_url_prefix,
                fallback_url=(ci.job_url or "") if not run_url_prefix else "",
                ca_bundle=_ca_bundle(app),
                proxy=_proxy(app, str(config.url)),
                secret=app.settings.status_secret,
                image=app.settings.status_image,
            )
            for plan in plans
        }

    def wrapped(self, plans: Sequence[JobPlan]) -> list[JobPlan]:
        """The plans with each pipeline inside the exit handler that reports its status.

        Raises:
            PipelineError: a wrapper does not compile.
        """
        from kfp_launch.status_wrapper import wrap_for_status

        return [replace(p, compiled=wrap_for_status(p.compiled, self.targets[p.job])) for p in plans]

    def check_backend(self, api: KfpApi) -> None:
        """Refuse a KFP backend older than :data:`MIN_KFP_VERSION` (``KfpApi.server_version``, read within the
        preflight outage window); an unknown version (a development build, or unreadable) is a warning.

        Raises:
            InputError: the backend is too old (exit 3, nothing submitted).
            KfpAuthError, KfpUnavailableError: reading the version failed (exit 4, 5).
        """
        version = self._app.retry(max_outage_s=PREFLIGHT_OUTAGE_S)(api.server_version)
        parts = (version or "").lstrip("v").split(".")
        try:
            found = (int(parts[0]), int(parts[1]))
        except (ValueError, IndexError):
            self._app.console.warn(
                f"--report-status: the Kubeflow Pipelines version is unknown ({version or 'not said'}); it needs "
                f"{MIN_KFP_VERSION[0]}.{MIN_KFP_VERSION[1]} or later for the run to report its end"
            )
            return
        if found < MIN_KFP_VERSION:
            raise InputError(
                f"--report-status needs Kubeflow Pipelines {MIN_KFP_VERSION[0]}.{MIN_KFP_VERSION[1]} or later, and "
                f"this one is {version}: its exit task would not report the run's end; nothing was submitted.",
                hint="run the job without --report-status (it then waits for the run), or upgrade Kubeflow Pipelines.",
            )

    def open(self) -> None:
        """Post ``pending`` for every job: proof that the token may post statuses.

        Raises:
            InputError: GitLab refused (exit 3; nothing was submitted).
            GitLabUnavailableError: GitLab did not answer (exit 5; nothing was submitted).
        """
        for target in self.targets.values():
            try:
                self._statuses.post(target, "pending", description="kfp-launch is submitting the run")
            except CommitStatusError as exc:
                what = (
                    f"GitLab did not take the commit status '{target.name}' for {target.sha[:12]} on "
                    f"{target.gitlab_url}: {exc.message}; nothing was submitted (--report-status)."
                )
                if exc.status is None or exc.status >= 500 or exc.status in (409, 429):
                    raise GitLabUnavailableError(
                        what, hint="the CI template retries exit 5; else retry the job."
                    ) from None
                hint = (
                    _TOKEN_HINT
                    if exc.status in (401, 403)
                    else (
                        "check CI_PROJECT_ID, CI_COMMIT_SHA and CI_PIPELINE_ID (GitLab wants the pipeline's own commit)"
                    )
                )
                raise InputError(what, hint=hint) from None
        self._app.console.line(
            "commit status: " + ", ".join(f"'{t.name}'" for t in self.targets.values()) + " pending on GitLab"
        )

    def submitted(self, job: str, run: RunStatus, link: str, *, where: str = "on Kubeflow") -> None:
        """A run of ``job`` exists: ``running`` with its link, unless its status is already final (its exit task
        was faster) or the run has already ended (a retried CI job attached to it): then its final state."""
        target = self.targets[job]
        self._running.add(job)
        if run.is_terminal:
            self._post(target, final_state(run), f"the run ended {run.state}", link)
            return
        try:
            if self._statuses.latest(target) in _FINAL:
                return  # the exit task reported already: a running status now would hide it
            self._statuses.post(
                target, "running", description=f"the run is running {where}", link=link or target.fallback_url
            )
        except CommitStatusError as exc:
            self._app.console.warn(
                f"commit status '{target.name}' not set to running: {exc.message}; the run's exit task still "
                "reports its final state"
            )
            return
        self._app.console.line(f"commit status: '{target.name}' running")

    def final(self, job: str, state: str, reason: str) -> None:
        """Post a final ``state`` for ``job`` (best effort: a warning if GitLab fails)."""
        self._post(self.targets[job], state, reason, "")

    def abandon(self, reason: str, *, runs_left_running: bool, interrupted: bool = False) -> None:
        """Submitting stopped: jobs without a run get ``failed`` (``canceled`` when ``interrupted``); jobs whose
        run exists keep ``running`` when those runs are left for the CI job's retry (``runs_left_running``),
        else get ``canceled`` (kfp-launch terminated them)."""
        for job, target in self.targets.items():
            if job not in self._running:
                self._post(target, "canceled" if interrupted else "failed", reason, "")
            elif not runs_left_running:
                self._post(target, "canceled", f"terminated by kfp-launch: {reason}", "")

    def _post(self, target: StatusTarget, state: str, reason: str, link: str) -> None:
        post_final(self._app, self._statuses, target, state, reason, link=link)


def post_final(
    app: App, statuses: CommitStatuses, target: StatusTarget, state: str, reason: str, *, link: str = ""
) -> None:
    """Best effort: post ``state`` with ``reason`` (masked) as description, or warn."""
    try:
        statuses.post(target, state, description=app.console.redact(reason), link=link or target.fallback_url)
    except CommitStatusError as exc:
        app.console.warn(f"commit status '{target.name}' not set to {state}: {exc.message}")
        return
    app.console.line(f"commit status: '{target.name}' {state}")


def settle(app: App, run: RunStatus, run_url: str, why: str, *, state: str | None = None, quick: bool = False) -> None:
    """A wrapped run was terminated, or ended without its exit task reporting: post ``state`` (default: the
    state the run's end deserves, :func:`final_state`) if its status is still pending or running; a final
    status is left as it is. Posts only to this job's GitLab (``CI_SERVER_URL``): a run's spec names where it
    reports, and anyone who may create runs writes specs, so the token goes nowhere else.

    ``quick`` (on a signal, when little time is left): one attempt of at most 3 s per request.

    Never raises: GitLab's failures are warnings (the run is terminated either way).
    """
    target = run.status_target
    if target is None:
        return
    config = app.gitlab
    if not config.token or not config.url:
        app.console.warn(
            f"commit status '{target.name}' left as it is: it needs GITLAB_TOKEN and CI_SERVER_URL ({_TOKEN_HINT})"
        )
        return
    try:
        same_gitlab = _origin(config.url) == _origin(target.gitlab_url)
    except ValueError:
        same_gitlab = False
    if not same_gitlab:
        app.console.warn(
            f"commit status '{target.name}' left as it is: the run reports to {target.gitlab_url}, and this job's "
            f"GitLab is {config.url} (CI_SERVER_URL)"
        )
        return
    statuses = CommitStatuses(replace(config, timeout_s=3.0, max_retries=0) if quick else config)
    try:
        current = statuses.latest(target)
    except CommitStatusError as exc:
        app.console.warn(f"commit status '{target.name}' not read: {exc.message}")
        return
    if current not in ("pending", "running"):
        app.console.line(f"commit status '{target.name}' is already {current or 'absent'}: left as it is")
        return
    post_final(app, statuses, target, state or final_state(run), why, link=run_url)


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url.rstrip("/"))
    return parts.scheme.lower(), parts.netloc.lower()


def _proxy(app: App, gitlab_url: str) -> str:
    """``HTTPS_PROXY`` for the exit task, unless ``NO_PROXY`` exempts GitLab's host, or it carries credentials
    (they would be readable in the run's spec, which the Kubeflow UI shows): then none, with a warning."""
    proxy = (app.environ.get("HTTPS_PROXY") or app.environ.get("https_proxy") or "").strip()
    no_proxy = (app.environ.get("NO_PROXY") or app.environ.get("no_proxy") or "").strip()
    host = urllib.parse.urlsplit(gitlab_url).hostname or ""
    if proxy and no_proxy and urllib.request.proxy_bypass_environment(host, {"no": no_proxy}):  # type: ignore[attr-defined]  # stdlib, untyped
        return ""
    if proxy and urllib.parse.urlsplit(proxy).password is not None:
        app.console.warn(
            "HTTPS_PROXY carries a password: the exit task does not get it (it would be readable in the run's "
            "spec); give the cluster its own way to reach GitLab"
        )
        return ""
    return proxy


def _ca_bundle(app: App) -> str:
    """The PEM of GitLab's CA for the exit task: ``CI_SERVER_TLS_CA_FILE`` (a file GitLab's runner writes when
    the instance uses a custom CA), else ''."""
    path = app.environ.get("CI_SERVER_TLS_CA_FILE", "").strip()
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"CI_SERVER_TLS_CA_FILE names {path}, which cannot be read ({exc.strerror}); nothing was submitted.",
            hint="unset it or point it at GitLab's CA certificate (PEM).",
        ) from None
