"""What `--logs live` costs: log requests, bytes read from the log endpoint and bytes printed per hour.

Run from the repository root in the project's virtualenv: `.venv/bin/python benchmarks/log_economy.py`
(or `benchmarks/bench.py logs`). Simulated clock: each run is a one-hour, four-step pipeline (15 minutes per
task, like fetch_dataset, build_and_fit, evaluate_model, report) whose running task writes LINE_BYTES-byte
lines at a steady rate; the fake KFP server answers every log read with the whole log so far, as the real
endpoint does. The waiting is the product's own: `waiting.wait_and_report` with the shipped defaults.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from markdown_table import table

from tests.fake_kfp import PATH_RUN, PATH_RUNS, PATH_TASK_LOG, FakeKfpServer

EPOCH0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HOUR_S = 3600.0
TASKS = ("fetch-dataset", "build-and-fit", "evaluate-model", "report")
TASK_S = HOUR_S / len(TASKS)
LINE_BYTES = 64


class CountingKfp(FakeKfpServer):
    """The fake KFP server, counting the bytes its log endpoint sends."""

    log_bytes = 0

    def _read_task_log(self, request: Any, run_id: str, node_id: str) -> Any:
        response = super()._read_task_log(request, run_id, node_id)
        self.log_bytes += len(response.body)
        return response


def executor(n: int) -> str:
    return f"bench-x7k2p-system-container-impl-{n}"


class LogScenario:
    """RUNS one-hour runs whose running task writes RATE lines per second; sleeping advances the clock."""

    def __init__(self, runs: int, rate: float) -> None:
        self.now = 0.0
        self.rate = rate
        self.server = CountingKfp(clock=lambda: EPOCH0 + dt.timedelta(seconds=self.now)).start()
        self.experiment = self.server.add_experiment("bench", namespace="team-a")["experiment_id"]
        self.run_ids = [self.server.add_run(self.experiment, f"job{i}", state="RUNNING")["run_id"] for i in range(runs)]
        self.written = 0  # lines written per run so far (all runs write alike)
        self._advance(0.0)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self._advance(self.now + seconds)

    def _advance(self, now: float) -> None:
        self.now = min(now, HOUR_S)
        current = min(int(self.now // TASK_S), len(TASKS) - 1)
        target = int(self.now * self.rate)
        with self.server.lock:
            for run_id in self.run_ids:
                run = self.server.runs[run_id]
                new: dict[int, list[str]] = {}
                for i in range(self.written, target):  # line i belongs to the task running when it was written
                    n = min(int(i / self.rate // TASK_S), len(TASKS) - 1)
                    line = f"{TASKS[n]} step {i} loss={1 / (i + 1):.6f} lr=0.001 "
                    new.setdefault(n, []).append(line.ljust(LINE_BYTES - 1) + "\n")
                for n, lines in new.items():
                    key = (run_id, executor(n))
                    self.server.task_logs[key] = self.server.task_logs.get(key, "") + "".join(lines)
                done = self.now >= HOUR_S
                states = ["SUCCEEDED" if n < current or done else "RUNNING" for n in range(current + 1)]
                run["run_details"] = {"task_details": [_task(n, s) for n, s in enumerate(states)]}
                if done:
                    run["state"] = "SUCCEEDED"
                    run["finished_at"] = (EPOCH0 + dt.timedelta(seconds=HOUR_S)).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.written = max(self.written, target)


def _task(n: int, state: str) -> dict[str, Any]:
    driver = f"bench-x7k2p-system-container-driver-{n}"
    return {
        "task_id": f"t{n}",
        "display_name": TASKS[n],
        "state": state,
        "pod_name": driver,
        "child_tasks": [{"pod_name": driver}, {"pod_name": executor(n)}],
    }


def measure(runs: int, rate: float) -> list[object]:
    from kfp_launch.app import App, Runtime
    from kfp_launch.connection import Connection
    from kfp_launch.console import Console
    from kfp_launch.errors import ExitCode
    from kfp_launch.kfp_api import KfpApi
    from kfp_launch.models import RunOutcome
    from kfp_launch.settings import load_settings
    from kfp_launch.states import OutcomeState
    from kfp_launch.waiting import Tracked, wait_and_report

    s = LogScenario(runs, rate)
    try:
        connection = Connection(host=s.server.url, namespace="team-a", token="t")
        api = KfpApi(connection)
        project = Path(tempfile.gettempdir())
        settings = load_settings({"logs": "live"}, {}, project, command="run")  # the shipped budgets
        out = io.StringIO()
        app = App(
            settings=settings,
            environ={},
            project_dir=project,
            console=Console(out=out, err=out),
            runtime=Runtime(clock=s.clock, sleep=s.sleep),
        )
        tracked = [
            Tracked(
                base=RunOutcome(
                    job=f"job{i}",
                    pipeline_name="bench",
                    state=OutcomeState.RUNNING,
                    exit_code=ExitCode.SUCCESS,
                    run_id=run_id,
                    run_url=connection.run_url(run_id),
                    experiment_id=s.experiment,
                ),
                status=api.get_run(run_id),
            )
            for i, run_id in enumerate(s.run_ids)
        ]
        s.server.requests.clear()
        wait_and_report(app, api, tracked, reporting=None, state_path=None)
        text = out.getvalue()
        log_lines = [line for line in text.splitlines() if " | " in line and " | … " not in line]
        printed = sum(len(line.encode()) + 1 for line in log_lines)
        status_reads = len(s.server.requests_to("GET", PATH_RUN)) + len(s.server.requests_to("GET", PATH_RUNS))
        written = s.written * runs
        return [
            f"{runs} run{'s' if runs > 1 else ''}" + (" (`--all`)" if runs > 1 else ""),
            f"{rate:g}",
            f"{written:,}",
            status_reads,
            len(s.server.requests_to("GET", PATH_TASK_LOG)),
            f"{s.server.log_bytes / 1e6:.1f}",
            f"{len(log_lines):,}",
            f"{printed / 1024:.0f}",
            f"{written - len(log_lines):,}",
        ]
    finally:
        s.server.stop()


def bench_logs() -> None:
    rows = [measure(1, 1.0), measure(10, 1.0), measure(1, 100.0)]
    table(
        "Live logs for one hour (simulated; four 15-minute tasks per run, 64-byte lines; budgets: 200 lines per "
        "task per poll, 256 KiB per task, 1 MiB per job, 4 tasks read per poll)",
        [
            "runs",
            "lines/s per run",
            "lines written",
            "status requests",
            "log requests",
            "MB read from the log endpoint",
            "log lines printed",
            "KiB printed",
            "lines not shown (each skip said, with the run's link)",
        ],
        rows,
    )


if __name__ == "__main__":
    bench_logs()
