"""kfp-launch benchmarks: start-up, polling economy, fan-out, compile. Prints Markdown tables.

Run from the repository root, in the project's virtualenv (it imports the test suite's fake KFP server):

    .venv/bin/python benchmarks/bench.py            # everything (about a minute)
    .venv/bin/python benchmarks/bench.py startup    # one section: startup | polling | fanout | compile

Nothing here reaches anything but 127.0.0.1. Polling is simulated with an injected clock (hours of a run
in seconds of wall time); the SDK's and the stock CLI's sleeps are patched to the same clock in-process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from markdown_table import table  # benchmarks/ is sys.path[0] when run as a script

from tests.fake_kfp import PATH_RUN, PATH_RUNS, FakeKfpServer

BIN = Path(sys.executable).parent
EPOCH0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


# -- start-up ---------------------------------------------------------------------------------------------


def median_wall(command: list[str], cwd: Path, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_startup() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        kfp = median_wall([str(BIN / "kfp"), "--help"], cwd)
        rows = []
        for label, args in (
            ("kfp-launch --help", ["--help"]),
            ("kfp-launch run --help", ["run", "--help"]),
            ("kfp-launch context --branch x", ["context", "--branch", "x"]),
        ):
            seconds = median_wall([str(BIN / "kfp-launch"), *args], cwd)
            rows.append([label, f"{seconds:.3f}", f"{seconds / kfp:.2f}"])
        rows.append(["kfp --help", f"{kfp:.3f}", "1.00"])
    table(
        "Start-up (median of 7, seconds; target: kfp-launch --help <= 0.25 x kfp --help)",
        ["command", "wall s", "x kfp --help"],
        rows,
    )


# -- polling economy --------------------------------------------------------------------------------------


class SimClock:
    """Simulated seconds since the run started."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Scenario:
    """One run that finishes at ``t_end`` simulated seconds; sleeping advances the clock."""

    def __init__(self, t_end: float) -> None:
        self.clock = SimClock()
        self.t_end = t_end
        self.server = FakeKfpServer(clock=lambda: EPOCH0 + dt.timedelta(seconds=self.clock.now)).start()
        experiment = self.server.add_experiment("bench", namespace="team-a")
        run = self.server.add_run(experiment["experiment_id"], "bench run", state="RUNNING")
        self.run_id = run["run_id"]
        self.first_hour_gets: int | None = None
        self.finished = False

    def gets(self) -> int:
        return len(self.server.requests_to("GET", PATH_RUN))

    def sleep(self, seconds: float) -> None:
        before = self.clock.now
        self.clock.now += seconds
        if before < 3600 <= self.clock.now:
            self.first_hour_gets = self.gets()
        if self.clock.now >= self.t_end and not self.finished:
            with self.server.lock:
                self.server.runs[self.run_id]["state"] = "SUCCEEDED"
                self.server.runs[self.run_id]["finished_at"] = (EPOCH0 + dt.timedelta(seconds=self.t_end)).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
            self.finished = True

    def latency(self) -> float:
        return self.clock.now - self.t_end

    def close(self) -> None:
        self.server.stop()


def wait_kfp_launch(s: Scenario) -> None:
    from kfp_launch.app import App
    from kfp_launch.connection import Connection
    from kfp_launch.console import Console
    from kfp_launch.kfp_api import KfpApi
    from kfp_launch.polling import read_runs, wait_for_runs
    from kfp_launch.settings import load_settings

    api = KfpApi(Connection(host=s.server.url, namespace="team-a", token="t"))
    settings = load_settings({}, {}, Path(tempfile.gettempdir()), command="run")  # the shipped defaults
    quiet = Console(out=io.StringIO(), err=io.StringIO())
    policy = App(settings=settings, environ={}, project_dir=Path(tempfile.gettempdir()), console=quiet).poll_policy
    # The product's own tick: read_runs of one run (one GET /runs/{id}), as `run` and `watch` poll.
    wait_for_runs(lambda: read_runs(api, "", [s.run_id]), policy=policy, clock=s.clock, sleep=s.sleep)


def _client(s: Scenario):  # type: ignore[no-untyped-def]
    import kfp

    with contextlib.redirect_stdout(io.StringIO()):
        return kfp.Client(host=s.server.url, namespace="team-a", existing_token="t")


def wait_sdk(s: Scenario) -> None:
    import kfp.client.client as client_module

    client = _client(s)
    real_sleep = client_module.time.sleep
    client_module.time.sleep = s.sleep  # type: ignore[assignment]
    try:
        client.wait_for_run_completion(s.run_id, timeout=dt.timedelta(days=1))
    finally:
        client_module.time.sleep = real_sleep  # type: ignore[assignment]


def wait_stock_cli(s: Scenario) -> None:
    import kfp.cli.run as run_module

    client = _client(s)
    real_sleep = run_module.time.sleep
    run_module.time.sleep = s.sleep  # type: ignore[assignment]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run_module.display_run(client, s.run_id, True, "json")  # `kfp run create --watch`'s loop
    finally:
        run_module.time.sleep = real_sleep  # type: ignore[assignment]


TOOLS: dict[str, Callable[[Scenario], None]] = {
    "kfp-launch": wait_kfp_launch,
    "SDK wait_for_run_completion": wait_sdk,
    "kfp run create --watch": wait_stock_cli,
}


def measure(tool: Callable[[Scenario], None], t_end: float) -> Scenario:
    s = Scenario(t_end)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            tool(s)
    finally:
        s.close()
    return s


