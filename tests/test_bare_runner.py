"""End to end on a bare runner, under gitlab-ci-local: each job's `python3` is a fresh venv without kfp-launch, and
only pip's own variables (PIP_FIND_LINKS, PIP_NO_INDEX, PIP_CONFIG_FILE) point at a local find-links directory
holding the wheel this working tree builds, its dependencies (.ci/wheelhouse, made by .ci/install-e2e-tools) and a
project requirement. The template's and the component's default install path must get kfp-launch and the project's
requirements in, then run against the fake Kubeflow; a failed run fails the job with exit 6.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.fake_kfp import FakeKfpServer, RunStep
from tests.helpers import REPO_ROOT
from tests.package_index import package_index
from tests.test_gitlab_ci_local import _require_tools, commit, gcl, job_log, readme_snippet, repo

__all__ = ["_require_tools", "repo"]  # fixtures shared with test_gitlab_ci_local

WHEELHOUSE = REPO_ROOT / ".ci" / "wheelhouse"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
pytestmark = pytest.mark.timeout(300)


def _offline_pip(*args: str, cwd: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}
    subprocess.run([sys.executable, "-m", "pip", *args, "--no-index", "--find-links", str(WHEELHOUSE)], cwd=cwd,
                   env=env, check=True, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links directory: kfp-launch built from this working tree, plus `iris-features`, a requirement of the
    test project that no index has. Built offline, with the build backend from the wheelhouse."""
    if not (WHEELHOUSE / ".stamp").exists():
        message = "no .ci/wheelhouse (run .ci/install-e2e-tools)"
        if os.environ.get("KFP_LAUNCH_REQUIRE_E2E") == "1":
            pytest.fail(message)
        pytest.skip(message)
    dest = tmp_path_factory.mktemp("index")
    source = tmp_path_factory.mktemp("kfp-launch-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "kfp_launch", source / "kfp_launch", ignore=shutil.ignore_patterns("__pycache__"))
    _offline_pip("wheel", "--no-deps", "--wheel-dir", str(dest), ".", cwd=source)
    features = tmp_path_factory.mktemp("iris-features")
    (features / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "iris-features"\nversion = "1.0"\n[tool.setuptools]\npy-modules = ["iris_features"]\n')
    (features / "iris_features.py").write_text('"""A project requirement the test pipeline imports."""\nSCALE = 1.0\n')
    _offline_pip("wheel", "--no-deps", "--wheel-dir", str(dest), ".", cwd=features)
    return dest


@pytest.fixture(scope="module")
def squatted(tmp_path_factory: pytest.TempPathFactory, index: Path) -> Path:
    """A directory with a wheel named kfp-launch, same version and tags as ours, that someone else published on a
    public index: its `kfp-launch` prints SQUATTED and submits nothing."""
    source = tmp_path_factory.mktemp("squatter")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "kfp-launch"\nversion = "{VERSION}"\n'
        '[project.scripts]\nkfp-launch = "kfp_launch_squatted:main"\n'
        '[tool.setuptools]\npy-modules = ["kfp_launch_squatted"]\n')
    (source / "kfp_launch_squatted.py").write_text('def main():\n    print("SQUATTED")\n')
    dest = tmp_path_factory.mktemp("squatted")
    _offline_pip("wheel", "--no-deps", "--wheel-dir", str(dest), ".", cwd=source)
    # A more specific tag than our py3-none-any: among equal versions, pip prefers it wherever both are candidates.
    [wheel] = dest.glob("*.whl")
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    wheel.rename(dest / wheel.name.replace("-py3-none-any.whl", f"-{tag}-none-any.whl"))
    return dest


@pytest.fixture
def bare_python(tmp_path: Path) -> Path:
    """The bin directory of a fresh venv: pip, and no kfp-launch."""
    venv = tmp_path / "runner-python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    assert not (venv / "bin" / "kfp-launch").exists()
    return venv / "bin"


def _project_needing_a_requirement(repo: Path) -> None:
    (repo / "requirements.txt").write_text("iris-features==1.0\n")
    train = repo / "pipelines" / "train.py"
    train.write_text("import iris_features  # noqa: F401  (the project's requirement)\n" + train.read_text())


def _pip_variables(index: Path) -> dict[str, str]:
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": f"{WHEELHOUSE} {index}", "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.mark.parametrize("snippet", ["day-one", "day-one-component"])
def test_a_bare_runner_installs_kfp_launch_and_the_requirements_then_passes(
        snippet: str, repo: Path, kfp: FakeKfpServer, index: Path, bare_python: Path) -> None:
    _project_needing_a_requirement(repo)
    commit(repo, ".gitlab-ci.yml", readme_snippet(snippet))
    kfp.script_run(["RUNNING", "SUCCEEDED"])
    result = gcl(repo, kfp, variables=_pip_variables(index), python_bin=bare_python)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "PASS  train" in result.stdout
    assert "run SUCCEEDED" in job_log(repo, "train")
    assert (bare_python / "kfp-launch").exists()  # installed by the job, by the default path
    installed = subprocess.run([bare_python / "python", "-m", "pip", "list", "--format=freeze"], capture_output=True,
                               text=True, check=True).stdout
    assert "kfp-launch==0.1.0" in installed and "iris-features==1.0" in installed
    [run] = kfp.runs.values()
    assert run["display_name"].startswith("train ")


@pytest.mark.parametrize("snippet", ["day-one", "day-one-component"])
def test_a_bare_runner_job_fails_with_exit_6_when_the_run_fails(
        snippet: str, repo: Path, kfp: FakeKfpServer, index: Path, bare_python: Path) -> None:
    _project_needing_a_requirement(repo)
    commit(repo, ".gitlab-ci.yml", readme_snippet(snippet))
    kfp.script_run([RunStep("RUNNING"), RunStep("FAILED")])
    result = gcl(repo, kfp, variables=_pip_variables(index), python_bin=bare_python)
    assert result.returncode == 1
    assert "FAIL 6" in result.stdout and "train" in result.stdout
    assert "run FAILED" in job_log(repo, "train")


@pytest.mark.parametrize("snippet", ["day-one", "day-one-component"])
def test_kfp_launch_comes_from_its_registry_alone_never_from_a_mirror_holding_a_squatter(
        snippet: str, repo: Path, kfp: FakeKfpServer, index: Path, squatted: Path, bare_python: Path,
        tmp_path: Path) -> None:
    # The team's PyPI mirror (PIP_INDEX_URL) has the dependencies, the project requirement and a squatted
    # kfp-launch; the kfp-launch project's package registry (KFP_LAUNCH_INDEX_URL) has the real one.
    mirror, registry = tmp_path / "mirror", tmp_path / "registry"
    mirror.mkdir()
    registry.mkdir()
    for wheel in index.glob("kfp_launch-*.whl"):
        shutil.copy(wheel, registry)
    shutil.copy(next(index.glob("iris_features-*.whl")), mirror)
    _project_needing_a_requirement(repo)
    commit(repo, ".gitlab-ci.yml", readme_snippet(snippet))
    kfp.script_run(["SUCCEEDED"])
    with package_index(mirror, WHEELHOUSE, squatted) as mirror_url, package_index(registry) as registry_url:
        variables = {"PIP_INDEX_URL": f"{mirror_url}/simple/", "PIP_CONFIG_FILE": os.devnull,
                     "PIP_DISABLE_PIP_VERSION_CHECK": "1", "KFP_LAUNCH_INDEX_URL": f"{registry_url}/simple/"}
        result = gcl(repo, kfp, variables=variables, python_bin=bare_python)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "SQUATTED" not in result.stdout
    assert len(kfp.runs) == 1  # the real kfp-launch ran
    assert not (bare_python.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" /
                "site-packages" / "kfp_launch_squatted.py").exists()


def test_with_no_index_configured_the_job_stops_before_asking_pypi_org(
        repo: Path, kfp: FakeKfpServer, bare_python: Path) -> None:
    commit(repo, ".gitlab-ci.yml", readme_snippet("day-one"))
    variables = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = gcl(repo, kfp, variables=variables, python_bin=bare_python)
    assert result.returncode == 1
    assert "FAIL 3" in result.stdout
    assert "kfp-launch is not on pypi.org and no index is configured for it" in result.stdout
    assert "KFP_LAUNCH_INDEX_URL" in result.stdout
    assert not kfp.requests
