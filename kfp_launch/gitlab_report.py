"""One merge-request note per merge request and CI job, kept up to date with python-gitlab.

The only module that imports ``gitlab`` (lazily, inside functions: it takes ~0.3 s to import). A note is
created when the run starts and updated in place when it ends; a retried job, or the same job in a later
pipeline of the merge request, finds it again by a hidden marker and updates it instead of adding one.

Writing notes needs a project, group or personal access token with the ``api`` scope (``GITLAB_TOKEN``,
sent as ``PRIVATE-TOKEN``): a ``CI_JOB_TOKEN`` may read merge requests and notes but not write notes
(reference gitlab-ci.md §1.2). Everything here is best effort: a GitLab failure is one ``warning:`` line,
never an exception and never a different exit code, and no message carries a token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

from kfp_launch.ci_context import CiContext
from kfp_launch.console import Console
from kfp_launch.models import RunOutcome, TaskResult
from kfp_launch.reports import plain_text

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
_MAX_PARAMETERS, _MAX_METRICS, _MAX_VALUE_CHARS, _MAX_ERROR_CHARS, _LOG_LINES = 50, 50, 200, 1_000, 20


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
        (all predefined variables, §1.1).
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


class StartedRun(Protocol):
    """What a note needs to know about a run that has started (a :class:`RunOutcome` has all of it)."""

    @property
    def job(self) -> str: ...
    @property
    def pipeline_name(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def run_url(self) -> str: ...
    @property
    def experiment(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, object]: ...


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
    """

    def __init__(self, config: GitLabReportConfig, ci: CiContext, console: Console) -> None:
        self._config = config
        self._ci = ci
        self._console = console
        self._disabled = False
        self._project: Project | None = None
        self._merge_request: tuple[int, str | None] | None = None  # (iid, web URL)
        self._looked_up_merge_request = False
        self._note_id: int | None = None

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
            self._console.line("merge request note: skipped (set GITLAB_TOKEN to write one)")
        elif config.url is None:
            self._console.line("merge request note: skipped (no GitLab URL: CI_SERVER_URL is unset)")
        elif config.project is None:
            self._console.line("merge request note: skipped (no project: CI_PROJECT_ID is unset)")
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
        marker = note_marker(self._marker_project(), self._job_key(run), iid)
        body = f"{marker}\n{render_note(run, self._ci, outcome=outcome, jira_url=self._config.jira_url)}"
        is_first_write = self._note_id is None
        if self._note_id is None:
            self._note_id = self._call(
                f"read the notes of merge request !{iid}",
                lambda: _find_note(merge_request, marker, self._retrying()),
            )
        if self._note_id is None or not self._update(merge_request, iid, self._note_id, body):
            note = self._call(
                f"create a note on merge request !{iid}",
                lambda: merge_request.notes.create({"body": body}, **self._once()),
            )
            self._note_id = int(note.id)
        if is_first_write and mr_url:
            self._console.url("merge request note", f"{mr_url}#note_{self._note_id}")

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
            import gitlab  # lazily: importing it takes ~0.3 s

            config = self._config
            client = gitlab.Gitlab(
                config.url,
                private_token=config.token,
                timeout=config.timeout_s,
                retry_transient_errors=True,
                user_agent=f"kfp-launch (python-gitlab/{gitlab.__version__})",
            )
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
            self._console.line(f"merge request note: skipped (no open merge request from branch {branch})")
            return None
        self._merge_request = (int(found[0].iid), getattr(found[0], "web_url", None))
        return self._merge_request

    def _marker_project(self) -> str:
        return self._ci.project_path or str(self._config.project)

    def _job_key(self, run: StartedRun) -> str:
        """The CI job's full name (each parallel/matrix instance has its own note); on a laptop the job."""
        return self._ci.job_name or f"{run.job} (local)"

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


def note_marker(project: str, job: str, merge_request_iid: int) -> str:
    """The hidden first line of a note: ``<!-- kfp-launch:<project>/<job> mr=!<iid> -->``.

    PROJECT and JOB are percent-encoded where they could end the HTML comment or break the line (``--``,
    ``>``, whitespace), e.g. ``<!-- kfp-launch:mlops/kfp-demo/train%201/3 mr=!7 -->``.
    """
    return f"<!-- kfp-launch:{_marker_part(project)}/{_marker_part(job)} mr=!{merge_request_iid} -->"


def _marker_part(text: str) -> str:
    return quote(text, safe="/:@!$&'()*+,;=[]").replace("--", "-%2D")


# ---- rendering ---------------------------------------------------------------------------------------------

_STATE_LABELS = {
    "RUNNING": ("🔄", "running"),
    "SUCCEEDED": ("✅", "succeeded"),
    "FAILED": ("❌", "failed"),
    "CANCELED": ("🚫", "canceled"),
    "TIMED_OUT": ("⏱️", "timed out"),
    "INTERRUPTED": ("⚠️", "interrupted (the CI job was stopped)"),
    "UNREACHABLE": ("⚠️", "Kubeflow unreachable"),
    "SKIPPED": ("⏭️", "skipped"),
    "DETACHED": ("🚀", "submitted, not waited for"),
}


