"""Runner time for a one-hour run: a CI job that waits for it vs one that submits it with `--report-status`.

Run from the repository root in the project's virtualenv: `.venv/bin/python benchmarks/gate_economy.py` (or
`benchmarks/bench.py gate`). The waiting job is the product's own poll loop on a simulated clock (the run ends
after 3,600 s; the job ends when kfp-launch sees it); the `--report-status` job is the real `kfp-launch run`
process against the fake Kubeflow and GitLab servers, timed on the wall clock (pip install excluded: the
image's, the same for both).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from markdown_table import table

from tests.fake_gitlab import FakeGitLab
from tests.fake_kfp import PATH_RUN, FakeKfpServer

RUN_S = 3600.0
SHA = "0123456789abcdef0123456789abcdef01234567"
BIN = Path(sys.executable).parent


def report_status_job_s(runs: int = 5) -> tuple[float, int]:
    """Median wall seconds of `kfp-launch run train --report-status` (Iris example), and its status polls."""
    times, polls = [], 0
    for i in range(runs):
        with (
            tempfile.TemporaryDirectory() as tmp,
            FakeKfpServer() as kfp,
            FakeGitLab(access_tokens={"glpat-bench": "bot"}) as gitlab,
        ):
            project = Path(tmp) / "iris"
            shutil.copytree(ROOT / "examples" / "iris", project, ignore=shutil.ignore_patterns(".kfp-launch"))
            gitlab.add_project("mlops/demo", project_id=42)
            gitlab.add_pipeline(42, sha=SHA, pipeline_id=1001 + i, jobs=["train"])
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CI", "GITLAB_", "KFP_"))}
            env.update(
                CI="true",
                GITLAB_CI="true",
                CI_COMMIT_SHA=SHA,
                CI_COMMIT_BRANCH="feature/ML-1-x",
                CI_COMMIT_REF_NAME="feature/ML-1-x",
                CI_PIPELINE_ID=str(1001 + i),
                CI_JOB_ID="7",
                CI_JOB_NAME="train",
                CI_SERVER_URL=gitlab.url,
                CI_PROJECT_ID="42",
                GITLAB_TOKEN="glpat-bench",
                KFP_HOST=kfp.url,
                KFP_NAMESPACE="team-a",
                KFP_TOKEN="t",
            )
            start = time.perf_counter()
            proc = subprocess.run(
                [str(BIN / "kfp-launch"), "run", "train", "--report-status"],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            times.append(time.perf_counter() - start)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert [s["status"] for s in gitlab.statuses] == ["running"]
            polls += len(kfp.requests_to("GET", PATH_RUN))
    return statistics.median(times), polls


def waiting_job_s() -> tuple[float, int]:
    """Simulated seconds a waiting job holds its runner for a run that ends after :data:`RUN_S` seconds, and
    its status requests."""
    from bench import measure, wait_kfp_launch  # benchmarks/bench.py: the product's poll loop, simulated

    scenario = measure(wait_kfp_launch, RUN_S)
    return RUN_S + scenario.latency(), scenario.gets()


def bench_gate() -> None:
    waiting, waiting_polls = waiting_job_s()
    gated, polls = report_status_job_s()
    table(
        "Runner time for a one-hour run (waiting: simulated clock; --report-status: wall clock, median of 5, "
        "pip install excluded)",
        ["CI job", "runner held", "status requests by the job", "who reports the end"],
        [
            ["`kfp-launch run train` (waits)", f"{waiting:,.0f} s", str(waiting_polls), "the CI job"],
            ["`kfp-launch run train --report-status`", f"{gated:.1f} s", str(polls), "the run's exit task"],
        ],
    )
    print(f"\nrunner time saved: {waiting - gated:,.0f} s of {waiting:,.0f} s ({(waiting - gated) / waiting:.1%})")


if __name__ == "__main__":
    bench_gate()
