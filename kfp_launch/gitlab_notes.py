"""One merge-request note per merge request and CI job, kept up to date with python-gitlab.

The only module that imports ``gitlab`` (lazily, inside functions: it takes ~0.3 s to import); the
note's Markdown comes from ``note_markdown.py``. A note is created when the run starts and updated in
place when it ends; a retried job, or the same job in a later pipeline of the merge request, finds it
again by a hidden marker and updates it instead of adding one.

Writing notes needs a project, group or personal access token with the ``api`` scope (``GITLAB_TOKEN``,
sent as ``PRIVATE-TOKEN``): a ``CI_JOB_TOKEN`` may read merge requests and notes but not write notes.
Everything here is best effort: a GitLab failure is one ``warning:`` line, never an exception and never
a different exit code, and no message carries a token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from kfp_launch.ci_context import CiContext
from kfp_launch.console import Console
from kfp_launch.models import RunOutcome
from kfp_launch.note_markdown import StartedRun, note_marker, render_note

if TYPE_CHECKING:
    from gitlab.v4.objects import Project, ProjectMergeRequest

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
"""Seconds python-gitlab waits for each GitLab request (connect and read)."""

DEFAULT_MAX_RETRIES = 2
"""Retries of an idempotent request (GET, PUT) after a connection error, a timeout or HTTP 500/502/503/504."""

_JOB_TOKEN_WARNING = (
    "CI_JOB_TOKEN cannot write merge request notes (GitLab lets a job token only read them); "
    "set GITLAB_TOKEN to a project access token with the api scope to get the run's note on the merge request"
)
_NOT_AFFECTED = "the run and the job's exit code are not affected"


@dataclass(frozen=True, kw_only=True)
class GitLabReportConfig:
    """Where and as whom notes are written.

    Attributes:
        url: the GitLab base URL, e.g. ``https://gitlab.example.com`` (``CI_SERVER_URL``), or None.
        project: the project holding the merge request: a numeric id or a ``group/project`` path, or None.
        token: a project/group/personal access token with the ``api`` scope (``GITLAB_TOKEN``), or None.
        job_token_present: whether ``CI_JOB_TOKEN`` is set (it is never used: it cannot write notes).
        jira_url: the JIRA base URL (``JIRA_URL``) to link the ticket as ``<jira_url>/browse/<KEY>``, or None.
        timeout_s: seconds each request may take.
        max_retries: retries of idempotent requests (see :data:`DEFAULT_MAX_RETRIES`).
    """

    url: str | None = None
    project: str | None = None
    token: str | None = field(default=None, repr=False)
    job_token_present: bool = False
    jira_url: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, url: str | None = None, project: str | None = None
    ) -> GitLabReportConfig:
        """Read the configuration from ENVIRON (blank values count as unset).

        Args:
            environ: the process environment (``os.environ`` in ``cli.py``, a dict in tests).
            url: a GitLab URL that wins over ``CI_SERVER_URL`` (e.g. a setting, for laptops).
            project: a project id or path that wins over the variables.

        The project is ``CI_MERGE_REQUEST_PROJECT_ID`` (the merge request's own project, which differs
        from the job's for merge requests from forks), else ``CI_PROJECT_ID``, else ``CI_PROJECT_PATH``
        (all predefined variables: https://docs.gitlab.com/ci/variables/predefined_variables/).
        """

        def value(name: str) -> str | None:
            text = environ.get(name, "").strip()
            return text or None

        return cls(
            url=(url or value("CI_SERVER_URL") or "").rstrip("/") or None,
            project=project
            or value("CI_MERGE_REQUEST_PROJECT_ID")
            or value("CI_PROJECT_ID")
            or value("CI_PROJECT_PATH"),
            token=value("GITLAB_TOKEN"),
            job_token_present=value("CI_JOB_TOKEN") is not None,
            jira_url=(value("JIRA_URL") or "").rstrip("/") or None,
        )


class _GitLabFailure(Exception):
    """A GitLab call failed; carries what we were doing and the python-gitlab/requests error."""

    def __init__(self, doing: str, error: Exception) -> None:
        super().__init__(doing)
        self.doing = doing
        self.error = error


class MergeRequestNotes:
    """Keeps one note per merge request and CI job: created at the start, updated in place at the end.

    The merge request is ``CI_MERGE_REQUEST_IID`` in merge-request pipelines; in branch pipelines and on a
    laptop it is the open merge request whose source branch is the current branch (the newest, if several;
    one ``GET .../merge_requests?source_branch=...&state=opened``). No merge request: nothing is written.

    The note starts with the hidden marker :func:`note_marker` (project + CI job name + merge request);
    the newest note whose body starts with it is updated (``GET .../notes``, then ``PUT``; a 403 or 404
    there means it is not ours or gone), else one is created (``POST``). The GitLab pipeline id is
    deliberately not in the marker: a retried job and the same job in the merge request's next pipeline
    update the same note, so the merge request shows one current note per job instead of one per push.

    Requests: lazy project and merge request objects (no ``GET`` of either), never ``gl.auth()``; every
    request has ``timeout_s``; GETs and PUTs are retried ``max_retries`` times on transient errors, a POST
    never (a retried POST could add a second note); 429 is not waited out (``obey_rate_limit=False``).

    Args:
        config: URL, project and token (see :class:`GitLabReportConfig`).
        ci: the CI context: merge request, branch, job, pipeline, commit and ticket.
        console: where warnings and the note's link go.
        several: the CI job runs several jobs (``run JOB JOB``, ``--all``): each job gets its own note (its
            marker names the job); one client, one merge request look-up and one failure state serve all.
    """

    def __init__(self, config: GitLabReportConfig, ci: CiContext, console: Console, *, several: bool = False) -> None:
        self._several = several
        self._config = config
        self._ci = ci
        self._console = console
        self._disabled = False
        self._project: Project | None = None
        self._merge_request: tuple[int, str | None] | None = None  # (iid, web URL)
        self._looked_up_merge_request = False
        self._note_ids: dict[str, int | None] = {}  # by job key

    def run_started(self, run: StartedRun) -> None:
        """Create (or update) the note saying the run is running, with its link and parameters."""
        self._publish(run, None)

    def run_finished(self, outcome: RunOutcome) -> None:
        """Update the note with the outcome: state, duration, metrics, failing tasks."""
        self._publish(outcome, outcome)

    # ---- the steps -----------------------------------------------------------------------------------------

    def _publish(self, run: StartedRun, outcome: RunOutcome | None) -> None:
        if self._disabled or not self._can_write():
            return
        try:
            self._write(run, outcome)
        except _GitLabFailure as failure:
            self._warn(failure)

    def _can_write(self) -> bool:
        """Whether notes can be written at all; says why not, once, and disables the reporter if not."""
        config = self._config
        if config.token is None and config.job_token_present:
            self._console.warn(_JOB_TOKEN_WARNING, once_key="gitlab-note-job-token")
        elif config.token is None:
            self._console.line(
                "merge request note: skipped (set GITLAB_TOKEN to write one)", once_key="gitlab-note-skipped"
            )
        elif config.url is None:
            self._console.line(
                "merge request note: skipped (no GitLab URL: CI_SERVER_URL is unset)", once_key="gitlab-note-skipped"
            )
        elif config.project is None:
            self._console.line(
                "merge request note: skipped (no project: CI_PROJECT_ID is unset)", once_key="gitlab-note-skipped"
            )
        else:
            return True
        self._disabled = True
        return False

    def _write(self, run: StartedRun, outcome: RunOutcome | None) -> None:
        project = self._project_api()
        found = self._find_merge_request(project)
        if found is None:
            return
        iid, mr_url = found
        merge_request = project.mergerequests.get(iid, lazy=True)
        key = self._job_key(run)
        marker = note_marker(self._marker_project(), key, iid)
        body = f"{marker}\n{render_note(run, self._ci, outcome=outcome, jira_url=self._config.jira_url)}"
        is_first_write = key not in self._note_ids
        if is_first_write:
            self._note_ids[key] = self._call(
                f"read the notes of merge request !{iid}",
                lambda: _find_note(merge_request, marker, self._retrying()),
            )
        note_id = self._note_ids[key]
        if note_id is None or not self._update(merge_request, iid, note_id, body):
            note = self._call(
                f"create a note on merge request !{iid}",
                lambda: merge_request.notes.create({"body": body}, **self._once()),
            )
            self._note_ids[key] = note_id = int(note.id)
        if is_first_write and mr_url:
            label = f"merge request note of {run.job}" if self._several else "merge request note"
            self._console.url(label, f"{mr_url}#note_{note_id}")

    def _update(self, merge_request: ProjectMergeRequest, iid: int, note_id: int, body: str) -> bool:
        """PUT the note; False if it is gone (404) or not ours to edit (403), so a new one is created."""
        try:
            self._call(
                f"update note {note_id} on merge request !{iid}",
                lambda: merge_request.notes.update(note_id, {"body": body}, **self._retrying()),
            )
        except _GitLabFailure as failure:
            if _status(failure.error) not in (403, 404):
                raise
            return False
        return True

    def _project_api(self) -> Project:
        if self._project is None:
            config = self._config
            client = gitlab_client(config)
            project = str(config.project)
            project_id: int | str = int(project) if project.isdigit() else project
            self._project = client.projects.get(project_id, lazy=True)
        return self._project

    def _find_merge_request(self, project: Project) -> tuple[int, str | None] | None:
        if self._ci.merge_request_iid is not None:
            return self._ci.merge_request_iid, self._ci.merge_request_url
        if self._looked_up_merge_request:
            return self._merge_request
        branch = self._ci.branch
        if branch is None or self._ci.ref_kind != "branch":
            return None
        found = self._call(
            f"find the open merge request of branch {branch!r}",
            lambda: project.mergerequests.list(
                source_branch=branch,
                state="opened",
                order_by="created_at",
                sort="desc",
                per_page=20,
                get_all=False,
                **self._retrying(),
            ),
        )
        self._looked_up_merge_request = True
        if not found:
            self._console.line(
                f"merge request note: skipped (no open merge request from branch {branch})",
                once_key="gitlab-note-no-mr",
            )
            return None
        self._merge_request = (int(found[0].iid), getattr(found[0], "web_url", None))
        return self._merge_request

    def _marker_project(self) -> str:
        return self._ci.project_path or str(self._config.project)

    def _job_key(self, run: StartedRun) -> str:
        """The CI job's full name (each parallel/matrix instance has its own note), and the job when the CI
        job runs several; on a laptop the job."""
        key = self._ci.job_name or f"{run.job} (local)"
        return f"{key} / {run.job}" if self._several and self._ci.job_name else key

    # ---- python-gitlab plumbing ----------------------------------------------------------------------------

    def _retrying(self) -> dict[str, Any]:
        return {
            "timeout": self._config.timeout_s,
            "max_retries": self._config.max_retries,
            "obey_rate_limit": False,
        }

    def _once(self) -> dict[str, Any]:
        return {"timeout": self._config.timeout_s, "retry_transient_errors": False, "obey_rate_limit": False}

    def _call(self, doing: str, call: Callable[[], T]) -> T:
        """Run one python-gitlab call; its errors become :class:`_GitLabFailure`.

        python-gitlab raises ``GitlabError`` for HTTP errors but lets the ``requests`` exceptions of its
        transport (connection refused or dropped, timeouts) through; those are ``OSError`` subclasses.
        """
        import gitlab

        try:
            return call()
        except (gitlab.exceptions.GitlabError, OSError) as error:
            raise _GitLabFailure(doing, error) from error

    def _warn(self, failure: _GitLabFailure) -> None:
        status = _status(failure.error)
        hint = {
            401: "GitLab refused GITLAB_TOKEN: check that it is valid and not expired",
            403: "GITLAB_TOKEN may not do this: it needs the api scope and at least the Reporter role",
            404: f"check the project ({self._config.project}) and that GITLAB_TOKEN can see it",
        }.get(status or 0, "")
        if status in (401, 403):
            self._disabled = True  # the end of the run would fail the same way
        where = f" on {self._config.url}" if self._config.url else ""
        reason = self._describe(failure.error)
        text = f"merge request note not written: could not {failure.doing}{where}: {reason}"
        self._console.warn(self._redact(f"{text}; {hint + '; ' if hint else ''}{_NOT_AFFECTED}"))

    @staticmethod
    def _describe(error: Exception) -> str:
        """``HTTP 404 Project Not Found``, or the transport error and its cause (a long one keeps its end)."""
        status = _status(error)
        if status is not None:  # GitLab's messages mostly start with the status: "404 Project Not Found"
            message = str(getattr(error, "error_message", "")).strip()
            return f"HTTP {message}" if message.startswith(str(status)) else f"HTTP {status}: {message}"
        # requests says "HTTPConnectionPool(...): Max retries exceeded with url: ... (Caused by <the reason>)"
        text = str(error)
        return f"{type(error).__name__}: {text if len(text) <= 300 else '…' + text[-299:]}"

    def _redact(self, text: str) -> str:
        """TEXT without the token and without user:password parts of URLs."""
        if self._config.token:
            text = text.replace(self._config.token, "[MASKED]")
        return re.sub(r"//[^/@\s]+@", "//[MASKED]@", text)


def gitlab_client(config: GitLabReportConfig) -> Any:
    """A ``gitlab.Gitlab`` for ``config`` (URL, ``GITLAB_TOKEN`` as ``PRIVATE-TOKEN``, timeout), making no
    request; transient errors of idempotent requests are retried (see :data:`DEFAULT_MAX_RETRIES`)."""
    import gitlab  # lazily: importing it takes ~0.3 s

    return gitlab.Gitlab(
        config.url,
        private_token=config.token,
        timeout=config.timeout_s,
        retry_transient_errors=True,
        user_agent=f"kfp-launch (python-gitlab/{gitlab.__version__})",
    )


def describe_gitlab_error(error: Exception) -> str:
    """``HTTP 404 Project Not Found``, or a transport error and its cause (a long one keeps its end)."""
    return MergeRequestNotes._describe(error)


def _status(error: Exception) -> int | None:
    code = getattr(error, "response_code", None)
    return code if isinstance(code, int) else None


def _find_note(merge_request: ProjectMergeRequest, marker: str, options: Mapping[str, Any]) -> int | None:
    """The id of the newest non-system note whose body starts with MARKER, or None (reads pages until found).

    Only a body that *starts* with the marker counts, so a reply quoting our note (``> <!-- ...``) is
    never taken for it. Newest first: our note is usually recent, and if an older marked note turned out
    not to be editable (another user's) the one created instead is found next time.
    """
    notes = merge_request.notes.list(iterator=True, sort="desc", order_by="created_at", per_page=100, **options)
    for note in notes:
        if not getattr(note, "system", False) and str(getattr(note, "body", "")).startswith(marker):
            return int(note.id)
    return None
