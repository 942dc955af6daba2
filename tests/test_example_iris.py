"""The README's first command, for real: the Iris example trains through kfp-launch with kfp.local."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, clean_env

EXAMPLE = REPO_ROOT / "examples" / "iris"
KFP_LAUNCH = Path(sys.executable).parent / "kfp-launch"


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    dest = tmp_path / "iris"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".kfp-launch", "__pycache__", "local_outputs"))
    return dest


def kfp_launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in {**os.environ, **clean_env()}.items() if v is not None}
    return subprocess.run([str(KFP_LAUNCH), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def accuracy(stdout: str) -> float:
    match = re.search(r"evaluate-model/metrics  accuracy = ([0-9.]+)", stdout)
    assert match, stdout
    return float(match[1])


def test_train_runs_the_four_steps_on_real_data_and_reaches_09(iris: Path) -> None:
    result = kfp_launch(["run", "train", "--local"], iris)
    assert result.returncode == 0, result.stdout + result.stderr
    for task in ("fetch-dataset", "build-and-fit", "evaluate-model", "report"):
        assert f"✓ {task}  SUCCEEDED" in result.stdout
    assert accuracy(result.stdout) >= 0.9
    assert "test_rows = 45" in result.stdout  # 30 % of the 150 rows held out


def test_toy_profile_values_reach_the_components(iris: Path) -> None:
    result = kfp_launch(["run", "train", "--local", "--profile", "toy"], iris)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"steps\s+│ 20\s+│ profile toy", result.stdout)
    assert "test_rows = 18" in result.stdout  # 30 % of the toy profile's 60 rows
    log = next((iris / ".kfp-launch" / "local").glob("train-*/kfp-local.log")).read_text()
    assert "kept 60 (sample_size=60" in log and "20 steps at learning_rate" in log


def test_explore_job_runs(iris: Path) -> None:
    result = kfp_launch(["run", "explore", "--local", "-p", "sample_size=40"], iris)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Output = 40" in result.stdout


def test_a_missing_data_file_fails_the_run_with_exit_6(iris: Path) -> None:
    result = kfp_launch(["run", "explore", "--local", "-p", "source=data/nope.csv"], iris)
    assert result.returncode == 6
    assert "fetch-dataset" in result.stderr and "FileNotFoundError" in result.stderr


def test_the_example_runs_anywhere_its_spec_names_no_local_path(iris: Path, tmp_path: Path) -> None:
    shutil.rmtree(iris / "data")  # a cluster's container has no data/ either
    result = kfp_launch(["run", "explore", "--local", "-p", "sample_size=30"], iris)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Output = 30" in result.stdout
    spec = tmp_path / "train.yaml"
    compiled = kfp_launch(["compile", "train", "-o", str(spec)], iris)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    text = spec.read_text()
    assert "data/iris.csv" not in text and "default: data" not in text
    assert "5.1,3.5,1.4,0.2,iris-setosa" in text  # the data travels with the pipeline


def test_the_compiled_in_data_is_data_iris_csv() -> None:
    import runpy

    embedded = runpy.run_path(str(EXAMPLE / "pipelines" / "_iris_data.py"))["IRIS_CSV"]
    assert embedded == (EXAMPLE / "data" / "iris.csv").read_text(encoding="utf-8")


def test_dash_c_lists_the_example_jobs_from_the_repository_root() -> None:
    result = kfp_launch(["-C", "examples/iris", "jobs", "--json"], REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(job["job"] for job in json.loads(result.stdout)) == ["explore", "train"]
