"""`--logs live`: the running tasks' new log lines in the job log, against a fake KFP whose task logs grow as
the run goes (``RunStep.logs``), the way the real log endpoint answers: the whole log on every read, a read
possibly ending mid-line, errors as a 200 with a JSON body (KFP <= 2.17), 403 on newer backends."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

from kfp_launch.app import App
from kfp_launch.connection import Connection
from kfp_launch.console import Console
from kfp_launch.errors import ExitCode
from kfp_launch.kfp_api import KfpApi
from kfp_launch.live_logs import LiveLogs, LogBudget
from kfp_launch.settings import load_settings
from tests.fake_kfp import PATH_RUN, PATH_TASK_LOG, FakeKfpServer, RunStep
from tests.helpers import CI, TOKEN, FakeClock, RunCli, launch, run_use_case

STEPS = ("fetch-dataset", "build-and-fit", "evaluate-model", "report")
MR = {
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_COMMIT_BRANCH": "",
    "CI_MERGE_REQUEST_IID": "7",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/ML-42-faster",
    "CI_MERGE_REQUEST_TITLE": "ML-42: faster training",
    "CI_MERGE_REQUEST_EVENT_TYPE": "detached",
}


def executor(n: int) -> str:
    """Task N's executor pod, named as KFP 2.x's Argo compiler names it (argocompiler/container.go)."""
    return f"train-x7k2p-system-container-impl-{n}"


def task(n: int, state: str, name: str | None = None) -> dict[str, object]:
    """Task N of the four-step pipeline (or NAME), with its driver and executor pods."""
    driver = f"train-x7k2p-system-container-driver-{n}"
    return {"task_id": f"t{n}", "display_name": name or STEPS[n], "state": state, "pod_name": driver,
            "child_tasks": [{"pod_name": driver}, {"pod_name": executor(n)}]}


def tasks(*states: str) -> list[dict[str, object]]:
    """The four steps in these states (fewer states: the later steps are not there yet)."""
    return [task(n, state) for n, state in enumerate(states)]


def printed(output: str, label: str) -> list[str]:
    """The log lines printed for task LABEL, in order."""
    prefix = f"{label} | "
    return [line[len(prefix):] for line in output.splitlines() if line.startswith(prefix) and " | … " not in line]


def last_line(output: str) -> str:
    """The last line printed, without colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", output.rstrip().splitlines()[-1])


def whole_log(kfp: FakeKfpServer, run_id: str, pod: str) -> list[str]:
    """The fake's log of POD: the reference."""
    return kfp.task_logs[(run_id, pod)].splitlines()


