"""The one object a command's use case receives: built once per process by the CLI, from the environment.

Nothing below the CLI reads ``os.environ``: use cases take what they need from :class:`App` (settings,
the CI context, the console, time, how to reach Kubeflow, GitLab/JIRA configuration and the environment
that subprocesses get). Tests build an ``App`` from a plain dict and a fake clock.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from kfp_launch.settings import Settings

if TYPE_CHECKING:
    from kfp_launch.ci_context import CiContext
    from kfp_launch.connection import Connection
    from kfp_launch.console import Console
    from kfp_launch.gitlab_notes import GitLabReportConfig
    from kfp_launch.kfp_api import KfpApi
    from kfp_launch.polling import PollPolicy, Retry

SECRET_VARIABLES = ("KFP_TOKEN", "KFP_COOKIE", "GITLAB_TOKEN", "CI_JOB_TOKEN")
"""Credentials kfp-launch reads: masked in every output and kept from local components."""


def _kfp_api(connection: Connection) -> KfpApi:
    from kfp_launch.kfp_api import KfpApi

    return KfpApi(connection)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Injected time, and how to reach Kubeflow (tests pass fakes).

    Attributes:
        clock: monotonic seconds.
        sleep: sleeps that many seconds.
        wall_clock: the current aware UTC datetime.
        api_factory: builds the KFP adapter for a connection.
    """

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    api_factory: Callable[[Connection], KfpApi] = _kfp_api


@dataclass(frozen=True, kw_only=True)
class App:
    """Everything a use case needs, wired once.

    Attributes:
        settings: the resolved settings of this command.
        flags: the settings given on the command line, by name (None: not given).
        environ: the process environment, read once by the CLI (never ``os.environ`` below it).
        project_dir: the project (the working directory).
        console: the one console of the process (masks :data:`SECRET_VARIABLES`' values).
        runtime: time and the KFP adapter factory.
        results: what ``--json`` prints, filled as runs end: one dict per run (see
            :func:`kfp_launch.reporting.outcome_document`) or per cancelled run.
    """

    settings: Settings
    flags: Mapping[str, object] = field(default_factory=dict)
    environ: Mapping[str, str] = field(repr=False)
    project_dir: Path
    console: Console
    runtime: Runtime = field(default_factory=Runtime)
    results: list[dict[str, object]] = field(default_factory=list)

    @cached_property
    def ci(self) -> CiContext:
        """The CI context (GitLab variables, or git on a laptop) with ``--branch``/``--ticket``; a missing
        branch gives ``ref_kind="none"`` (see :meth:`require_ref`).

        Raises:
            ContextError: a GitLab variable is malformed. ConfigError: ``ticket_pattern`` is invalid.
        """
        from kfp_launch.ci_context import CiContext

        return CiContext.from_environ(
            self.environ,
            cwd=self.project_dir,
            branch_override=self.settings.branch,
            ticket_override=self.settings.ticket,
            ticket_pattern=self.settings.ticket_pattern,
            ticket_projects=self.settings.ticket_projects,
            require_ref=False,
        )

    def require_ref(self) -> CiContext:
        """The CI context, which must name a branch or tag (for an experiment).

        Raises:
            ContextError: no branch (detached HEAD, no git) and no ``--branch``, saying why.
        """
        from kfp_launch.ci_context import CiContext

        if self.ci.ref_kind != "none":
            return self.ci
        return CiContext.from_environ(  # raises the ContextError that says why there is no branch
            self.environ,
            cwd=self.project_dir,
            branch_override=self.settings.branch,
            ticket_pattern=self.settings.ticket_pattern,
            require_ref=True,
        )

    @cached_property
    def gitlab(self) -> GitLabReportConfig:
        """Where and as whom merge request notes are written (``CI_SERVER_URL``, ``GITLAB_TOKEN``...), and
        the JIRA base URL (``JIRA_URL``)."""
        from kfp_launch.gitlab_notes import GitLabReportConfig

        return GitLabReportConfig.from_environ(self.environ)

    @property
    def jira_url(self) -> str | None:
        """The JIRA base URL (``JIRA_URL``) for ticket links, or None."""
        return self.gitlab.jira_url

    @property
    def subprocess_environ(self) -> dict[str, str]:
        """The environment of local components: this one without credentials, and the interpreter's own
        ``bin/`` first on PATH (kfp's install prologue runs ``pip`` from PATH; without a venv's ``bin/`` it
        falls back to ``python -m ensurepip``, ~3.5 s per task)."""
        env = {k: v for k, v in self.environ.items() if k not in SECRET_VARIABLES}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def connection(self, settings: Settings | None = None) -> Connection:
        """How to reach Kubeflow with ``settings`` (default: this command's).

        Raises:
            ConfigError: no host, a bad host, a missing CA bundle or token file.
        """
        from kfp_launch.connection import connection_from

        return connection_from(settings or self.settings, self.environ)

    def kfp(self, connection: Connection | None = None) -> KfpApi:
        """The KFP adapter for ``connection`` (default: :meth:`connection`); makes no request."""
        return self.runtime.api_factory(connection or self.connection())

    @property
    def log_mode(self) -> str:
        """``--logs``: ``live``, ``failed`` or ``none``; by default ``live`` in CI and on a terminal (where
        someone reads the log as it comes), else ``failed`` (a pipe or a file keeps only what explains)."""
        if self.settings.logs is not None:
            return self.settings.logs
        return "live" if self.ci.in_ci or self.console.is_interactive else "failed"

    @property
    def poll_policy(self) -> PollPolicy:
        """The poll policy from ``--poll-interval`` and ``--max-outage``."""
        from kfp_launch.polling import PollPolicy

        return PollPolicy(
            first_interval_s=self.settings.poll_interval.total_seconds(),
            max_outage_s=self.settings.max_outage.total_seconds(),
        )

    def retry(self, *, max_outage_s: float | None = None) -> Retry:
        """The retry rule for one safe API call, for up to ``--max-outage`` (or ``max_outage_s`` seconds if
        shorter); each transient failure is a ``warning:`` line that names the limit."""
        from dataclasses import replace

        from kfp_launch.polling import Retry

        policy = self.poll_policy
        if max_outage_s is not None:
            policy = replace(policy, max_outage_s=min(policy.max_outage_s, max_outage_s))

        def warn(exc: Exception, outage_s: float) -> None:
            message = getattr(exc, "message", str(exc))
            self.console.warn(
                f"{message} (retrying; failing for {outage_s:.0f}s of at most {policy.max_outage_s:.0f}s)"
            )

        return Retry(policy=policy, clock=self.runtime.clock, sleep=self.runtime.sleep, on_transient=warn)


