"""kfp-launch code shape: how many modules a `run JOB` touches, the longest function, the largest module and
the parameters of the `run` command. Prints a Markdown table.

Run in the project's virtualenv (the measured run uses the test suite's fake KFP server):

    .venv/bin/python benchmarks/code_shape.py                    # this checkout
    .venv/bin/python benchmarks/code_shape.py /tmp/kfp-before    # another checkout (e.g. a git worktree)
    .venv/bin/python benchmarks/code_shape.py --startup ROOT     # also time `python -m kfp_launch --help`

"Modules a `run JOB` executes code in" comes from a fresh interpreter (``--child ROOT``) that puts ROOT first on
sys.path, installs a trace hook (``sys.settrace``/``threading.settrace``, call events only) before anything from
kfp_launch is imported, and runs ``kfp-launch run good`` in-process (typer's CliRunner) in a copy of
tests/fixtures/project, as a GitLab merge-request pipeline job, against ROOT's fake KFP server scripted
RUNNING -> SUCCEEDED. A module counts when a code object from its file was entered: module-level code on import
counts (importing is executing). No GitLab token is set, so no merge request note is written.

The other figures are read from the source with ``ast``. Nothing here reaches anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from markdown_table import table  # benchmarks/ is sys.path[0] when run as a script

HERE_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULT_MARK = "CODE-SHAPE-RESULT "
AMBIENT_PREFIXES = ("CI", "GITLAB_", "KFP_", "KF_PIPELINES_", "JIRA_")  # as clean_env in tests/conftest.py
LONG_FUNCTION = 50
LARGE_MODULE = 450

# A merge-request pipeline job named "good" (tests/test_kubeflow_run.py's CI, without CI_COMMIT_BRANCH:
# GitLab does not set it in merge-request pipelines). No GITLAB_TOKEN / CI_JOB_TOKEN / CI_SERVER_URL.
MR_PIPELINE_ENV = {
    "CI": "true",
    "GITLAB_CI": "true",
    "CI_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
    "CI_COMMIT_REF_NAME": "feature/ML-42-faster",
    "CI_COMMIT_TITLE": "Make it faster",
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_MERGE_REQUEST_IID": "7",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature/ML-42-faster",
    "CI_MERGE_REQUEST_TITLE": "ML-42 Make it faster",
    "CI_PIPELINE_ID": "1001",
    "CI_PIPELINE_URL": "https://gitlab.example.com/mlops/demo/-/pipelines/1001",
    "CI_JOB_ID": "77",
    "CI_JOB_NAME": "good",
    "CI_JOB_URL": "https://gitlab.example.com/mlops/demo/-/jobs/77",
    "CI_PROJECT_PATH": "mlops/demo",
    "CI_PROJECT_URL": "https://gitlab.example.com/mlops/demo",
    "GITLAB_USER_LOGIN": "alice",
}


def ambient_free(env: dict[str, str]) -> dict[str, str]:
    """ENV without the machine's CI/GitLab/KFP/JIRA variables."""
    return {k: v for k, v in env.items() if not k.startswith(AMBIENT_PREFIXES)}


# -- the measured run (child process) ---------------------------------------------------------------------


