"""``--report-status``: gate the merge request on the run without holding a runner.

The run is submitted wrapped in an exit handler (``status_wrapper.py``) whose task posts the run's final state
as the GitLab commit status ``kfp: <job>`` of the CI pipeline; kfp-launch itself posts ``pending`` before
submitting (the proof that ``GITLAB_TOKEN`` may post statuses: nothing is submitted otherwise, exit 3),
``running`` with the run's link once it is submitted, ``failed`` if submitting failed after that, and
``canceled`` from ``kfp-launch cancel`` (KFP terminates a run by ending its Argo workflow, and an exit handler
may not run then). A status gates the merge request like a job of the pipeline (docs.gitlab.com/api/commits,
'Set the pipeline status of a commit').
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kfp_launch.app import App
from kfp_launch.commit_statuses import CommitStatusError, CommitStatuses
from kfp_launch.errors import ConfigError, InputError
from kfp_launch.models import StatusTarget
from kfp_launch.plan import JobPlan

_TOKEN_HINT = (
    "set GITLAB_TOKEN (a CI/CD variable, masked, not protected unless only protected branches run this job) to "
    "a project access token with the api scope and at least the Developer role: a CI_JOB_TOKEN may not post "
    "commit statuses"
)


def status_name(app: App, job: str) -> str:
    """``kfp: <job>`` plus the CI job's ``parallel``/``matrix`` suffix (``kfp: train 1/3``,
    ``kfp: train: [gpu]``), so that every CI job and pipeline job has its own status; GitLab refuses a status
    named like one of the pipeline's jobs, which ``kfp:`` avoids."""
    ci = app.ci
    suffix = ""
    if ci.job_name and ci.job and ci.job_name.startswith(ci.job) and ci.job_name != ci.job:
        suffix = ci.job_name[len(ci.job) :]
    return f"kfp: {job}{suffix}"


class StatusGate:
    """The commit statuses of one ``run --report-status``: one per job.

    Args:
        app: settings, CI context, environment and console.
        plans: the jobs to run.
        run_url_prefix: the KFP UI's run link without the run id ('' for local runs).

    Raises:
        InputError: no ``GITLAB_TOKEN`` (a job token cannot post statuses), or no GitLab URL, project or
            commit to post to (exit 3, before anything is submitted).
    """

    def __init__(self, app: App, plans: Sequence[JobPlan], *, run_url_prefix: str) -> None:
        self._app = app
        config = app.gitlab
        ci = app.ci
        commit = ci.checkout_sha or ci.commit_sha
        missing = [
            name
            for name, value in (
                ("GITLAB_TOKEN", config.token),
                ("CI_SERVER_URL", config.url),
                ("CI_PROJECT_ID", config.project),
                ("CI_COMMIT_SHA", commit),
            )
            if not value
        ]
        if missing:
            raise InputError(
                f"--report-status needs {', '.join(missing)} to post the run's commit status to GitLab; "
                "nothing was submitted.",
                hint=_TOKEN_HINT if "GITLAB_TOKEN" in missing else "run it in a GitLab CI job, or set the variables.",
            )
        self._statuses = CommitStatuses(config)
        fallback = ci.job_url or "" if not run_url_prefix else ""
        self.targets = {
            plan.job: StatusTarget(
                gitlab_url=str(config.url),
                project=str(config.project),
                sha=str(commit),
                pipeline_id=ci.pipeline_id or "",
                name=status_name(app, plan.job),
                run_url_prefix=run_url_prefix,
                fallback_url=fallback,
                ca_bundle=_ca_bundle(app),
                proxy=app.environ.get("HTTPS_PROXY") or app.environ.get("https_proxy") or "",
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

    def open(self) -> None:
        """Post ``pending`` for every job: proof that the token may post statuses.

        Raises:
            InputError: GitLab refused or could not be reached (exit 3; nothing was submitted).
        """
        for target in self.targets.values():
            try:
                self._statuses.post(target, "pending", description="kfp-launch is submitting the run")
            except CommitStatusError as exc:
                hint = (
                    _TOKEN_HINT
                    if exc.status in (401, 403)
                    else (
                        "check CI_PROJECT_ID, CI_COMMIT_SHA and CI_PIPELINE_ID (GitLab wants the pipeline's own commit)"
                        if exc.status in (400, 404)
                        else "check that GitLab is reachable from the job, then retry it"
                    )
                )
                raise InputError(
                    f"GitLab did not take the commit status '{target.name}' for {target.sha[:12]} on "
                    f"{target.gitlab_url}: {exc.message}; nothing was submitted (--report-status).",
                    hint=hint,
                ) from None
        self._app.console.line(
            "commit status: " + ", ".join(f"'{t.name}'" for t in self.targets.values()) + " pending on GitLab"
        )

    def running(self, job: str, link: str, *, description: str = "the run is running on Kubeflow") -> None:
        """Post ``running`` for ``job`` with the run's link (a warning if GitLab fails: the run is submitted)."""
        target = self.targets[job]
        try:
            self._statuses.post(target, "running", description=description, link=link or target.fallback_url)
        except CommitStatusError as exc:
            self._app.console.warn(
                f"commit status '{target.name}' not set to running: {exc.message}; the run's exit task still "
                "reports its final state"
            )
            return
        self._app.console.line(f"commit status: '{target.name}' running")

    def final(self, job: str, state: str, reason: str) -> None:
        """Post a final ``state`` for ``job`` (best effort: a warning if GitLab fails)."""
        post_final(self._app, self._statuses, self.targets[job], state, reason)

    def abandon(self, reason: str) -> None:
        """Post ``failed`` for every job whose run could not be submitted or could not end by itself."""
        for target in self.targets.values():
            post_final(self._app, self._statuses, target, "failed", reason)


def post_final(app: App, statuses: CommitStatuses, target: StatusTarget, state: str, reason: str) -> None:
    """Best effort: post a final ``state`` with ``reason`` as description, or warn."""
    try:
        statuses.post(target, state, description=reason, link=target.fallback_url)
    except CommitStatusError as exc:
        app.console.warn(f"commit status '{target.name}' not set to {state}: {exc.message}")
        return
    app.console.line(f"commit status: '{target.name}' {state}")


def settle_canceled(app: App, target: StatusTarget, run_url: str, why: str) -> None:
    """``kfp-launch cancel``: post ``canceled`` for a wrapped run's status if it is still pending or running
    (a run terminated without its exit task reporting); a final status is left as it is.

    Never raises: GitLab's failures are warnings (the run is terminated either way).
    """
    config = app.gitlab
    if not config.token:
        app.console.warn(f"commit status '{target.name}' left as it is: GITLAB_TOKEN is not set ({_TOKEN_HINT})")
        return
    statuses = CommitStatuses(replace(config, url=config.url or target.gitlab_url))
    try:
        current = statuses.latest(target)
        if current not in ("pending", "running"):
            app.console.line(f"commit status '{target.name}' is already {current or 'absent'}: left as it is")
            return
        statuses.post(target, "canceled", description=why, link=run_url)
    except CommitStatusError as exc:
        app.console.warn(f"commit status '{target.name}' not set to canceled: {exc.message}")
        return
    app.console.line(f"commit status: '{target.name}' canceled")


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
