"""Helpers the test modules share (fixtures stay in conftest.py): paths, a clean environment, the variables of
a GitLab CI job, `kfp-launch run` against the fake KFP server, the Kubeflow use case on a fake clock, and a
generated project with many jobs."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from typer.testing import Result

from kfp_launch.app import App, Runtime
from kfp_launch.console import Console
from kfp_launch.errors import KfpAuthError, KfpUnavailableError
from kfp_launch.kfp_api import KfpApi
from kfp_launch.kubeflow import run_on_kubeflow
from kfp_launch.settings import load_settings
from tests.fake_kfp import FakeKfpServer

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Variables from the machine running the tests (GitLab CI itself!) must not leak into the CLI under test.
_AMBIENT_PREFIXES = ("CI", "GITLAB_", "KFP_", "KF_PIPELINES_", "JIRA_")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """A CliRunner env that unsets every ambient CI/KFP/JIRA variable, then sets ``extra``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(_AMBIENT_PREFIXES)}
    env.update(extra or {})
    return env


RunCli = Callable[..., Result]
"""The ``run_cli`` fixture: ``run_cli(ARGS, cwd=..., env=...)`` runs ``kfp-launch ARGS`` in-process."""

# ---- a GitLab CI job against the fake KFP server -------------------------------------------------------------

TOKEN = "s3cr3t-token-value"
COOKIE_VALUE = "authservice_session=c00kie-s3cr3t"
SECRETS = (TOKEN, "c00kie-s3cr3t")

CI = {
    "CI": "true",
    "GITLAB_CI": "true",
    "CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
    "CI_COMMIT_BRANCH": "feature/ML-42-faster",
    "CI_COMMIT_REF_NAME": "feature/ML-42-faster",
    "CI_COMMIT_TITLE": "Make it faster",
    "CI_PIPELINE_SOURCE": "push",
    "CI_PIPELINE_ID": "1001",
    "CI_PIPELINE_URL": "https://gitlab.example.com/mlops/demo/-/pipelines/1001",
    "CI_JOB_ID": "77",
    "CI_JOB_NAME": "good",
    "CI_JOB_URL": "https://gitlab.example.com/mlops/demo/-/jobs/77",
    "CI_PROJECT_PATH": "mlops/demo",
    "CI_PROJECT_URL": "https://gitlab.example.com/mlops/demo",
    "GITLAB_USER_LOGIN": "alice",
}


def env_for(server: FakeKfpServer, **extra: str) -> dict[str, str]:
    """The variables of the CI job ``CI`` connected to SERVER (namespace team-a, token TOKEN, fast polls)."""
    return {**CI, "KFP_HOST": server.url, "KFP_NAMESPACE": "team-a", "KFP_TOKEN": TOKEN,
            "KFP_LAUNCH_POLL_INTERVAL": "0.01", **extra}


def launch(run_cli: RunCli, project: Path, server: FakeKfpServer, *args: str, job_override: bool = False,
           **env: str) -> Result:
    """`kfp-launch run good ARGS` (or `run ARGS` with job_override) in CI against SERVER; no secret in the output."""
    result = run_cli(["run", *([] if job_override else ["good"]), *args], cwd=project, env=env_for(server, **env))
    for secret in SECRETS:
        assert secret not in result.output, "a secret reached the output"
    return result


def runs(server: FakeKfpServer) -> list[dict]:
    """The runs SERVER holds, in creation order."""
    with server.lock:
        return list(server.runs.values())


# ---- the Kubeflow use case with an injected clock -------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def run_use_case(
    project: Path, server: FakeKfpServer, *, clock: FakeClock | None = None, env: dict[str, str] | None = None,
    sleep: Callable[[float], None] | None = None, read_timeout_s: float = 5.0,
) -> tuple[int, str]:
    """Run job ``good`` of PROJECT on SERVER through the use case, sleeping on CLOCK (and calling SLEEP first).

    Returns the exit code and everything printed; an auth or outage error ends as ``error: MESSAGE``.
    """
    clock = clock or FakeClock()
    environ = {**env_for(server), **(env or {})}
    environ = {k: v for k, v in environ.items() if v != ""}
    settings = load_settings({}, environ, project, command="run")
    out = io.StringIO()
    console = Console(out=out, err=out)

    def do_sleep(seconds: float) -> None:
        if sleep is not None:
            sleep(seconds)
        clock.sleep(seconds)

    runtime = Runtime(clock=clock, sleep=do_sleep,
                      api_factory=lambda c: KfpApi(c, connect_timeout_s=1.0, read_timeout_s=read_timeout_s))
    try:
        wired = App(settings=settings, environ=environ, project_dir=project, console=console, runtime=runtime)
        code = run_on_kubeflow(wired, ["good"], False)
    except (KfpAuthError, KfpUnavailableError) as exc:
        out.write(f"error: {exc.message}\n")
        code = exc.exit_code
    text = out.getvalue()
    for secret in SECRETS:
        assert secret not in text
    return int(code), text


# ---- a generated project with many jobs ---------------------------------------------------------------------

_JOB_MODULE = '''from kfp import dsl

from ._steps import add

PROFILES = {"toy": {"a": 1}}


@dsl.pipeline(name="job-%(n)s")
def pipeline(a: int = %(n)s) -> int:
    return add(a=a, b=1).output
'''


def make_project(tmp_path: Path, jobs: int, *, without_toy: tuple[int, ...] = ()) -> Path:
    """A project with JOBS jobs ``job00``, ``job01``, ... each with a ``toy`` profile (except WITHOUT_TOY's)."""
    project = tmp_path / "many"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "__init__.py").write_text("")
    shutil.copy(FIXTURES / "project" / "pipelines" / "_steps.py", project / "pipelines" / "_steps.py")
    for n in range(jobs):
        source = _JOB_MODULE % {"n": n}
        if n in without_toy:
            source = source.replace('PROFILES = {"toy": {"a": 1}}', 'PROFILES = {"big": {"a": 100}}')
        (project / "pipelines" / f"job{n:02d}.py").write_text(source)
    return project


EVERYDAY_BRANCHES = (
    "chore/bump-kfp-2",
    "feature/gpt-4-prompts",
    "fix/sha-256-checksum",
    "renovate/python-3.12",
    "dependabot/pip/numpy-2.1.0",
    "feature/resnet-50",
)
"""Branch names with a word, a dash and a number that are not JIRA issue keys (keys are upper-case): no ticket."""
