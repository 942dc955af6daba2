"""Shared fixtures: fixture projects copied to a temp dir, a fake KFP server, and an in-process CLI runner.

Helpers the tests share (clean_env, CI, env_for, launch, ...) live in tests/helpers.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from kfp_launch.cli import app
from tests.fake_kfp import FakeKfpServer
from tests.helpers import FIXTURES, RunCli, clean_env


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


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """Run ``kfp-launch ARGS`` in-process in ``cwd`` with a clean environment plus ``env``."""

    def run(args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
        monkeypatch.chdir(cwd)
        return CliRunner().invoke(app, args, env=clean_env(env), catch_exceptions=False)

    return run