def render_note(
    run: StartedRun, ci: CiContext, *, outcome: RunOutcome | None = None, jira_url: str | None = None
) -> str:
    """The note's Markdown (without the marker): run link, experiment, state, duration, ticket, parameters.

    With OUTCOME (the run ended) also the metrics, or "metrics not available from the KFP API" when the
    backend cannot give them (Kubeflow's v2beta1 API, ``outcome.metrics_available``), and each failing task
    with its error and log tail. Every value from a user, a pipeline or KFP is shown in a code span or code
    block (GitLab turns no ``@mention`` or ``#123`` there into a reference), with ``|`` escaped inside
    tables and the code fence longer than any backtick run; link targets must be ``http(s)`` URLs and are
    percent-encoded where Markdown would break.
    """
    state = outcome.state if outcome is not None else "RUNNING"
    emoji, word = _STATE_LABELS.get(state, ("ℹ️", state.lower()))
    lines = [f"#### {emoji} Kubeflow Pipelines run of {_code(run.job)}: {word}", ""]
    lines += [f"- **{label}:** {value}" for label, value in _facts(run, ci, outcome, jira_url, f"{emoji} {word}")]
    if outcome is not None and outcome.message:
        lines += ["", f"**Why:** {_code(outcome.message)}"]
    lines += _parameters_section(run.parameters)
    if outcome is not None:
        lines += _metrics_section(outcome)
        lines += _failed_tasks_section([task for task in outcome.tasks if task.state == "FAILED"])
    lines += [
        "",
        "<sub>Written by kfp-launch; updated in place when the run ends or the job runs again.</sub>",
    ]
    return "\n".join(lines) + "\n"


def _facts(
    run: StartedRun, ci: CiContext, outcome: RunOutcome | None, jira_url: str | None, state: str
) -> Iterable[tuple[str, str]]:
    if run.run_url:
        yield "Run", _link(_code(run.run_id or run.run_url), run.run_url)
    else:
        yield "Run", _code(run.run_id) if run.run_id else "local run (kfp.local)"
    if run.experiment:
        yield "Experiment", _code(run.experiment)
    if run.pipeline_name:
        yield "Pipeline", _code(run.pipeline_name)
    yield "State", state
    if outcome is not None and outcome.duration_s is not None:
        yield "Duration", _duration(outcome.duration_s)
    if ci.ticket:
        target = f"{jira_url}/browse/{quote(ci.ticket)}" if jira_url else ""
        yield "Ticket", _link(_code(ci.ticket), target)
    if ci.job_name:
        job = _link(_code(ci.job_name), ci.job_url or "")
        pipeline = _link(f"pipeline {_code(ci.pipeline_id)}", ci.pipeline_url or "") if ci.pipeline_id else ""
        yield "GitLab job", f"{job} in {pipeline}" if pipeline else job
    if ci.short_sha:
        branch = f" on {_code(ci.branch)}" if ci.branch else ""
        yield "Commit", f"{_code(ci.short_sha)}{branch}"


def _parameters_section(parameters: Mapping[str, object]) -> list[str]:
    if not parameters:
        return []
    items = list(parameters.items())
    lines = ["", "**Parameters**", "", "| Parameter | Value |", "|---|---|"]
    lines += [
        f"| {_code(name, in_table=True)} | {_code(_value_text(value), in_table=True)} |"
        for name, value in items[:_MAX_PARAMETERS]
    ]
    if len(items) > _MAX_PARAMETERS:
        lines.append(f"| … and {len(items) - _MAX_PARAMETERS} more | |")
    return lines


def _metrics_section(outcome: RunOutcome) -> list[str]:
    if not outcome.metrics_available:
        return [
            "",
            "**Metrics:** metrics not available from the KFP API (Kubeflow keeps them in ML Metadata)",
        ]
    if not outcome.metrics:
        return ["", "**Metrics:** none logged"]
    lines = ["", "**Metrics**", "", "| Task | Metric | Value |", "|---|---|---|"]
    lines += [
        f"| {_code(m.task, in_table=True)} | {_code(m.name, in_table=True)} | {m.value:.6g} |"
        for m in outcome.metrics[:_MAX_METRICS]
    ]
    if len(outcome.metrics) > _MAX_METRICS:
        lines.append(f"| … and {len(outcome.metrics) - _MAX_METRICS} more | | |")
    return lines


def _failed_tasks_section(tasks: list[TaskResult]) -> list[str]:
    lines: list[str] = []
    for task in tasks:
        error = _clip(plain_text(task.error), _MAX_ERROR_CHARS) or "no error message from KFP"
        lines += ["", f"**❌ Task {_code(task.name)} failed:** {_code(error)}"]
        if task.log_tail:
            log = "\n".join(_clip(plain_text(line), 300) for line in task.log_tail[-_LOG_LINES:])
            fence = "`" * max(3, _longest_backtick_run(log) + 1)
            lines += [
                "",
                "<details><summary>Last log lines</summary>",
                "",
                f"{fence}text",
                log,
                fence,
                "",
                "</details>",
            ]
    return lines


def _code(text: str, *, in_table: bool = False) -> str:
    """TEXT as one inline code span: whitespace collapsed, fenced by more backticks than it contains."""
    text = " ".join(text.split())
    if not text:
        return "*(empty)*"
    fence = "`" * (_longest_backtick_run(text) + 1)
    padded = f" {text} " if "`" in text else text
    if in_table:
        padded = padded.replace("|", "\\|")  # GFM: a pipe in a cell, even in a code span, needs escaping
    return f"{fence}{padded}{fence}"


def _link(text: str, url: str) -> str:
    """``[text](url)`` for an http(s) URL (percent-encoded where Markdown would end it); else just TEXT."""
    if not re.match(r"https?://", url):
        return text
    return f"[{text}]({quote(url, safe=':/?#[]@!$&*+,;=%~')})"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _value_text(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return _clip(text, _MAX_VALUE_CHARS) if text else '""'


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    """``42.1 s``, ``3 min 07 s`` or ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
