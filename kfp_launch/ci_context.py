"""The CI context of a launch: branch, commit, merge request, JIRA ticket, pipeline and job.

In a GitLab job the facts come from GitLab's predefined variables
(https://docs.gitlab.com/ci/variables/predefined_variables/; docs/gitlab-notes.md, 'Predefined variables'); on a
laptop the branch and commit come from ``git`` in the working directory. The environment is passed in
as an explicit mapping and read once, in :meth:`CiContext.from_environ`; this module never reads
``os.environ``. A variable that is set but empty (or blank) counts as unset everywhere.
The JIRA ticket is found by :mod:`kfp_launch.tickets` from the texts read here.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from kfp_launch.errors import ContextError
from kfp_launch.tickets import TicketSource, detect_ticket, ticket_rules

RefKind = Literal["branch", "tag", "none"]
"""What ``CiContext.ref`` names: a branch, a tag, or nothing (only with ``require_ref=False``)."""


_NOT_A_BRANCH = "HEAD"
# gitlab-ci-local sets CI_COMMIT_BRANCH=HEAD and CI_COMMIT_REF_NAME=HEAD on a checked-out tag or detached
# HEAD (firecow/gitlab-ci-local src/git-data.ts (4.75.0): `git rev-parse --abbrev-ref HEAD`; docs/gitlab-notes.md,
# 'gitlab-ci-local on a detached HEAD'); git itself refuses a branch named "HEAD", so it never names one.

_PARALLEL_JOB_SUFFIX = re.compile(r"(?: \d+/\d+|: \[[^\]]*\])$")
# GitLab names `parallel: N` jobs "train 1/3" and `parallel: matrix` jobs "train: [gpu, a100]".


@dataclass(frozen=True, kw_only=True)
class GitHead:
    """What ``git`` says about HEAD in a directory (laptop mode).

    Attributes:
        branch: the checked-out branch (``refs/heads/`` stripped), or None when HEAD is detached or
            git could not be asked; then ``problem`` says why.
        commit_sha: the 40-hex HEAD commit, or None (no commit yet, or no git).
        commit_title: the subject line of HEAD, or None.
        problem: a one-line reason why ``branch`` is None, for the user; None when ``branch`` is set.
    """

    branch: str | None = None
    commit_sha: str | None = None
    commit_title: str | None = None
    problem: str | None = None


class GitReader(Protocol):
    """Reads HEAD from git; a port so that tests can pass a fake instead of running git."""

    def read_head(self, cwd: Path) -> GitHead:
        """Describe HEAD of the repository containing ``cwd``; never raises for git failures."""
        ...


@dataclass(frozen=True, kw_only=True)
class SubprocessGitReader:
    """The real :class:`GitReader`: runs ``git`` in ``cwd``.

    ``git symbolic-ref --quiet HEAD`` gives the branch (exit 1 means a detached HEAD). It is used
    instead of ``git rev-parse --abbrev-ref HEAD`` because that prints ``heads/x`` when a tag ``x``
    exists too, and fails on a branch without commits. Then ``git rev-parse --verify --quiet HEAD`` and
    ``git log -1 --format=%s`` give the commit and its title.

    Attributes:
        executable: the git command.
        env: the environment for git; None inherits the process environment.
        timeout_s: seconds after which a git command counts as failed.
    """

    executable: str = "git"
    env: Mapping[str, str] | None = None
    timeout_s: float = 10.0

    def read_head(self, cwd: Path) -> GitHead:
        """Describe HEAD of the repository containing ``cwd`` (see :class:`GitHead`)."""
        try:
            ref = self._git(cwd, "symbolic-ref", "--quiet", "HEAD")
            sha = self._git(cwd, "rev-parse", "--verify", "--quiet", "HEAD")
            title = self._git(cwd, "log", "-1", "--format=%s") if sha.returncode == 0 else None
        except FileNotFoundError:
            missing = "directory does not exist" if not cwd.is_dir() else "git is not installed"
            return GitHead(problem=f"cannot run {self.executable!r} in {cwd}: {missing}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            return GitHead(problem=f"cannot run {self.executable!r} in {cwd}: {exc}")
        commit_sha = sha.stdout.strip() if sha.returncode == 0 else None
        commit_title = (title.stdout.strip() or None) if title is not None and title.returncode == 0 else None
        head = GitHead(commit_sha=commit_sha, commit_title=commit_title)
        full_ref = ref.stdout.strip()
        if ref.returncode == 0 and full_ref.startswith("refs/heads/"):
            return replace(head, branch=full_ref.removeprefix("refs/heads/"))
        if ref.returncode == 1:
            at = f" at {commit_sha[:8]}" if commit_sha else ""
            return replace(head, problem=f"HEAD is detached{at} in {cwd}")
        # git's first stderr line is the "fatal: ..." reason (not a repository, dubious ownership, ...).
        reason = ref.stderr.strip().splitlines()[:1] or [f"HEAD is {full_ref}"]
        return replace(head, problem=f"git cannot name the branch in {cwd}: {reason[0]}")

    def _git(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, *args],
            cwd=cwd,
            env=None if self.env is None else dict(self.env),
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=self.timeout_s,
            check=False,
        )


@dataclass(frozen=True, kw_only=True)
class CiContext:
    """Which branch, commit, merge request, ticket, pipeline and job a launch belongs to.

    Build it with :meth:`from_environ`. Facts GitLab does not give (or that make no sense outside CI)
    are None. Sources are GitLab's predefined variables (https://docs.gitlab.com/ci/variables/predefined_variables/;
    docs/gitlab-notes.md, 'Predefined variables').

    Attributes:
        in_ci: True in a GitLab job (``CI=true`` and ``CI_COMMIT_SHA`` set).
        branch: the branch (``CI_COMMIT_BRANCH``, else ``CI_MERGE_REQUEST_SOURCE_BRANCH_NAME``, else
            ``CI_COMMIT_REF_NAME`` unless it is a tag; git on a laptop; ``--branch`` wins). None for tags.
        ref: the branch or tag name.
        ref_kind: ``"branch"``, ``"tag"`` (``CI_COMMIT_TAG``) or ``"none"``.
        commit_sha: the author's commit: ``CI_MERGE_REQUEST_SOURCE_BRANCH_SHA`` in merged-results and
            merge-train pipelines (where ``CI_COMMIT_SHA`` is an internal merge commit), else
            ``CI_COMMIT_SHA``; git HEAD on a laptop (None without git).
        checkout_sha: the commit the job checked out (``CI_COMMIT_SHA``); differs from ``commit_sha``
            only in merged-results pipelines.
        commit_title: the title of ``commit_sha`` (``CI_COMMIT_TITLE``); None in merged-results
            pipelines, where GitLab gives the internal merge commit's title.
        merge_request_iid: ``CI_MERGE_REQUEST_IID`` (MR pipelines only).
        merge_request_title: ``CI_MERGE_REQUEST_TITLE``.
        merge_request_event_type: ``CI_MERGE_REQUEST_EVENT_TYPE``: ``detached``, ``merged_result`` or
            ``merge_train``.
        merge_request_url: ``<CI_MERGE_REQUEST_PROJECT_URL or CI_PROJECT_URL>/-/merge_requests/<iid>``.
        pipeline_source: ``CI_PIPELINE_SOURCE``: ``push``, ``merge_request_event``, ``schedule``, ...
        pipeline_id, pipeline_url: ``CI_PIPELINE_ID``, ``CI_PIPELINE_URL``.
        job_name: the raw ``CI_JOB_NAME``, e.g. ``"train 1/3"`` or ``"train: [gpu, a100]"``.
        job: ``job_name`` without GitLab's ``parallel``/``matrix`` suffix, e.g. ``"train"``.
        job_id, job_url: ``CI_JOB_ID``, ``CI_JOB_URL``.
        job_started_at: ``CI_JOB_STARTED_AT`` as an aware datetime.
        job_timeout_s: ``CI_JOB_TIMEOUT``, seconds.
        project_path, project_url: ``CI_PROJECT_PATH`` (``group/project``), ``CI_PROJECT_URL``.
        server_url: ``CI_SERVER_URL``.
        default_branch: ``CI_DEFAULT_BRANCH``.
        user_login, user_name: ``GITLAB_USER_LOGIN``, ``GITLAB_USER_NAME`` (who started the pipeline).
        fork_path: for a merge request from a fork, the fork's project path
            (``CI_MERGE_REQUEST_SOURCE_PROJECT_PATH``, when ``CI_MERGE_REQUEST_SOURCE_PROJECT_ID`` differs from
            ``CI_MERGE_REQUEST_PROJECT_ID``); None otherwise.
        ticket: the JIRA issue key, upper-case, or None (see :func:`~kfp_launch.tickets.detect_ticket`).
        ticket_source: where ``ticket`` was found, or None.
    """

    in_ci: bool
    branch: str | None = None
    ref: str | None = None
    ref_kind: RefKind = "none"
    commit_sha: str | None = None
    checkout_sha: str | None = None
    commit_title: str | None = None
    merge_request_iid: int | None = None
    merge_request_title: str | None = None
    merge_request_event_type: str | None = None
    merge_request_url: str | None = None
    pipeline_source: str | None = None
    pipeline_id: str | None = None
    pipeline_url: str | None = None
    job_name: str | None = None
    job: str | None = None
    job_id: str | None = None
    job_url: str | None = None
    job_started_at: datetime | None = None
    job_timeout_s: int | None = None
    project_path: str | None = None
    project_url: str | None = None
    server_url: str | None = None
    default_branch: str | None = None
    user_login: str | None = None
    user_name: str | None = None
    fork_path: str | None = None
    ticket: str | None = None
    ticket_source: TicketSource | None = None

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str],
        *,
        cwd: Path,
        git: GitReader | None = None,
        branch_override: str | None = None,
        ticket_override: str | None = None,
        ticket_pattern: str | None = None,
        ticket_projects: tuple[str, ...] = (),
        require_ref: bool = True,
    ) -> CiContext:
        """Read the context from GitLab's variables in ``environ``, or from git outside CI.

        Args:
            environ: the process environment (``os.environ`` in ``cli.py``, a dict in tests).
            cwd: the project directory; git runs there outside CI.
            git: reads HEAD outside CI; default :class:`SubprocessGitReader`. Never used in CI.
            branch_override: ``--branch``; wins over GitLab and git, and makes git optional.
            ticket_override: ``--ticket``; wins over every other ticket source.
            ticket_pattern: the ``ticket_pattern`` setting, a regex, or None (see ``tickets.py``).
            ticket_projects: the ``ticket_projects`` setting: JIRA project keys (see ``tickets.py``).
            require_ref: when False, a missing branch gives ``ref_kind="none"`` instead of an error
                (for commands that need no experiment).

        Raises:
            ContextError: no branch can be determined (detached HEAD, no git) and no ``--branch``; or a
                GitLab variable is malformed (``CI_MERGE_REQUEST_IID``, ``CI_JOB_TIMEOUT``, ...).
            ConfigError: ``ticket_pattern`` or ``ticket_projects`` is invalid.
        """
        rules = ticket_rules(ticket_pattern, ticket_projects)
        branch_override = _blank_to_none(branch_override)
        if is_gitlab_ci(environ):
            context = _context_from_gitlab(environ, branch_override, require_ref=require_ref)
        else:
            context = _context_from_git(git or SubprocessGitReader(), cwd, branch_override, require_ref)
        ticket = detect_ticket(
            flag=ticket_override,
            jira_ticket=_value(environ, "JIRA_TICKET"),
            branch=context.branch,
            merge_request_title=context.merge_request_title,
            commit_title=context.commit_title,
            rules=rules,
        )
        if ticket is None:
            return context
        return replace(context, ticket=ticket.key, ticket_source=ticket.source)

    @property
    def is_merge_request(self) -> bool:
        """True in a merge-request pipeline (detached, merged results or merge train)."""
        return self.merge_request_iid is not None

    @property
    def experiment_ref(self) -> str | None:
        """The branch (or tag) as experiments name it: ``<fork path>:<branch>`` for a merge request from a
        fork, so a fork's ``main`` never shares this project's ``main`` experiment."""
        if self.fork_path and self.ref_kind == "branch" and self.ref:
            return f"{self.fork_path}:{self.ref}"
        return self.ref

    @property
    def short_sha(self) -> str | None:
        """The first 8 characters of ``commit_sha``, like ``CI_COMMIT_SHORT_SHA``."""
        return self.commit_sha[:8] if self.commit_sha else None

    @property
    def job_deadline(self) -> datetime | None:
        """When GitLab will time the job out: ``job_started_at + job_timeout_s``, or None."""
        if self.job_started_at is None or self.job_timeout_s is None:
            return None
        return self.job_started_at + timedelta(seconds=self.job_timeout_s)

    def describe(self) -> str:
        """A few human-readable lines for experiment and run descriptions and the start-up summary."""
        kind = "tag" if self.ref_kind == "tag" else "branch"
        commit = f" @ {self.short_sha}" if self.short_sha else ""
        title = f" {self.commit_title!r}" if self.commit_title else ""
        lines = [f"{kind} {self.ref or '(none)'}{commit}{title}"]
        if self.merge_request_iid is not None:
            mr_title = f" {self.merge_request_title!r}" if self.merge_request_title else ""
            lines.append(f"merge request !{self.merge_request_iid}{mr_title} {self.merge_request_url or ''}")
        if self.ticket:
            lines.append(f"ticket {self.ticket} (from {self.ticket_source})")
        if not self.in_ci:
            lines.append("launched outside GitLab CI")
        if self.pipeline_id:
            lines.append(f"GitLab pipeline {self.pipeline_id} ({self.pipeline_source}) {self.pipeline_url or ''}")
        if self.job_name:
            lines.append(f"GitLab job {self.job_name} {self.job_url or ''}")
        if self.user_login:
            lines.append(f"started by {self.user_login}")
        return "\n".join(line.rstrip() for line in lines)

    def to_json_dict(self) -> dict[str, object]:
        """Every field as a JSON-ready dict (datetimes as ISO 8601 strings), for ``--json`` output."""
        data: dict[str, object] = asdict(self)
        if self.job_started_at is not None:
            data["job_started_at"] = self.job_started_at.isoformat()
        return data


def is_gitlab_ci(environ: Mapping[str, str]) -> bool:
    """True in a GitLab job: ``CI`` is ``true`` and ``CI_COMMIT_SHA`` is non-empty.

    Both are GitLab predefined variables (https://docs.gitlab.com/ci/variables/predefined_variables/).
    """
    ci = _value(environ, "CI")
    return ci is not None and ci.strip().lower() == "true" and _value(environ, "CI_COMMIT_SHA") is not None


def reduce_job_name(job_name: str) -> str:
    """Strip GitLab's ``parallel`` suffix: ``"train 1/3"``, ``"train: [gpu, a100]"`` -> ``"train"``."""
    base = _PARALLEL_JOB_SUFFIX.sub("", job_name).rstrip()
    return base or job_name


def _context_from_gitlab(environ: Mapping[str, str], branch_override: str | None, *, require_ref: bool) -> CiContext:
    ref_kind, ref = _gitlab_ref(environ, branch_override)
    if ref_kind == "none" and require_ref:
        raise ContextError(
            "cannot determine the branch of this GitLab pipeline: CI_COMMIT_BRANCH, "
            "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME, CI_COMMIT_TAG and CI_COMMIT_REF_NAME are unset, "
            "empty or HEAD; pass --branch NAME",
            hint="run in a branch, merge-request or tag pipeline, or name the branch with --branch NAME",
        )
    checkout_sha = _value(environ, "CI_COMMIT_SHA")
    source_sha = _value(environ, "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA")
    merged_results = source_sha is not None and source_sha != checkout_sha
    mr_iid = _int_value(environ, "CI_MERGE_REQUEST_IID")
    mr_project_url = _value(environ, "CI_MERGE_REQUEST_PROJECT_URL") or _value(environ, "CI_PROJECT_URL")
    mr_url = f"{mr_project_url}/-/merge_requests/{mr_iid}" if mr_iid and mr_project_url else None
    job_name = _value(environ, "CI_JOB_NAME")
    return CiContext(
        in_ci=True,
        branch=ref if ref_kind == "branch" else None,
        ref=ref,
        ref_kind=ref_kind,
        commit_sha=source_sha or checkout_sha,
        checkout_sha=checkout_sha,
        commit_title=None if merged_results else _commit_title(environ),
        merge_request_iid=mr_iid,
        merge_request_title=_value(environ, "CI_MERGE_REQUEST_TITLE"),
        merge_request_event_type=_value(environ, "CI_MERGE_REQUEST_EVENT_TYPE"),
        merge_request_url=mr_url,
        pipeline_source=_value(environ, "CI_PIPELINE_SOURCE"),
        pipeline_id=_value(environ, "CI_PIPELINE_ID"),
        pipeline_url=_value(environ, "CI_PIPELINE_URL"),
        job_name=job_name,
        job=reduce_job_name(job_name) if job_name else None,
        job_id=_value(environ, "CI_JOB_ID"),
        job_url=_value(environ, "CI_JOB_URL"),
        job_started_at=_datetime_value(environ, "CI_JOB_STARTED_AT"),
        job_timeout_s=_int_value(environ, "CI_JOB_TIMEOUT"),
        project_path=_value(environ, "CI_PROJECT_PATH"),
        project_url=_value(environ, "CI_PROJECT_URL"),
        server_url=_value(environ, "CI_SERVER_URL"),
        default_branch=_value(environ, "CI_DEFAULT_BRANCH"),
        user_login=_value(environ, "GITLAB_USER_LOGIN"),
        user_name=_value(environ, "GITLAB_USER_NAME"),
        fork_path=_fork_path(environ),
    )


def _fork_path(environ: Mapping[str, str]) -> str | None:
    """The source project of a merge request from a fork (predefined variables of merge request pipelines:
    docs.gitlab.com/ci/variables/predefined_variables/#predefined-variables-for-merge-request-pipelines)."""
    source, target = (
        _value(environ, "CI_MERGE_REQUEST_SOURCE_PROJECT_ID"),
        _value(environ, "CI_MERGE_REQUEST_PROJECT_ID"),
    )
    if source is None or target is None or source == target:
        return None
    return _value(environ, "CI_MERGE_REQUEST_SOURCE_PROJECT_PATH") or f"project-{source}"


def _gitlab_ref(environ: Mapping[str, str], branch_override: str | None) -> tuple[RefKind, str | None]:
    """The ref: branch variables first, then the tag, then CI_COMMIT_REF_NAME.

    ``CI_COMMIT_BRANCH`` is unset in merge request and tag pipelines, ``CI_COMMIT_TAG`` only exists in tag
    pipelines (docs/gitlab-notes.md, 'Predefined variables').
    """
    if branch_override is not None:
        return "branch", branch_override
    for name in ("CI_COMMIT_BRANCH", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"):
        branch = _branch_value(environ, name)
        if branch is not None:
            return "branch", branch
    tag = _value(environ, "CI_COMMIT_TAG")
    if tag is not None:
        return "tag", tag
    # CI_COMMIT_REF_NAME is the branch or tag "for which project is built"; the tag was ruled out above.
    ref_name = _branch_value(environ, "CI_COMMIT_REF_NAME")
    return ("branch", ref_name) if ref_name is not None else ("none", None)


def _context_from_git(git: GitReader, cwd: Path, branch_override: str | None, require_ref: bool) -> CiContext:
    head = git.read_head(cwd)
    branch = branch_override or head.branch
    if branch is None and require_ref:
        raise ContextError(
            f"cannot determine the branch: {head.problem}; pass --branch NAME",
            hint="outside GitLab CI kfp-launch reads the branch from git; --branch NAME names it instead",
        )
    return CiContext(
        in_ci=False,
        branch=branch,
        ref=branch,
        ref_kind="branch" if branch is not None else "none",
        commit_sha=head.commit_sha,
        checkout_sha=head.commit_sha,
        commit_title=head.commit_title,
    )


def _commit_title(environ: Mapping[str, str]) -> str | None:
    """``CI_COMMIT_TITLE``, else the first line of ``CI_COMMIT_MESSAGE``."""
    title = _value(environ, "CI_COMMIT_TITLE")
    if title is not None:
        return title
    message = _value(environ, "CI_COMMIT_MESSAGE")
    return message.strip().splitlines()[0] if message is not None else None


def _value(environ: Mapping[str, str], name: str) -> str | None:
    """``environ[name]``; missing, empty and blank values all read as None."""
    return _blank_to_none(environ.get(name), strip=False)


def _branch_value(environ: Mapping[str, str], name: str) -> str | None:
    value = _value(environ, name)
    return None if value == _NOT_A_BRANCH else value


def _blank_to_none(value: str | None, *, strip: bool = True) -> str | None:
    if value is None or not value.strip():
        return None
    return value.strip() if strip else value


def _int_value(environ: Mapping[str, str], name: str) -> int | None:
    value = _value(environ, name)
    if value is None:
        return None
    if re.fullmatch(r"[0-9]+", value.strip()) is None:
        raise ContextError(
            f"GitLab variable {name}={value!r} is not a non-negative integer",
            hint=f"GitLab sets {name} itself; do not override it in the CI configuration",
        )
    return int(value)


def _datetime_value(environ: Mapping[str, str], name: str) -> datetime | None:
    value = _value(environ, name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ContextError(
            f"GitLab variable {name}={value!r} is not an ISO 8601 time",
            hint=f"GitLab sets {name} itself; do not override it in the CI configuration",
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