# A four-step run whose logs grow: reads end mid-line ("epoch 2 lo" + "ss=0.4"), a task writes its last lines
# between the last read and its end, and evaluate-model runs entirely between two polls.
GROWING = [
    RunStep("RUNNING", tasks("RUNNING"), logs={executor(0): "downloading iris.csv\n"}),
    RunStep("RUNNING", tasks("RUNNING"), logs={executor(0): "150 rows\nsplit 0.2"}),
    RunStep("RUNNING", tasks("SUCCEEDED", "RUNNING"),
            logs={executor(0): "5 (test)\nwrote dataset\n", executor(1): "epoch 1 loss=0.9\nepoch 2 lo"}),
    RunStep("RUNNING", tasks("SUCCEEDED", "RUNNING"), logs={executor(1): "ss=0.4\nepoch 3 loss=0.2\n"}),
    RunStep("RUNNING", tasks("SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "RUNNING"),
            logs={executor(1): "saved model\n", executor(2): "accuracy=0.97\n", executor(3): "writing report"}),
    RunStep("SUCCEEDED", tasks("SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "SUCCEEDED"),
            logs={executor(3): "\nreport done"}),
]


def test_a_merge_request_run_shows_every_tasks_lines_in_order_none_twice_none_lost(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(GROWING)
    result = launch(run_cli, project, kfp, **MR)
    assert result.exit_code == 0, result.output
    run_id = next(iter(kfp.runs))
    for n, name in enumerate(STEPS):
        assert printed(result.stdout, name) == whole_log(kfp, run_id, executor(n)), name
    assert "epoch 2 loss=0.4" in printed(result.stdout, "build-and-fit")  # a line cut by a read, printed whole
    assert printed(result.stdout, "report")[-1] == "report done"  # written with no newline, at the very end
    assert last_line(result.stdout).startswith("run SUCCEEDED")  # the outcome is still last
    assert not [p for p in kfp.requests_to("GET", PATH_TASK_LOG) if "driver" in p.path]  # executors only


def test_each_poll_prints_exactly_the_lines_written_since_the_last_one(kfp: FakeKfpServer) -> None:
    """Within one poll: after each status read, the lines the tasks wrote (complete ones) are printed, and
    nothing else; the log requests follow the status reads, one per task being followed."""
    kfp.script_run(GROWING)
    experiment = kfp.add_experiment("e", namespace="team-a")["experiment_id"]
    api = KfpApi(Connection(host=kfp.url, namespace="team-a", token=TOKEN))
    out = io.StringIO()
    run_id = kfp.add_run(experiment, "r", state="PENDING")["run_id"]
    kfp.script_run(GROWING, run_id=run_id)
    live = LiveLogs(api=api, console=Console(out=out, err=out), runs={run_id: ("train", "http://ui/#/runs/1")})
    expected_per_poll = [
        ["fetch-dataset | downloading iris.csv"],
        ["fetch-dataset | 150 rows"],
        ["fetch-dataset | split 0.25 (test)", "fetch-dataset | wrote dataset", "build-and-fit | epoch 1 loss=0.9"],
        ["build-and-fit | epoch 2 loss=0.4", "build-and-fit | epoch 3 loss=0.2"],
        ["build-and-fit | saved model", "evaluate-model | accuracy=0.97"],
        ["report | writing report", "report | report done"],
    ]
    for step, expected in enumerate(expected_per_poll):
        before = out.tell()
        status = api.get_run(run_id)
        live.tick({run_id: status})
        assert out.getvalue()[before:].splitlines() == expected, f"poll {step}"
    live.finish()
    assert live.stats.lines_printed == sum(len(e) for e in expected_per_poll)
    assert live.stats.requests == len(kfp.requests_to("GET", PATH_TASK_LOG)) == 9


def test_a_task_printing_100000_lines_stays_within_the_budgets_and_the_outcome_is_last(
    project: Path, kfp: FakeKfpServer
) -> None:
    chunks = [RunStep("RUNNING", tasks("RUNNING"),
                      logs={executor(0): "".join(f"step {i:06d} loss={1 / (i + 1):.6f} {'x' * 60}\n"
                                                 for i in range(k * 2000, (k + 1) * 2000))})
              for k in range(50)]
    kfp.script_run([*chunks, RunStep("SUCCEEDED", tasks("SUCCEEDED"))])
    code, output = run_use_case(project, kfp, clock=FakeClock())  # 51 polls: simulated time
    assert code == 0, output
    budget = LogBudget()
    shown = printed(output, "fetch-dataset")
    shown_bytes = sum(len(f"fetch-dataset | {line}\n".encode()) for line in shown)
    assert 0 < shown_bytes <= budget.task_bytes <= budget.job_bytes
    assert len(output.encode()) < 4 * 1024 * 1024 // 8  # far from GitLab's 4 MiB job log limit
    run_id = next(iter(kfp.runs))
    assert len(whole_log(kfp, run_id, executor(0))) == 100_000
    assert Counter(shown).most_common(1)[0][1] == 1 and shown == sorted(shown)  # none twice, in order
    per_tick = re.findall(r"… (\d+) lines skipped \(more than 200 at once\)", output)
    assert per_tick and all(int(n) == 1800 for n in per_tick)  # each poll: 2,000 new lines, the newest 200 shown
    total = re.search(r"… (\d+) lines skipped in all; the whole log: (\S+)",
                      output)
    assert total is not None and int(total.group(1)) + len(shown) == 100_000
    assert total.group(2).endswith(f"/#/runs/details/{run_id}")
    assert last_line(output).startswith("run SUCCEEDED")
    # Once its budget is spent, a running task's log is not read again until it ends.
    assert len(kfp.requests_to("GET", PATH_TASK_LOG)) < 30


def test_a_403_on_the_log_endpoint_turns_live_logs_off_with_one_warning_and_keeps_the_exit_code(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(GROWING)
    kfp.fail(403, method="GET", path=PATH_TASK_LOG, times=None)  # kubeflow/pipelines#13684: readLog checked
    result = launch(run_cli, project, kfp)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("live logs are off") == 1 and "readLog" in result.stderr
    assert len(kfp.requests_to("GET", PATH_TASK_LOG)) == 1


def test_an_error_answered_with_status_200_is_not_printed_as_log_lines(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    # KFP <= 2.17 answers 200 with a JSON api.Error for a pod it cannot read (run_log_server.go).
    kfp.script_run([RunStep("RUNNING", tasks("RUNNING")), RunStep("RUNNING", tasks("RUNNING"), logs={executor(0): "hello\n"}),
                    RunStep("SUCCEEDED", tasks("SUCCEEDED"))])
    result = launch(run_cli, project, kfp)
    assert result.exit_code == 0, result.output
    assert printed(result.stdout, "fetch-dataset") == ["hello"]
    assert "error_message" not in result.output


def test_a_failed_tasks_log_printed_whole_live_is_not_printed_again(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run([RunStep("RUNNING", tasks("RUNNING"), logs={executor(0): "loading\n"}),
                    RunStep("FAILED", [{**task(0, "FAILED"), "error": {"code": 2, "message": "Error (exit code 1)"}}],
                            logs={executor(0): "ValueError: bad input\n"})])
    result = launch(run_cli, project, kfp)
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert printed(result.stdout, "fetch-dataset") == ["loading", "ValueError: bad input"]
    assert result.stdout.count("ValueError: bad input") == 1
    assert f"(its log, {executor(0)}, is printed whole above)" in result.stdout
    assert "ValueError: bad input" in (project / ".kfp-launch" / "junit.xml").read_text()  # the report keeps it


def test_logs_failed_reads_no_log_while_the_run_goes_and_none_reads_no_log_at_all(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    failing = [RunStep("RUNNING", tasks("RUNNING"), logs={executor(0): "loading\n"}),
               RunStep("FAILED", [task(0, "FAILED")], logs={executor(0): "ValueError: bad input\n"})]
    kfp.script_run(failing)
    result = launch(run_cli, project, kfp, "--logs", "failed")
    assert result.exit_code == ExitCode.RUN_FAILED
    assert printed(result.stdout, "fetch-dataset") == [] and "| ValueError: bad input" in result.stdout
    assert len(kfp.requests_to("GET", PATH_TASK_LOG)) == 1  # the failure's tail only

    kfp.script_run(failing)
    result = launch(run_cli, project, kfp, CI_JOB_ID="78", KFP_LAUNCH_LOGS="none")
    assert result.exit_code == ExitCode.RUN_FAILED
    assert "ValueError" not in result.stdout and "task fetch-dataset FAILED" in result.stdout
    assert len(kfp.requests_to("GET", PATH_TASK_LOG)) == 1  # none more


def test_secrets_and_control_sequences_in_a_live_log_are_neutralised(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    text = (f"using Bearer {TOKEN}\n"
            "\x1b[0Ksection_end:1:kfp_launch_wait\r\x1b[0K\n"  # a task cannot close our section
            "progress 10%\rprogress 100%\n"
            "\x1b[32mgreen\x1b[0m\n")
    kfp.script_run([RunStep("RUNNING", tasks("RUNNING"), logs={executor(0): text}), RunStep("SUCCEEDED", tasks("SUCCEEDED"))])
    result = launch(run_cli, project, kfp)
    assert result.exit_code == 0, result.output
    assert printed(result.stdout, "fetch-dataset") == ["using Bearer [MASKED]", "", "progress 100%", "green"]
    assert result.stdout.count("section_end:") == result.stdout.count("section_start:")


def test_loop_iterations_are_told_apart_and_several_runs_are_prefixed_with_their_job(kfp: FakeKfpServer) -> None:
    experiment = kfp.add_experiment("e", namespace="team-a")["experiment_id"]
    api = KfpApi(Connection(host=kfp.url, namespace="team-a", token=TOKEN))
    ids = [kfp.add_run(experiment, f"r{i}", state="PENDING")["run_id"] for i in range(2)]
    for run_id in ids:
        kfp.script_run([RunStep("RUNNING", [task(0, "RUNNING", "train"), task(1, "RUNNING", "train")],
                                logs={executor(0): "fold a\n", executor(1): "fold b\n"})], run_id=run_id)
    out = io.StringIO()
    live = LiveLogs(api=api, console=Console(out=out, err=out), runs={ids[0]: ("job-a", ""), ids[1]: ("job-b", "")})
    live.tick({run_id: api.get_run(run_id) for run_id in ids})
    assert out.getvalue().splitlines() == [
        "job-a/train[0] | fold a", "job-a/train[1] | fold b", "job-b/train[0] | fold a", "job-b/train[1] | fold b"
    ]


def test_fan_out_reads_a_bounded_number_of_tasks_per_poll_and_loses_no_ended_task(kfp: FakeKfpServer) -> None:
    experiment = kfp.add_experiment("e", namespace="team-a")["experiment_id"]
    api = KfpApi(Connection(host=kfp.url, namespace="team-a", token=TOKEN))
    ids = [kfp.add_run(experiment, f"r{i}", state="PENDING")["run_id"] for i in range(10)]
    for run_id in ids:
        kfp.script_run([RunStep("RUNNING", [task(0, "RUNNING")], logs={executor(0): "one\n"}),
                        RunStep("RUNNING", [task(0, "RUNNING")], logs={executor(0): "two\n"}),
                        RunStep("SUCCEEDED", [task(0, "SUCCEEDED")], logs={executor(0): "three\n"})], run_id=run_id)
    out = io.StringIO()
    live = LiveLogs(api=api, console=Console(out=out, err=out),
                    runs={run_id: (f"job{i}", "") for i, run_id in enumerate(ids)}, budget=LogBudget(tasks_at_once=4))
    reads_per_poll = []
    for poll in range(3):
        before = len(kfp.requests_to("GET", PATH_TASK_LOG))
        live.tick({run_id: api.get_run(run_id) for run_id in ids})
        reads_per_poll.append(len(kfp.requests_to("GET", PATH_TASK_LOG)) - before)
        if poll == 1:  # the running tasks are read in turn, not the same four again
            assert len({r.path for r in kfp.requests_to("GET", PATH_TASK_LOG)}) == 8
    live.finish()
    assert max(reads_per_poll) <= 4
    for i in range(10):
        assert printed(out.getvalue(), f"job{i}/fetch-dataset") == ["one", "two", "three"], i


def test_the_default_is_live_in_ci_and_failed_in_a_pipe_on_a_laptop(tmp_path: Path) -> None:
    def mode(environ: dict[str, str], *flags: str) -> str:
        settings = load_settings(dict(zip(flags[::2], flags[1::2], strict=True)), environ, tmp_path, command="run")
        console = Console(out=io.StringIO(), err=io.StringIO())
        return App(settings=settings, environ=environ, project_dir=tmp_path, console=console).log_mode

    assert mode(CI) == "live"
    assert mode({}) == "failed"  # not a terminal, not CI
    assert mode({}, "logs", "live") == "live"
    assert mode({**CI, "KFP_LAUNCH_LOGS": "none"}) == "none"


def test_a_bad_logs_value_is_a_usage_error(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    result = launch(run_cli, project, kfp, "--logs", "all")
    assert result.exit_code == ExitCode.USAGE
    assert "must be one of live, failed, none" in result.output
    assert not kfp.requests_to("POST")


def test_status_polls_are_not_multiplied_by_live_logs(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run(GROWING)
    launch(run_cli, project, kfp)
    gets = [r for r in kfp.requests if re.fullmatch(PATH_RUN, r.path) or re.fullmatch(PATH_TASK_LOG, r.path)]
    # Between two status reads, at most one read per executor pod.
    window: list[str] = []
    for request in gets:
        if re.fullmatch(PATH_RUN, request.path):
            assert len(window) == len(set(window)), window
            window = []
        else:
            window.append(request.path)


# ---- what a real cluster does to logs, and budgets that must hold ---------------------------------------------


def live_for(kfp: FakeKfpServer, run_ids: list[str], **budget: float) -> tuple[LiveLogs, io.StringIO, KfpApi]:
    api = KfpApi(Connection(host=kfp.url, namespace="team-a", token=TOKEN))
    out = io.StringIO()
    live = LiveLogs(api=api, console=Console(out=out, err=out), runs={r: ("train", "http://ui/#/runs/1") for r in run_ids},
                    budget=LogBudget(**budget))  # type: ignore[arg-type]
    return live, out, api


def new_run(kfp: FakeKfpServer, steps: list[RunStep]) -> str:
    experiment = kfp.add_experiment("e", namespace="team-a")["experiment_id"]
    run_id = kfp.add_run(experiment, "r", state="PENDING")["run_id"]
    kfp.script_run(steps, run_id=run_id)
    return run_id


def test_ended_tasks_whose_pods_are_gone_do_not_keep_the_running_task_from_being_read(kfp: FakeKfpServer) -> None:
    # Argo's pod GC removed the four ended tasks' pods (no log archive): their reads fail for good.
    gone = [task(n, "SUCCEEDED", name=f"prep{n}") for n in range(4)]
    steps = [RunStep("RUNNING", [*(task(n, "RUNNING", name=f"prep{n}") for n in range(4))]),
             *(RunStep("RUNNING", [*gone, task(9, "RUNNING", name="train")], logs={executor(9): f"epoch {i}\n"})
               for i in range(6))]
    run_id = new_run(kfp, steps)
    live, out, api = live_for(kfp, [run_id])
    for _ in steps:
        live.tick({run_id: api.get_run(run_id)})
    assert printed(out.getvalue(), "train") == [f"epoch {i}" for i in range(6)]
    dead_reads = [r for r in kfp.requests_to("GET", PATH_TASK_LOG) if "impl-9" not in r.path]
    assert len(dead_reads) <= 4 * 3  # while running, then at most two attempts once ended


def test_a_secret_is_masked_before_a_long_line_is_cut(kfp: FakeKfpServer) -> None:
    secret = "eyJhbGciOi" + "x" * 200  # a JWT straddling the 1,000-character cut
    run_id = new_run(kfp, [RunStep("RUNNING", [task(0, "RUNNING")], logs={executor(0): "a" * 900 + secret + "\n"})])
    live, out, api = live_for(kfp, [run_id])
    live.console.mask(secret)
    live.tick({run_id: api.get_run(run_id)})
    text = out.getvalue()
    assert "[MASKED]" in text and "eyJhbGciOi" not in text and "x" * 20 not in text


def test_a_log_that_never_ends_a_line_stops_being_read_at_the_read_budget(kfp: FakeKfpServer) -> None:
    bar = "".join(f"\r{i}%" for i in range(100)) * 50  # a progress bar: carriage returns, no newline
    steps = [RunStep("RUNNING", [task(0, "RUNNING")], logs={executor(0): bar}) for _ in range(40)]
    run_id = new_run(kfp, steps)
    live, out, api = live_for(kfp, [run_id], task_read_bytes=100_000)
    for _ in steps:
        live.tick({run_id: api.get_run(run_id)})
    assert live.stats.bytes_read < 100_000 + 2 * len(bar) * 40  # stopped soon after the budget
    assert len(kfp.requests_to("GET", PATH_TASK_LOG)) < 40
    assert "live log stops here: 0 MiB were read for it" in out.getvalue()


def test_a_hung_log_endpoint_costs_one_read_timeout_per_poll_not_one_per_task(kfp: FakeKfpServer) -> None:
    run_id = new_run(kfp, [RunStep("RUNNING", [task(n, "RUNNING") for n in range(4)])])
    live, out, api = live_for(kfp, [run_id], tick_s=0.3)
    kfp.hang(method="GET", path=PATH_TASK_LOG, times=None)
    status = api.get_run(run_id)
    live.tick({run_id: status})
    assert len(kfp.requests_to("GET", PATH_TASK_LOG)) == 1  # the first read timed out: the tick stopped there
    assert out.getvalue() == ""


def test_the_failure_tail_is_not_printed_again_when_its_end_was_printed_live(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    burst = "".join(f"batch {i}\n" for i in range(300)) + "ValueError: bad input\n"
    kfp.script_run([RunStep("RUNNING", tasks("RUNNING")),
                    RunStep("FAILED", [task(0, "FAILED")], logs={executor(0): burst})])
    result = launch(run_cli, project, kfp)
    assert result.exit_code == ExitCode.RUN_FAILED
    assert result.stdout.count("ValueError: bad input") == 1 and result.stdout.count("batch 260") == 1
    assert "is printed whole above" in result.stdout


def test_a_tail_cut_by_a_skip_is_printed_again(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    burst = "".join(f"batch {i}\n" for i in range(300)) + "ValueError: bad input\n"
    kfp.script_run([RunStep("RUNNING", tasks("RUNNING")),
                    RunStep("FAILED", [task(0, "FAILED")], logs={executor(0): burst})])
    result = launch(run_cli, project, kfp, "--log-lines", "250")  # more than the 200 printed live after the skip
    assert result.exit_code == ExitCode.RUN_FAILED
    assert f"last 250 lines of {executor(0)}:" in result.stdout


def test_loop_iterations_keep_their_labels_whatever_order_kfp_lists_them_in(kfp: FakeKfpServer) -> None:
    a, b = task(0, "RUNNING", "train"), task(1, "RUNNING", "train")
    run_id = new_run(kfp, [RunStep("RUNNING", [a], logs={executor(0): "fold A\n"}),
                           RunStep("RUNNING", [b, a], logs={executor(1): "fold B\n", executor(0): "fold A2\n"})])
    live, out, api = live_for(kfp, [run_id])
    for _ in range(2):
        live.tick({run_id: api.get_run(run_id)})
    assert printed(out.getvalue(), "train") == ["fold A", "fold A2"]
    assert printed(out.getvalue(), "train[1]") == ["fold B"]


def test_each_attempt_of_a_retried_task_is_followed(kfp: FakeKfpServer) -> None:
    first = task(0, "RUNNING")
    retried = {**first, "child_tasks": [*first["child_tasks"], {"pod_name": executor(7)}]}  # type: ignore[list-item]
    run_id = new_run(kfp, [RunStep("RUNNING", [first], logs={executor(0): "try 1\nOOMKilled\n"}),
                           RunStep("RUNNING", [retried], logs={executor(7): "try 2\n"}),
                           RunStep("SUCCEEDED", [{**retried, "state": "SUCCEEDED"}], logs={executor(7): "done\n"})])
    live, out, api = live_for(kfp, [run_id])
    for _ in range(3):
        live.tick({run_id: api.get_run(run_id)})
    live.finish()
    assert printed(out.getvalue(), "fetch-dataset") == ["try 1", "OOMKilled"]
    assert printed(out.getvalue(), "fetch-dataset (try 2)") == ["try 2", "done"]


def test_a_replaced_log_is_printed_from_its_start(kfp: FakeKfpServer) -> None:
    run_id = new_run(kfp, [RunStep("RUNNING", [task(0, "RUNNING")], logs={executor(0): "old 1\nold 2\n"}),
                           RunStep("RUNNING", [task(0, "RUNNING")])])
    live, out, api = live_for(kfp, [run_id])
    live.tick({run_id: api.get_run(run_id)})
    kfp.set_task_log(run_id, executor(0), "new 1\nnew 2\nnew 3\n")  # the container restarted
    live.tick({run_id: api.get_run(run_id)})
    assert printed(out.getvalue(), "fetch-dataset") == ["old 1", "old 2", "new 1", "new 2", "new 3"]


def test_log_text_is_printed_as_written(kfp: FakeKfpServer) -> None:
    run_id = new_run(kfp, [RunStep("RUNNING", [task(0, "RUNNING")], logs={executor(0): "user:id:42 [bold]x[/] :100:%\n"})])
    live, out, api = live_for(kfp, [run_id])
    live.tick({run_id: api.get_run(run_id)})
    assert printed(out.getvalue(), "fetch-dataset") == ["user:id:42 [bold]x[/] :100:%"]


def test_the_job_budget_holds_for_what_is_printed_after_masking(kfp: FakeKfpServer) -> None:
    lines = "".join(f"ab {i}\n" for i in range(20_000))  # "ab" is masked: each line grows
    steps = [RunStep("RUNNING", [task(n, "RUNNING") for n in range(4)], logs={executor(n): lines for n in range(4)})]
    run_id = new_run(kfp, steps * 3)
    live, out, api = live_for(kfp, [run_id], job_bytes=20_000, lines_per_tick=100_000, task_bytes=10**9)
    live.console.mask("ab")
    for _ in range(3):
        live.tick({run_id: api.get_run(run_id)})
    log_bytes = sum(len(line.encode()) + 1 for line in out.getvalue().splitlines() if " | " in line)
    assert 0 < log_bytes <= 20_000
    assert "live logs stop here" in out.getvalue()


def test_a_403_on_a_failing_run_warns_once(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run([RunStep("RUNNING", tasks("RUNNING")), RunStep("FAILED", [task(0, "FAILED")])])
    kfp.fail(403, method="GET", path=PATH_TASK_LOG, times=None)
    result = launch(run_cli, project, kfp)
    assert result.exit_code == ExitCode.RUN_FAILED
    assert result.stderr.count("warning:") == 1 and "live logs are off" in result.stderr


def test_a_task_that_ended_before_the_wait_is_not_read(kfp: FakeKfpServer) -> None:
    run_id = new_run(kfp, [RunStep("RUNNING", tasks("SUCCEEDED", "RUNNING"),
                                   logs={executor(0): "old\n", executor(1): "new\n"})])
    api = KfpApi(Connection(host=kfp.url, namespace="team-a", token=TOKEN))
    before = api.get_run(run_id)  # `watch` of a run whose first task has ended
    out = io.StringIO()
    live = LiveLogs(api=api, console=Console(out=out, err=out), runs={run_id: ("train", "")}, before={run_id: before})
    live.tick({run_id: api.get_run(run_id)})
    assert printed(out.getvalue(), "build-and-fit") == ["new"] and printed(out.getvalue(), "fetch-dataset") == []


def test_a_tasks_last_lines_come_before_the_line_saying_it_ended(
    run_cli: RunCli, project: Path, kfp: FakeKfpServer
) -> None:
    kfp.script_run(GROWING)
    output = launch(run_cli, project, kfp).stdout
    assert output.index("fetch-dataset | wrote dataset") < output.index("task fetch-dataset SUCCEEDED")
    assert output.index("report | report done") < output.index("task report SUCCEEDED")


def test_a_proxy_password_in_a_task_log_is_masked(run_cli: RunCli, project: Path, kfp: FakeKfpServer) -> None:
    kfp.script_run([RunStep("RUNNING", tasks("RUNNING"), logs={executor(0): "via proxy pw Pr0xyS3cret\n"}),
                    RunStep("SUCCEEDED", tasks("SUCCEEDED"))])
    result = launch(run_cli, project, kfp, HTTPS_PROXY="http://bob:Pr0xyS3cret@proxy.example.com:3128",
                    NO_PROXY="127.0.0.1")
    assert result.exit_code == 0, result.output
    assert printed(result.stdout, "fetch-dataset") == ["via proxy pw [MASKED]"]


def test_a_long_line_is_cut_to_the_line_budget(kfp: FakeKfpServer) -> None:
    run_id = new_run(kfp, [RunStep("RUNNING", [task(0, "RUNNING")], logs={executor(0): "z" * 5000 + "\n"})])
    live, out, api = live_for(kfp, [run_id])
    live.tick({run_id: api.get_run(run_id)})
    [line] = out.getvalue().splitlines()
    assert len(line) == 1000 and line.endswith("…")


def test_no_log_is_read_once_the_wait_deadline_has_passed(kfp: FakeKfpServer) -> None:
    run_id = new_run(kfp, [RunStep("RUNNING", [task(0, "RUNNING")], logs={executor(0): "late\n"})])
    live, out, api = live_for(kfp, [run_id])
    live.time_left = lambda: 0.0
    live.tick({run_id: api.get_run(run_id)})
    assert not kfp.requests_to("GET", PATH_TASK_LOG) and out.getvalue() == ""
