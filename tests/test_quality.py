"""The code standards CI holds: ruff (lint, formatting, vendor SDKs only in adapter modules) and mypy --strict."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.timeout(300)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=280)


def test_ruff_lint_passes() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied_to_the_package() -> None:
    result = run("ruff", "format", "--check", "kfp_launch", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_on_the_package() -> None:
    result = run("mypy", "kfp_launch")
    assert result.returncode == 0, result.stdout + result.stderr