def child(root: Path) -> int:
    """Run `kfp-launch run good` from ROOT in this (fresh) interpreter; print the modules it executed code in."""
    sys.path.insert(0, str(root))
    early = sorted(name for name in sys.modules if name == "kfp_launch" or name.startswith("kfp_launch."))
    from tests.fake_kfp import FakeKfpServer  # ROOT's fake server (it does not import kfp_launch)

    with FakeKfpServer() as server, tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(
            root / "tests" / "fixtures" / "project",
            project,
            ignore=shutil.ignore_patterns(".kfp-launch", "__pycache__"),
        )
        server.script_run(["RUNNING", "SUCCEEDED"])
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(AMBIENT_PREFIXES)}
        env.update(MR_PIPELINE_ENV)
        env.update(
            KFP_HOST=server.url,
            KFP_NAMESPACE="team-a",
            KFP_TOKEN="code-shape-token",
            KFP_LAUNCH_POLL_INTERVAL="0.01",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )

        entered: set[str] = set()

        def on_call(frame: FrameType, event: str, arg: Any) -> None:
            entered.add(frame.f_code.co_filename)  # the global hook sees only "call" events
            return None  # no line events

        os.chdir(project)
        threading.settrace(on_call)
        sys.settrace(on_call)
        try:
            from typer.testing import CliRunner

            import kfp_launch
            from kfp_launch.cli import app

            result = CliRunner().invoke(app, ["run", "good"], env=env, catch_exceptions=True)
        finally:
            sys.settrace(None)
            threading.settrace(None)
            os.chdir(root)
        created = len(server.runs)

    package = (root / "kfp_launch").resolve()
    executed = sorted(
        {Path(f).resolve().name for f in entered if f.endswith(".py") and Path(f).resolve().parent == package}
    )
    imported = sorted(
        Path(file).resolve().name
        for name, module in sys.modules.items()
        if (name == "kfp_launch" or name.startswith("kfp_launch.")) and (file := getattr(module, "__file__", None))
    )
    run_params: int | None = None
    cli = sys.modules.get("kfp_launch.cli")
    if cli is not None and callable(getattr(cli, "run_command", None)):
        import inspect

        run_params = len(inspect.signature(cli.run_command).parameters)
    report = {
        "kfp_launch_file": str(Path(kfp_launch.__file__ or "").resolve()),
        "imported_before_trace": early,
        "exit_code": result.exit_code,
        "succeeded": "run SUCCEEDED" in result.output,
        "runs_created": created,
        "executed": executed,
        "imported": imported,
        "run_command_params_inspect": run_params,
    }
    if result.exit_code != 0 or (result.exception is not None and not isinstance(result.exception, SystemExit)):
        sys.stderr.write(result.output)
        if result.exc_info is not None:
            import traceback

            traceback.print_exception(*result.exc_info, file=sys.stderr)
    print(RESULT_MARK + json.dumps(report))
    return 0


def measure_run(root: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(root)],
        cwd=root,
        env=ambient_free(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"the measured run failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    report: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARK) :])
    package = (root / "kfp_launch").resolve()
    problems = []
    if Path(report["kfp_launch_file"]).parent != package:
        problems.append(f"kfp_launch was imported from {report['kfp_launch_file']}, not from {package}")
    if report["imported_before_trace"]:
        problems.append(f"imported before the trace hook: {report['imported_before_trace']}")
    if report["exit_code"] != 0 or not report["succeeded"] or report["runs_created"] != 1:
        problems.append(
            f"`run good` did not succeed (exit {report['exit_code']}, {report['runs_created']} runs created)"
        )
    if problems:
        sys.exit("the measured run is not valid:\n- " + "\n- ".join(problems) + f"\n{proc.stderr}")
    return report


# -- source figures ---------------------------------------------------------------------------------------


@dataclass
class Function:
    module: str
    name: str
    lines: int


def modules_of(root: Path) -> list[Path]:
    return sorted((root / "kfp_launch").glob("*.py"))


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def functions_of(path: Path) -> list[Function]:
    """Every function and method in PATH (nested ones too), with its length from `def` to its last line."""
    found: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for item in ast.iter_child_nodes(node):
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + item.name
                lines = (item.end_lineno or item.lineno) - item.lineno + 1  # lineno is the `def`, not a decorator
                found.append(Function(path.stem, name, lines))
                visit(item, name + ".")
            elif isinstance(item, ast.ClassDef):
                visit(item, prefix + item.name + ".")
            else:
                visit(item, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), "")
    return found


def is_run_command_decorator(decorator: ast.expr) -> bool:
    """`@app.command("run")` (any object's .command with a first argument "run")."""
    return (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "command"
        and bool(decorator.args)
        and isinstance(decorator.args[0], ast.Constant)
        and decorator.args[0].value == "run"
    )