def in_gitlab(environ: Mapping[str, str]) -> bool:
    """True inside a GitLab job, where the log renders collapsible sections. gitlab-ci-local sets
    ``GITLAB_CI=false`` but renders sections like GitLab, so a job id with a server URL counts too."""
    return environ.get("GITLAB_CI", "") == "true" or bool(environ.get("CI_JOB_ID") and environ.get("CI_SERVER_URL"))


def make_console(environ: Mapping[str, str], *, human_to_stderr: bool = False) -> Console:
    """The console of this process (GitLab job or not), masking the values of :data:`SECRET_VARIABLES`;
    with ``human_to_stderr`` (``--json``) everything it prints goes to stderr, leaving stdout to the document.

    rich is imported here, not at module level: ``kfp-launch --help`` does not need it."""
    from kfp_launch.console import Console

    no_color = environ.get("NO_COLOR", "") != ""  # no-color.org: wins over colour in GitLab's log too
    out = sys.stderr if human_to_stderr else sys.stdout
    console = Console(out=out, err=sys.stderr, in_gitlab=in_gitlab(environ), color=False if no_color else None)
    console.mask(*(environ.get(name) for name in SECRET_VARIABLES))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):  # a proxy's password, anywhere
        try:
            console.mask(urllib.parse.urlsplit(environ.get(name, "")).password)
        except ValueError:
            pass  # not a URL: nothing to mask
    token_file = environ.get("KF_PIPELINES_SA_TOKEN_PATH", "")
    if token_file and "/" not in token_file:  # the token itself, in a CI/CD variable of type Variable
        console.mask(token_file)
    return console
