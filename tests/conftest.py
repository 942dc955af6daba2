"""Shared fixtures: fixture projects copied to a temp dir, and an in-process CLI runner."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from kfp_launch.cli import app
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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of tests/fixtures/project (pipelines package with good and broken jobs)."""
    dest = tmp_path / "project"
    shutil.copytree(FIXTURES / "project", dest, ignore=shutil.ignore_patterns(".kfp-launch", "__pycache__"))
    return dest


@pytest.fixture
def kfp() -> Iterator[FakeKfpServer]:
    """A fake KFP API server on 127.0.0.1 (see tests/fake_kfp.py), stopped after the test."""
    with FakeKfpServer() as server:
        yield server


RunCli = Callable[..., Result]


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """Run ``kfp-launch ARGS`` in-process in ``cwd`` with a clean environment plus ``env``."""

    def run(args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
        monkeypatch.chdir(cwd)
        return CliRunner().invoke(app, args, env=clean_env(env), catch_exceptions=False)

    return run