def run_command_parameters(root: Path) -> tuple[str, int] | None:
    """(module:name, parameter count) of `run_command` in cli.py, else of the function registered as `run`."""
    candidates: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for path in modules_of(root):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if path.name == "cli.py" and node.name == "run_command":
                    candidates.insert(0, (path.stem, node))
                elif any(is_run_command_decorator(d) for d in node.decorator_list):
                    candidates.append((path.stem, node))
    if not candidates:
        return None
    module, node = candidates[0]
    a = node.args
    count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    return f"{module}:{node.name}", count


def revision(root: Path) -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    sha = git("rev-parse", "--short", "HEAD")
    if not sha:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--", "kfp_launch")
    return sha + (" + uncommitted changes in kfp_launch/" if dirty else "")


# -- start-up (optional) ----------------------------------------------------------------------------------


def median_wall(command: list[str], env: dict[str, str], runs: int = 7) -> float:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup(root: Path) -> None:
    env = ambient_free(dict(os.environ))
    env.pop("PYTHONPATH", None)
    kfp = median_wall([str(BIN / "kfp"), "--help"], env)
    ours = median_wall([sys.executable, "-m", "kfp_launch", "--help"], {**env, "PYTHONPATH": str(root)})
    table(
        "Start-up (median of 7, seconds)",
        ["command", "wall s", "x kfp --help"],
        [
            [f"PYTHONPATH={root} python -m kfp_launch --help", f"{ours:.3f}", f"{ours / kfp:.2f}"],
            [f"{BIN / 'kfp'} --help", f"{kfp:.3f}", "1.00"],
        ],
    )


# -- report -----------------------------------------------------------------------------------------------


def code_shape(root: Path) -> None:
    report = measure_run(root)
    modules = modules_of(root)
    sizes = {path.name: line_count(path) for path in modules}
    functions = [f for path in modules for f in functions_of(path)]
    longest = max(functions, key=lambda f: f.lines)
    largest = max(sizes, key=lambda name: sizes[name])
    params = run_command_parameters(root)
    executed: list[str] = report["executed"]
    if params is None:
        params_cell: list[object] = ["n/a", 'no `run_command` in cli.py and no `@app.command("run")`']
    else:
        detail = params[0]
        if report["run_command_params_inspect"] not in (None, params[1]):
            detail += f" (inspect.signature says {report['run_command_params_inspect']})"
        params_cell = [params[1], detail]
    not_executed = sorted(set(report["imported"]) - set(executed))
    executed_detail = ", ".join(executed) + (
        f"; imported but not entered: {', '.join(not_executed)}" if not_executed else ""
    )
    table(
        f"Code shape of {root} ({revision(root)}; {len(modules)} modules in kfp_launch/)",
        ["figure", "value", "detail"],
        [
            ["modules a `run JOB` executes code in", len(executed), executed_detail],
            ["longest function (lines, `def` to end)", longest.lines, f"{longest.module}:{longest.name}"],
            [f"functions over {LONG_FUNCTION} lines", sum(f.lines > LONG_FUNCTION for f in functions), ""],
            ["largest module (lines)", sizes[largest], largest],
            [f"modules over {LARGE_MODULE} lines", sum(n > LARGE_MODULE for n in sizes.values()), ""],
            ["total lines of kfp_launch/", sum(sizes.values()), ""],
            ["parameters of the `run` command function", *params_cell],
        ],
    )
    print(f"\nkfp_launch imported from {report['kfp_launch_file']} (Python {sys.version.split()[0]})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("root", nargs="?", type=Path, default=HERE_ROOT, help="repository root (default: this one)")
    parser.add_argument("--child", action="store_true", help="internal: do the measured run in this process")
    parser.add_argument("--startup", action="store_true", help="also time `python -m kfp_launch --help`")
    args = parser.parse_args()
    root: Path = args.root.resolve()
    if args.child:
        return child(root)
    if not (root / "kfp_launch" / "cli.py").is_file():
        parser.error(f"{root} has no kfp_launch/cli.py")
    code_shape(root)
    if args.startup:
        startup(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
