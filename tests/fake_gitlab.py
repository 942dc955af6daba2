"""An in-process fake of the GitLab REST API v4, enough for python-gitlab 8.6.0 to write merge-request notes.

It runs in a daemon thread on ``127.0.0.1:<free port>``; the real ``gitlab.Gitlab(server.url, ...)`` talks to
it unchanged over HTTP/1.1 JSON. State is plain data in the wire shape (``projects``, ``merge_requests``,
``notes``), every request is recorded in ``requests``; tests assert on those, not on mocks.

Modeled:

* ``GET /api/v4/user``;
* ``GET /api/v4/projects/:id`` where ``:id`` is numeric or the URL-encoded path (``mlops%2Fkfp-demo``);
* ``GET /api/v4/projects/:id/merge_requests`` (filters ``source_branch``, ``target_branch``, ``state``;
  newest first) and ``GET .../merge_requests/:iid``;
* ``GET/POST .../merge_requests/:iid/notes`` (``sort`` asc/desc, default desc; ``order_by`` created_at or
  updated_at) and ``GET/PUT .../merge_requests/:iid/notes/:note_id`` (only the note's author may edit it);
* offset pagination on lists: ``page``/``per_page`` (default 20, max 100) with GitLab's headers ``X-Page``,
  ``X-Per-Page``, ``X-Total``, ``X-Total-Pages``, ``X-Next-Page``, ``X-Prev-Page`` and a ``Link`` header
  (``rel="next"`` etc.), which python-gitlab follows;
* authentication like GitLab: ``PRIVATE-TOKEN: <t>`` or ``Authorization: Bearer <t>`` for the tokens in
  ``access_tokens``; anything else (a missing or unknown token) is ``401 {"message":"401 Unauthorized"}``.
  ``JOB-TOKEN: <t>`` for the tokens in ``job_tokens`` is accepted only where GitLab's job-token table
  (https://docs.gitlab.com/ci/jobs/ci_job_token/#job-token-access) allows it: ``GET .../merge_requests``,
  ``GET .../merge_requests/:iid`` and ``GET .../notes[/:note_id]``; everything else (``POST``/``PUT`` notes,
  ``GET /user``, ``GET /projects/:id``) answers ``job_token_denied_status`` (403 ``{"message":"403 Forbidden"}``
  by default). Real GitLab seems to ignore a job token on routes that do not allow one and answer 401 instead
  (reports in Nikita-Filonov/ai-review#12 and #51); set ``job_token_denied_status=401`` to model that;
* commit statuses (external jobs, ``Ci::CreateCommitStatusService`` and ``API::CommitStatuses``):
  ``POST /api/v4/projects/:id/statuses/:sha`` and ``GET .../repository/commits/:sha/statuses``; see
  :meth:`FakeGitLab._create_status` for the rules kept (commit and pipeline look-up, GitLab's state machine,
  a name another job of the pipeline has, ``target_url`` length);
* fault injection: ``fail`` (answer an HTTP status) and ``drop`` (close the connection without an answer)
  on the next N requests that match a method and a path regex.

Not modeled: projects' visibility and members (an accepted access token may do anything, except edit
another user's note), discussions, other noteables, keyset pagination, rate limits, note body validation
beyond "present" and GitLab's 1,000,000-character limit.

Example::

    with FakeGitLab(access_tokens={"glpat-x": "kfp-bot"}) as gitlab_server:
        project = gitlab_server.add_project("mlops/kfp-demo")
        gitlab_server.add_merge_request(project["id"], iid=7, source_branch="feature/abc-12")
        ...  # gitlab.Gitlab(gitlab_server.url, private_token="glpat-x") ...
        assert [n["body"] for n in gitlab_server.notes_of(project["id"], 7)] == [...]
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from tests.loopback import LoopbackHandler, LoopbackServer

__all__ = [
    "PATH_COMMIT_STATUSES",
    "PATH_MERGE_REQUEST",
    "PATH_MERGE_REQUESTS",
    "PATH_NOTE",
    "PATH_NOTES",
    "PATH_PROJECT",
    "PATH_STATUSES",
    "PATH_USER",
    "FakeGitLab",
    "Fault",
    "RecordedRequest",
]

# Path regexes (re.fullmatch against the path as sent, query excluded), handy for faults and request filters.
# A project id is one segment: numeric, or the URL-encoded path (python-gitlab sends "mlops%2Fkfp-demo").
PATH_USER = r"/api/v4/user"
PATH_PROJECT = r"/api/v4/projects/[^/]+"
PATH_MERGE_REQUESTS = r"/api/v4/projects/[^/]+/merge_requests"
PATH_MERGE_REQUEST = r"/api/v4/projects/[^/]+/merge_requests/\d+"
PATH_NOTES = r"/api/v4/projects/[^/]+/merge_requests/\d+/notes"
PATH_NOTE = r"/api/v4/projects/[^/]+/merge_requests/\d+/notes/\d+"
PATH_STATUSES = r"/api/v4/projects/[^/]+/statuses/[0-9a-f]+"
PATH_COMMIT_STATUSES = r"/api/v4/projects/[^/]+/repository/commits/[0-9a-f]+/statuses"

_DEFAULT_PER_PAGE, _MAX_PER_PAGE = 20, 100  # GitLab's offset pagination (doc/api/rest/_index.md)
_MAX_NOTE_LENGTH = 1_000_000  # Note::MAX_NOTE_LENGTH
_MR_STATES = frozenset({"opened", "closed", "locked", "merged"})


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as it reached the fake, recorded on arrival (before any fault applies).

    Attributes:
        method: HTTP method, upper case.
        path: the path as sent, without the query (``/api/v4/projects/mlops%2Fkfp-demo/merge_requests``).
        query: query parameters, decoded once (``parse_qs``, blank values kept).
        headers: request headers with lower-case names.
        body: the JSON body parsed, or None (no body, or not JSON).
        status: the HTTP status answered; None while in flight or when the connection was dropped.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int | None = None

    @property
    def token(self) -> str | None:
        """The token the request carried (``PRIVATE-TOKEN``, ``Authorization: Bearer`` or ``JOB-TOKEN``)."""
        return self._credentials()[1]

    @property
    def auth_kind(self) -> str | None:
        """``"private"``, ``"bearer"``, ``"job"`` or None: which of GitLab's token headers was sent."""
        return self._credentials()[0]

    def param(self, name: str) -> str | None:
        """The first value of query parameter NAME, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def _credentials(self) -> tuple[str | None, str | None]:
        if "private-token" in self.headers:
            return "private", self.headers["private-token"]
        authorization = self.headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            return "bearer", authorization[len("Bearer ") :]
        if "job-token" in self.headers:
            return "job", self.headers["job-token"]
        return None, None


@dataclass
class Fault:
    """A fault for the next matching requests: ``times`` requests after ``skip`` get it.

    Attributes:
        kind: ``"status"`` (answer ``status`` with ``body``) or ``"drop"`` (close without an answer).
        method: the HTTP method to match, or None for any.
        path: a regex fullmatched against the request path (see the ``PATH_*`` constants).
        times: how many matching requests get the fault (None: every one).
        skip: matching requests to let through first.
        status: the HTTP status for ``kind="status"``.
        body: the response body; None gives GitLab's ``{"message": "<status> <reason>"}``.
        matched: matching requests seen so far.
        fired: requests the fault was applied to so far.
    """

    kind: str
    method: str | None = None
    path: str = ".*"
    times: int | None = 1
    skip: int = 0
    status: int = 500
    body: str | None = None
    matched: int = 0
    fired: int = 0

    def take(self, request: RecordedRequest) -> bool:
        """Count REQUEST and return True if the fault fires for it (called under the server lock)."""
        if (self.method is not None and self.method != request.method) or not re.fullmatch(
            self.path, request.path
        ):
            return False
        self.matched += 1
        if self.matched <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


class _HttpError(Exception):
    def __init__(self, status: int, message: Any = None, *, key: str = "message") -> None:
        super().__init__(status)
        self.status = status
        self.document = {key: message or f"{status} {_REASONS.get(status, 'Error')}"}


_REASONS = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False

    @classmethod
    def json(cls, document: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> _Response:
        return cls(status, json.dumps(document).encode(), tuple(headers))


# (method, path regex with named groups, handler name, allowed with a job token)
_ROUTES: tuple[tuple[str, re.Pattern[str], str, bool], ...] = tuple(
    (method, re.compile(pattern), handler, job_token_ok)
    for method, pattern, handler, job_token_ok in (
        ("GET", r"/api/v4/user", "_get_user", False),
        ("GET", r"/api/v4/projects/(?P<project>[^/]+)", "_get_project", False),
        ("GET", r"/api/v4/projects/(?P<project>[^/]+)/merge_requests", "_list_merge_requests", True),
        (
            "GET",
            r"/api/v4/projects/(?P<project>[^/]+)/merge_requests/(?P<iid>\d+)",
            "_get_merge_request",
            True,
        ),
        (
            "GET",
            r"/api/v4/projects/(?P<project>[^/]+)/merge_requests/(?P<iid>\d+)/notes",
            "_list_notes",
            True,
        ),
        (
            "POST",
            r"/api/v4/projects/(?P<project>[^/]+)/merge_requests/(?P<iid>\d+)/notes",
            "_create_note",
            False,
        ),
        (
            "GET",
            r"/api/v4/projects/(?P<project>[^/]+)/merge_requests/(?P<iid>\d+)/notes/(?P<note_id>\d+)",
            "_get_note",
            True,
        ),
        (
            "PUT",
            r"/api/v4/projects/(?P<project>[^/]+)/merge_requests/(?P<iid>\d+)/notes/(?P<note_id>\d+)",
            "_update_note",
            False,
        ),
        ("POST", r"/api/v4/projects/(?P<project>[^/]+)/statuses/(?P<sha>[0-9a-f]+)", "_create_status", False),
        (
            "GET",
            r"/api/v4/projects/(?P<project>[^/]+)/repository/commits/(?P<sha>[0-9a-f]+)/statuses",
            "_list_statuses",
            False,
        ),
    )
)


class FakeGitLab(LoopbackServer):
    """A fake GitLab API v4 on ``127.0.0.1:<free port>``: state as data, every request recorded.

    Use as a context manager or call ``start()``/``stop()``. All state is guarded by ``lock``; read it
    freely from a test between client calls.

    Args:
        access_tokens: personal/project access token -> username; accepted as ``PRIVATE-TOKEN`` or
            ``Authorization: Bearer``. Users are created on first use.
        job_tokens: CI job token -> username; accepted as ``JOB-TOKEN`` on the routes a job token may use.
        job_token_denied_status: the status a job token gets on the other routes (403; see the module doc).
        clock: returns the current time (timezone-aware), for ``created_at``/``updated_at``.

    Attributes:
        users: username -> user wire dict (``id``, ``username``, ``name``, ``state``, ``web_url``).
        projects: project id -> project wire dict (``id``, ``path_with_namespace``, ``web_url``, ...).
        merge_requests: (project id, iid) -> merge request wire dict.
        pipelines: pipeline id -> ``{"id", "project_id", "sha", "ref", "jobs"}`` (``jobs``: its CI job names).
        statuses: every commit status (external job) posted, in creation order, as wire dicts plus
            ``project_id`` and ``retried`` (an older status of the same name and pipeline).
        notes: (project id, iid) -> that merge request's notes (wire dicts), in creation order.
        requests: every request in arrival order.
        faults: registered faults, checked in order; the first that fires wins.
        lock: the ``threading.RLock`` guarding all of the above.
    """

    thread_name = "fake-gitlab"

    def __init__(
        self,
        *,
        access_tokens: Mapping[str, str] | None = None,
        job_tokens: Mapping[str, str] | None = None,
        job_token_denied_status: int = 403,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.access_tokens: dict[str, str] = dict(access_tokens or {})
        self.job_tokens: dict[str, str] = dict(job_tokens or {})
        self.job_token_denied_status = job_token_denied_status
        self.clock = clock or (lambda: datetime.now(UTC))
        self.users: dict[str, dict[str, Any]] = {}
        self.projects: dict[int, dict[str, Any]] = {}
        self.merge_requests: dict[tuple[int, int], dict[str, Any]] = {}
        self.notes: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.pipelines: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._next_id = 1000
        super().__init__()

    # ---- arranging state -----------------------------------------------------------------------------------

    def add_project(self, path: str, *, project_id: int | None = None) -> dict[str, Any]:
        """Create a project ``group/name`` (id chosen unless given); returns its wire dict."""
        with self.lock:
            pid = project_id if project_id is not None else self._new_id()
            namespace, _, name = path.rpartition("/")
            project = {
                "id": pid,
                "name": name,
                "path": name,
                "path_with_namespace": path,
                "namespace": {"full_path": namespace},
                "default_branch": "main",
                "web_url": f"https://gitlab.example.com/{path}",
            }
            self.projects[pid] = project
            return project

    def add_pipeline(
        self, project_id: int, *, sha: str, ref: str = "main", pipeline_id: int | None = None,
        jobs: Iterable[str] = (),
    ) -> dict[str, Any]:
        """A CI pipeline of PROJECT_ID for commit SHA on REF, with CI jobs named JOBS (a commit status may
        not take one of their names: ``GenericCommitStatus#name_uniqueness_across_types``)."""
        with self.lock:
            pid = pipeline_id if pipeline_id is not None else self._new_id()
            pipeline = {"id": pid, "project_id": project_id, "sha": sha, "ref": ref, "jobs": list(jobs)}
            self.pipelines[pid] = pipeline
            return pipeline

    def statuses_of(self, sha: str, name: str | None = None) -> list[dict[str, Any]]:
        """The commit statuses posted for SHA (of NAME), oldest first, retried ones included."""
        with self.lock:
            return [dict(s) for s in self.statuses if s["sha"] == sha and (name is None or s["name"] == name)]

    def add_merge_request(
        self,
        project_id: int,
        *,
        source_branch: str,
        iid: int | None = None,
        target_branch: str = "main",
        state: str = "opened",
        title: str = "",
        author: str = "developer",
    ) -> dict[str, Any]:
        """Create a merge request in PROJECT_ID (iid = next free unless given); returns its wire dict."""
        if state not in _MR_STATES:
            raise ValueError(f"state must be one of {sorted(_MR_STATES)}")
        with self.lock:
            project = self.projects[project_id]
            taken = [i for p, i in self.merge_requests if p == project_id]
            mr_iid = iid if iid is not None else max(taken, default=0) + 1
            now = self._now()
            merge_request = {
                "id": self._new_id(),
                "iid": mr_iid,
                "project_id": project_id,
                "title": title or f"MR {mr_iid}",
                "state": state,
                "source_branch": source_branch,
                "target_branch": target_branch,
                "source_project_id": project_id,
                "target_project_id": project_id,
                "author": self._user(author),
                "created_at": now,
                "updated_at": now,
                "web_url": f"{project['web_url']}/-/merge_requests/{mr_iid}",
            }
            self.merge_requests[(project_id, mr_iid)] = merge_request
            self.notes.setdefault((project_id, mr_iid), [])
            return merge_request

    def add_note(
        self, project_id: int, iid: int, body: str, *, author: str = "developer", system: bool = False
    ) -> dict[str, Any]:
        """Add a note to merge request IID of PROJECT_ID (as if AUTHOR wrote it); returns its wire dict."""
        with self.lock:
            return self._new_note(self.merge_requests[(project_id, iid)], body, author, system=system)

    def notes_of(self, project_id: int, iid: int) -> list[dict[str, Any]]:
        """The notes of merge request IID of PROJECT_ID, in creation order (copies)."""
        with self.lock:
            return [dict(note) for note in self.notes.get((project_id, iid), [])]

    def fail(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str = ".*",
        times: int | None = 1,
        skip: int = 0,
        body: str | None = None,
    ) -> Fault:
        """Answer STATUS (body ``{"message": "<status> <reason>"}`` unless given) on the next matches."""
        return self._add_fault(Fault("status", method, path, times, skip, status, body))

    def drop(self, *, method: str | None = None, path: str = ".*", times: int | None = 1, skip: int = 0) -> Fault:
        """Close the connection without an answer on the next TIMES matching requests."""
        return self._add_fault(Fault("drop", method, path, times, skip))

    def requests_to(self, method: str | None = None, path: str = ".*") -> list[RecordedRequest]:
        """The recorded requests with METHOD (None: any) whose path fullmatches the PATH regex."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and re.fullmatch(path, r.path)
            ]

    # ---- request handling ----------------------------------------------------------------------------------

    def _add_fault(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def _serve(self, handler: LoopbackHandler) -> None:
        index, request = self._record(handler)
        with self.lock:
            fault = next((f for f in self.faults if f.take(request)), None)
        if fault is None:
            response = self._handle(request, handler.headers.get("Host") or self.url.removeprefix("http://"))
        elif fault.kind == "drop":
            response = _Response(0, drop=True)
        else:
            body = fault.body if fault.body is not None else json.dumps(_HttpError(fault.status).document)
            response = _Response(fault.status, body.encode())
        if self._stopping.is_set():
            response = _Response(0, drop=True)
        self._answer(handler, index, response)

    def _record(self, handler: LoopbackHandler) -> tuple[int, RecordedRequest]:
        target = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw_body = handler.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=handler.command,
            path=target.path,
            query=parse_qs(target.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
        )
        with self.lock:
            self.requests.append(request)
            return len(self.requests) - 1, request

    def _answer(self, handler: LoopbackHandler, index: int, response: _Response) -> None:
        with self.lock:
            self.requests[index] = replace(
                self.requests[index], status=None if response.drop else response.status
            )
        if response.drop:
            handler.close_connection = True
            return
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(response.body)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the client gave up

    def _handle(self, request: RecordedRequest, host: str) -> _Response:
        """Route and authenticate REQUEST; GitLab's error JSON for failures."""
        try:
            for method, pattern, name, job_token_ok in _ROUTES:
                match = pattern.fullmatch(request.path)
                if match is None or method != request.method:
                    continue
                user = self._authenticate(request, job_token_ok=job_token_ok)
                with self.lock:
                    result = getattr(self, name)(request, user, host, **match.groupdict())
                return result if isinstance(result, _Response) else _Response.json(result)
            raise _HttpError(404, "404 Not Found", key="error")
        except _HttpError as error:
            return _Response.json(error.document, error.status)

    def _authenticate(self, request: RecordedRequest, *, job_token_ok: bool) -> dict[str, Any]:
        kind, token = request.auth_kind, request.token
        if kind in ("private", "bearer") and token in self.access_tokens:
            with self.lock:
                return self._user(self.access_tokens[token])
        if kind == "job" and token in self.job_tokens:
            if not job_token_ok:
                raise _HttpError(self.job_token_denied_status)
            with self.lock:
                return self._user(self.job_tokens[token])
        raise _HttpError(401)

    # ---- endpoints (called under the lock) -----------------------------------------------------------------

    def _get_user(self, request: RecordedRequest, user: dict[str, Any], host: str) -> dict[str, Any]:
        return user

    def _get_project(self, request: RecordedRequest, user: dict[str, Any], host: str, project: str) -> Any:
        return self._project_or_404(project)

    def _list_merge_requests(
        self, request: RecordedRequest, user: dict[str, Any], host: str, project: str
    ) -> _Response:
        pid = self._project_or_404(project)["id"]
        state = request.param("state") or "all"
        items = [
            mr
            for (p, _), mr in self.merge_requests.items()
            if p == pid
            and (state == "all" or mr["state"] == state)
            and request.param("source_branch") in (None, mr["source_branch"])
            and request.param("target_branch") in (None, mr["target_branch"])
        ]
        items.sort(key=lambda mr: (mr["created_at"], mr["id"]), reverse=request.param("sort") != "asc")
        return self._page(request, host, items)

    def _get_merge_request(
        self, request: RecordedRequest, user: dict[str, Any], host: str, project: str, iid: str
    ) -> dict[str, Any]:
        return self._merge_request_or_404(project, iid)

    def _list_notes(
        self, request: RecordedRequest, user: dict[str, Any], host: str, project: str, iid: str
    ) -> _Response:
        merge_request = self._merge_request_or_404(project, iid)
        order_by = request.param("order_by") or "created_at"
        if order_by not in ("created_at", "updated_at"):
            raise _HttpError(400, "order_by does not have a valid value", key="error")
        notes = list(self.notes[(merge_request["project_id"], merge_request["iid"])])
        notes.sort(key=lambda n: (n[order_by], n["id"]), reverse=request.param("sort") != "asc")
        return self._page(request, host, notes)

    def _create_note(
        self, request: RecordedRequest, user: dict[str, Any], host: str, project: str, iid: str
    ) -> _Response:
        merge_request = self._merge_request_or_404(project, iid)
        body = self._note_body(request)
        return _Response.json(self._new_note(merge_request, body, user["username"]), 201)

    def _get_note(
        self, request: RecordedRequest, user: dict[str, Any], host: str, project: str, iid: str, note_id: str
    ) -> dict[str, Any]:
        return self._note_or_404(project, iid, note_id)

    def _update_note(
        self, request: RecordedRequest, user: dict[str, Any], host: str, project: str, iid: str, note_id: str
    ) -> dict[str, Any]:
        note = self._note_or_404(project, iid, note_id)
        if note["author"]["username"] != user["username"] or note["system"]:
            raise _HttpError(403)
        note.update(body=self._note_body(request), updated_at=self._now())
        return note

    def _create_status(
        self, request: RecordedRequest, user: dict[str, Any], host: str, project: str, sha: str
    ) -> _Response:
        """``POST /projects/:id/statuses/:sha`` as ``Ci::CreateCommitStatusService`` answers it (gitlabhq at
        0286e4c6, app/services/ci/create_commit_status_service.rb; lib/api/commit_statuses.rb):

        - ``state`` must be one of pending, running, success, failed, canceled, skipped (Grape: 400);
        - the commit must be known (404 "404 Commit Not Found"); with ``pipeline_id``, that pipeline must be
          this commit's (404 "404 Pipeline for pipeline_id, sha and ref Not Found"); without one, the newest
          pipeline of the commit takes the status;
        - the status found is the running or pending one of the same name, pipeline and user; otherwise a
          new job is created and older ones of that name are marked retried
          (``Ci::Pipelines::AddJobService``, ``update_older_statuses_retried!``);
        - the state moves by CommitStatus's state machine: ``pending`` only from created, ``running`` from
          created or pending, success/failed/canceled from created, pending or running; anything else is
          400 "Cannot transition status via :EVENT from :STATE ...";
        - ``name`` may not be the name of one of the pipeline's CI jobs (400, ``{"name": ["has already been
          taken"]}``); ``target_url`` at most 255 characters (``GenericCommitStatus`` validations).
        """
        body = request.body if isinstance(request.body, dict) else {}
        state = body.get("state")
        if state not in _STATUS_EVENTS:
            raise _HttpError(400, "state does not have a valid value", key="error")
        project_record = self._project_or_404(project)
        pipelines = [p for p in self.pipelines.values() if p["project_id"] == project_record["id"] and p["sha"] == sha]
        if not pipelines:
            raise _HttpError(404, "404 Commit Not Found")
        pipeline_id = body.get("pipeline_id")
        if pipeline_id is not None:
            pipelines = [p for p in pipelines if str(p["id"]) == str(pipeline_id)]
            if not pipelines:
                raise _HttpError(404, "404 Pipeline for pipeline_id, sha and ref Not Found")
        pipeline = max(pipelines, key=lambda p: p["id"])
        name = body.get("name") or body.get("context") or "default"
        target_url = body.get("target_url")
        if name in pipeline["jobs"]:
            raise _HttpError(400, {"name": ["has already been taken"]})
        if isinstance(target_url, str) and len(target_url) > 255:
            raise _HttpError(400, {"target_url": ["is too long (maximum is 255 characters)"]})
        same = [s for s in self.statuses if s["pipeline_id"] == pipeline["id"] and s["name"] == name]
        status = next(
            (s for s in same if s["status"] in ("pending", "running") and s["author"]["id"] == user["id"]), None
        )
        current = status["status"] if status else "created"
        event, allowed = _STATUS_EVENTS[state]
        if current not in allowed:
            raise _HttpError(
                400, f'Cannot transition status via :{event} from :{current} (Reason(s): Status cannot transition '
                f'via "{event}")'
            )
        now = self._now()
        if status is None:
            for older in same:
                older["retried"] = True
            status = {
                "id": self._new_id(), "sha": sha, "ref": pipeline["ref"], "name": name, "status": "created",
                "target_url": None, "description": None, "created_at": now, "started_at": None,
                "finished_at": None, "allow_failure": False, "coverage": None, "pipeline_id": pipeline["id"],
                "author": user, "project_id": project_record["id"], "retried": False,
            }
            self.statuses.append(status)
        for key in ("target_url", "description", "coverage"):
            if key in body:
                status[key] = body[key]
        status["status"] = state
        if state == "running":
            status["started_at"] = now
        if state in ("success", "failed", "canceled", "skipped"):
            status["finished_at"] = now
        return _Response.json(_status_entity(status), 201)

    def _list_statuses(
        self, request: RecordedRequest, user: dict[str, Any], host: str, project: str, sha: str
    ) -> _Response:
        """``GET .../repository/commits/:sha/statuses``: the latest (not retried) unless ``all``; filters
        ``name`` and ``pipeline_id``; ordered by id."""
        project_record = self._project_or_404(project)
        found = [s for s in self.statuses if s["project_id"] == project_record["id"] and s["sha"] == sha]
        if request.param("all") not in ("true", "1"):
            found = [s for s in found if not s["retried"]]
        for key in ("name", "pipeline_id"):
            if request.param(key):
                found = [s for s in found if str(s[key]) == request.param(key)]
        return self._page(request, host, [_status_entity(s) for s in found])

    # ---- helpers -------------------------------------------------------------------------------------------

    def _page(self, request: RecordedRequest, host: str, items: list[dict[str, Any]]) -> _Response:
        """One page of ITEMS with GitLab's offset-pagination headers and a ``Link`` header."""
        page = max(_int_param(request, "page", 1), 1)
        per_page = min(max(_int_param(request, "per_page", _DEFAULT_PER_PAGE), 1), _MAX_PER_PAGE)
        total_pages = max(math.ceil(len(items) / per_page), 1)
        headers = [
            ("X-Page", str(page)),
            ("X-Per-Page", str(per_page)),
            ("X-Total", str(len(items))),
            ("X-Total-Pages", str(total_pages)),
            ("X-Next-Page", str(page + 1) if page < total_pages else ""),
            ("X-Prev-Page", str(page - 1) if page > 1 else ""),
        ]
        links = {"first": 1, "last": total_pages}
        if page < total_pages:
            links["next"] = page + 1
        if page > 1:
            links["prev"] = page - 1
        query = {k: v[0] for k, v in request.query.items()}
        base = f"http://{host}{request.path}"
        link = ", ".join(
            f'<{base}?{urlencode({**query, "page": n, "per_page": per_page})}>; rel="{rel}"'
            for rel, n in links.items()
        )
        headers.append(("Link", link))
        return _Response.json(items[(page - 1) * per_page : page * per_page], headers=headers)

    def _project_or_404(self, project: str) -> dict[str, Any]:
        key = unquote(project)
        if key.isdigit() and int(key) in self.projects:
            return self.projects[int(key)]
        found = next((p for p in self.projects.values() if p["path_with_namespace"] == key), None)
        if found is None:
            raise _HttpError(404, "404 Project Not Found")
        return found

    def _merge_request_or_404(self, project: str, iid: str) -> dict[str, Any]:
        pid = self._project_or_404(project)["id"]
        merge_request = self.merge_requests.get((pid, int(iid)))
        if merge_request is None:
            raise _HttpError(404, "404 Not found")
        return merge_request

    def _note_or_404(self, project: str, iid: str, note_id: str) -> dict[str, Any]:
        merge_request = self._merge_request_or_404(project, iid)
        notes = self.notes[(merge_request["project_id"], merge_request["iid"])]
        note = next((n for n in notes if n["id"] == int(note_id)), None)
        if note is None:
            raise _HttpError(404, "404 Not found")
        return note

    @staticmethod
    def _note_body(request: RecordedRequest) -> str:
        body = request.body.get("body") if isinstance(request.body, dict) else None
        if not isinstance(body, str) or not body.strip():
            raise _HttpError(400, "body is missing", key="error")
        if len(body) > _MAX_NOTE_LENGTH:
            raise _HttpError(400, f"Note is too long (maximum is {_MAX_NOTE_LENGTH} characters)")
        return body

    def _new_note(
        self, merge_request: dict[str, Any], body: str, author: str, *, system: bool = False
    ) -> dict[str, Any]:
        now = self._now()
        note = {
            "id": self._new_id(),
            "type": None,
            "body": body,
            "author": self._user(author),
            "created_at": now,
            "updated_at": now,
            "system": system,
            "noteable_id": merge_request["id"],
            "noteable_type": "MergeRequest",
            "noteable_iid": merge_request["iid"],
            "project_id": merge_request["project_id"],
            "resolvable": False,
            "confidential": False,
            "internal": False,
        }
        self.notes[(merge_request["project_id"], merge_request["iid"])].append(note)
        return note

    def _user(self, username: str) -> dict[str, Any]:
        if username not in self.users:
            self.users[username] = {
                "id": self._new_id(),
                "username": username,
                "name": username.replace("-", " ").title(),
                "state": "active",
                "web_url": f"https://gitlab.example.com/{username}",
            }
        return self.users[username]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _now(self) -> str:
        """GitLab's timestamp format, with milliseconds: ``2024-05-01T12:00:00.123Z``."""
        moment = self.clock().astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# state -> (CommitStatus event, states it may come from) (app/models/commit_status.rb, Ci::HasStatus).
_STATUS_EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pending": ("enqueue", ("created",)),
    "running": ("run", ("created", "pending")),
    "success": ("success", ("created", "pending", "running")),
    "failed": ("drop", ("created", "pending", "running")),
    "canceled": ("cancel", ("created", "pending", "running")),
    "skipped": ("skip", ("created", "pending")),
}


def _status_entity(status: Mapping[str, Any]) -> dict[str, Any]:
    """A status as ``Entities::CommitStatus`` presents it."""
    return {k: v for k, v in status.items() if k not in ("project_id", "retried")}


def _int_param(request: RecordedRequest, name: str, default: int) -> int:
    value = request.param(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise _HttpError(400, f"{name} is invalid", key="error") from None
