"""Commit statuses with python-gitlab: the run as an external job of the GitLab pipeline (``--report-status``).

``POST /projects/:id/statuses/:sha`` (``Ci::CreateCommitStatusService``, gitlabhq
app/services/ci/create_commit_status_service.rb; docs.gitlab.com/api/commits, 'Set the pipeline status of a
commit') updates the pending or running status of the same name, pipeline and user, or creates a new one
(older ones of that name become retried). It refuses a transition the state machine does not have
(``running`` again, ``pending`` after ``running``) with HTTP 400 "Cannot transition status via ...": here that
means the status is already there or past it, not an error. A ``CI_JOB_TOKEN`` may not post statuses (the job
token's allowed endpoints, docs.gitlab.com/ci/jobs/ci_job_token): ``GITLAB_TOKEN`` (api scope, Developer).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from kfp_launch.gitlab_notes import GitLabReportConfig, describe_gitlab_error, gitlab_client
from kfp_launch.models import StatusTarget

DESCRIPTION_CHARS = 255
"""Descriptions are cut to this many characters (GitLab stores a short text; GitHub's limit is 140)."""

_NO_TRANSITION = "Cannot transition status via"


class CommitStatusError(Exception):
    """GitLab did not take a status.

    Attributes:
        message: what failed, with GitLab's answer (``HTTP 403 Forbidden``) or the transport error.
        status: the HTTP status, or None (no answer).
    """

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class CommitStatuses:
    """Posts and reads one project's commit statuses as the owner of ``config.token``.

    Args:
        config: GitLab URL, token and timeout (the project comes from each :class:`StatusTarget`).
    """

    config: GitLabReportConfig

    def post(self, target: StatusTarget, state: str, *, description: str = "", link: str = "") -> bool:
        """Set the status ``target.name`` of ``target.sha`` (in pipeline ``target.pipeline_id``) to ``state``.

        Args:
            state: ``pending``, ``running``, ``success``, ``failed`` or ``canceled``.
            description: a short text (cut to :data:`DESCRIPTION_CHARS`).
            link: the status's ``target_url`` (the run's page), or ''.

        Returns:
            True when GitLab took it; False when the status was already in that state or past it.

        Raises:
            CommitStatusError: refused (401, 403, 404...), or GitLab unreachable.
        """
        data: dict[str, Any] = {"state": state, "name": target.name}
        if description:
            data["description"] = description[:DESCRIPTION_CHARS]
        if link:
            data["target_url"] = link
        if target.pipeline_id:
            data["pipeline_id"] = int(target.pipeline_id)
        try:
            self._call(lambda: self._commit(target).statuses.create(data, **self._options()))
        except CommitStatusError as exc:
            if exc.status == 400 and _NO_TRANSITION in exc.message:
                return False
            raise
        return True

    def latest(self, target: StatusTarget) -> str | None:
        """The state of the newest status ``target.name`` of the commit (in its pipeline), or None.

        Raises:
            CommitStatusError: refused, or GitLab unreachable.
        """
        filters: dict[str, Any] = {"name": target.name}
        if target.pipeline_id:
            filters["pipeline_id"] = int(target.pipeline_id)
        found = self._call(lambda: self._commit(target).statuses.list(get_all=True, **filters, **self._options()))
        return str(found[-1].status) if found else None

    @cached_property
    def _client(self) -> Any:
        """One ``gitlab.Gitlab`` (and its HTTP session) for every request of this object."""
        return gitlab_client(self.config)

    def _commit(self, target: StatusTarget) -> Any:
        project = target.project
        project_id: int | str = int(project) if project.isdigit() else project
        return self._client.projects.get(project_id, lazy=True).commits.get(target.sha, lazy=True)

    def _options(self) -> dict[str, Any]:
        return {"timeout": self.config.timeout_s, "max_retries": self.config.max_retries, "obey_rate_limit": False}

    def _call(self, call: Any) -> Any:
        import gitlab

        try:
            return call()
        except (gitlab.exceptions.GitlabError, OSError) as error:
            code = getattr(error, "response_code", None)
            message = describe_gitlab_error(error)
            if self.config.token:
                message = message.replace(self.config.token, "[MASKED]")
            raise CommitStatusError(message, code if isinstance(code, int) else None) from None