def bench_polling() -> None:
    young = [7 + 13 * i for i in range(22)]  # run ends at 7 s ... 280 s
    old = [300 + 97 * i for i in range(40)]  # 300 s ... ~4080 s
    rows = []
    for name, tool in TOOLS.items():
        hour = measure(tool, 7200)
        first_hour = hour.first_hour_gets
        # The SDK and the CLI sleep a fixed 5 s / 1 s: a few end times show their bound.
        young_lat = max(measure(tool, t).latency() for t in (young if name == "kfp-launch" else (7, 9, 11, 13, 299)))
        old_lat = max(measure(tool, t).latency() for t in (old if name == "kfp-launch" else (301, 303, 1002, 1004)))
        rows.append([name, first_hour, f"{young_lat:.1f}", f"{old_lat:.1f}"])
    table(
        "Polling economy (one run on the fake server, simulated clock; targets for kfp-launch: <= 144 GETs "
        "in the first hour, exit latency <= 10 s for runs younger than 5 min, <= 30 s after)",
        [
            "waiter",
            "GETs in the run's first hour",
            "max exit latency, run < 5 min (s)",
            "max exit latency, run >= 5 min (s)",
        ],
        rows,
    )


# -- fan-out ----------------------------------------------------------------------------------------------

JOB = """from kfp import dsl

from ._steps import add

PROFILES = {"toy": {"a": 1}}


@dsl.pipeline(name="job-%(n)s")
def pipeline(a: int = %(n)s) -> int:
    return add(a=a, b=1).output
"""

STEPS = """from kfp import dsl


@dsl.component(install_kfp_package=False, base_image="python:3.11-slim")
def add(a: int, b: int) -> int:
    return a + b
"""


def make_project(root: Path, jobs: int) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "__init__.py").write_text("")
    (root / "pipelines" / "_steps.py").write_text(STEPS)
    for n in range(jobs):
        (root / "pipelines" / f"job{n:02d}.py").write_text(JOB % {"n": n})
    return root


def bench_fanout() -> None:
    rows = []
    for count in (1, 10, 50):
        with tempfile.TemporaryDirectory() as tmp, FakeKfpServer() as server:
            project = make_project(Path(tmp) / "p", count)
            for _ in range(count):
                server.script_run(["RUNNING"] * 5 + ["SUCCEEDED"], advance_on_list=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CI", "GITLAB_", "KFP_"))}
            env.update(KFP_HOST=server.url, KFP_NAMESPACE="team-a", KFP_TOKEN="t", KFP_LAUNCH_POLL_INTERVAL="0.01")
            # A fresh wrapper process per count, so RUSAGE_CHILDREN's peak is this run's alone.
            wrapper = (
                "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True); "
                "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
            )
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", wrapper, str(BIN / "kfp-launch"), "run", "--all", "--branch", "bench"],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.perf_counter() - start
            code, peak_kb = proc.stdout.split()
            peak_mb = int(peak_kb) / 1024
            polls = [r for r in server.requests_to("GET", PATH_RUNS) if '"run_id"' in (r.param("filter") or "")]
            gets = server.requests_to("GET", PATH_RUN)
            rows.append(
                [
                    count,
                    code,
                    len(polls),
                    f"{len(polls) / len(polls):.0f}" if polls else "-",
                    len(gets),
                    f"{peak_mb:.0f}",
                    f"{wall:.1f}",
                ]
            )
    table(
        "Fan-out: `kfp-launch run --all` (6 polls per run to finish; target: requests per tick constant, "
        "peak memory < 150 MB)",
        [
            "runs",
            "exit",
            "poll ticks (list requests)",
            "requests per tick",
            "GETs of single runs",
            "peak RSS of the waiting process, MB",
            "wall s",
        ],
        rows,
    )


# -- compile ----------------------------------------------------------------------------------------------


def bench_compile() -> None:
    from kfp_launch.app import App
    from kfp_launch.console import Console
    from kfp_launch.plan import compile_jobs
    from kfp_launch.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "p", 20)
        settings = load_settings({}, {}, project, command="run")
        wired = App(
            settings=settings, environ={}, project_dir=project, console=Console(out=io.StringIO(), err=io.StringIO())
        )
        import kfp  # noqa: F401 - measured separately: the import is paid once per process

        jobs = [f"job{n:02d}" for n in range(20)]
        start = time.perf_counter()
        compile_jobs(wired, jobs)
        in_process = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([str(BIN / "kfp-launch"), "jobs"], cwd=project, capture_output=True, check=False)
        command = time.perf_counter() - start
    table(
        "Compile a 20-pipeline project",
        ["what", "seconds"],
        [
            ["import + compile + parameters of 20 jobs, in-process (kfp already imported)", f"{in_process:.2f}"],
            ["`kfp-launch jobs` (new process: import kfp, compile all 20)", f"{command:.2f}"],
        ],
    )


def bench_logs() -> None:
    from log_economy import bench_logs as measure_logs  # benchmarks/log_economy.py

    measure_logs()


def bench_gate() -> None:
    from gate_economy import bench_gate as measure_gate  # benchmarks/gate_economy.py

    measure_gate()


SECTIONS = {
    "startup": bench_startup,
    "polling": bench_polling,
    "fanout": bench_fanout,
    "compile": bench_compile,
    "logs": bench_logs,
    "gate": bench_gate,
}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(SECTIONS)
    print(
        f"kfp-launch benchmarks, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    for name in chosen:
        SECTIONS[name]()
    shutil.rmtree(ROOT / ".kfp-launch", ignore_errors=True)
