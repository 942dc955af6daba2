"""Run history for comparison: ``kfp-launch runs`` lists a branch's (or an experiment's) runs, and
``kfp-launch compare`` shows two runs' parameter differences side by side.

Metrics: the KFP v2beta1 API exposes no metric values (they live in ML Metadata; the ``Run`` message of
kubeflow/pipelines backend/api/v2beta1/run.proto (2.17.0) has no metrics field), so both commands say
so instead of guessing (docs/kfp-backend-notes.md, 'No metric values in the v2beta1 API').
"""

from __future__ import annotations

import json
import re

from kfp_launch.app import App
from kfp_launch.errors import InputError, UsageError
from kfp_launch.experiments import experiment_names, find_experiment
from kfp_launch.kfp_api import KfpApi
from kfp_launch.models import RunStatus
from kfp_launch.naming import run_key

METRICS_NOTE = "metrics: not available from the KFP v2beta1 API (they live in ML Metadata)"
MISSING = "(unset)"
MIN_PREFIX = 8
"""A run id may be given by a unique prefix of at least this many characters."""
RESOLVE_AMONG = 200
"""Prefixes are resolved among this many newest runs of the namespace (one list request)."""
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def resolve_run_id(api: KfpApi, given: str) -> str:
    """The run id ``given`` names: a whole id as it is, else a unique prefix of at least 8 characters,
    looked up among the newest :data:`RESOLVE_AMONG` runs of the namespace.

    Raises:
        InputError: a prefix shorter than 8 characters, or one that matches no run or several (listed).
    """
    given = given.strip()
    if _UUID.fullmatch(given):
        return given
    if len(given) < MIN_PREFIX:
        raise InputError(
            f'"{given}" is too short to name a run: give the run id or at least {MIN_PREFIX} of its first characters.',
            hint="kfp-launch runs lists this branch's runs with their ids.",
        )
    matches = [run for run in api.recent_runs(page_size=RESOLVE_AMONG) if run.run_id.startswith(given)]
    if len(matches) == 1:
        return matches[0].run_id
    if not matches:
        raise InputError(
            f'No run id starts with "{given}" among the newest {RESOLVE_AMONG} runs of namespace '
            f"{api.namespace or '(single-user)'}.",
            hint="give the whole run id, or check KFP_NAMESPACE; kfp-launch runs lists this branch's runs.",
        )
    listed = ", ".join(f"{run.run_id} ({run.name})" for run in matches[:10])
    raise InputError(f'"{given}" matches {len(matches)} runs: {listed}.', hint="give more of the run id.")


def run_job(run: RunStatus) -> str:
    """The job a run belongs to: from its description (``Launched by kfp-launch: job X`` or ``job X``), from
    a kfp-launch 0.1 key (``project/pipeline/CI job/job/nonce``), else the first word of its name."""
    for line in run.description.splitlines():
        for prefix in ("Launched by kfp-launch: job ", "job "):
            if line.startswith(prefix):
                return line[len(prefix) :].split(" ", 1)[0]
    key = run_key(run.description)
    if key and key.count("/") >= 3:
        return key.rsplit("/", 2)[-2]
    return run.name.split(" ", 1)[0] if run.name else ""


def run_commit(run: RunStatus) -> str:
    """The commit from a kfp-launch run description (``Commit: <sha> ...``), short; '' if none."""
    for line in run.description.splitlines():
        if line.startswith("Commit: "):
            return line.split()[1][:8]
    return ""


def _duration(run: RunStatus) -> float | None:
    if run.created_at and run.finished_at:
        return (run.finished_at - run.created_at).total_seconds()
    return None


def run_summary(run: RunStatus) -> dict[str, object]:
    """A JSON-ready summary of a run."""
    return {
        "run_id": run.run_id,
        "name": run.name,
        "job": run_job(run),
        "state": run.state,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": _duration(run),
        "commit": run_commit(run),
        "parameters": dict(run.parameters),
    }


def list_runs(app: App, *, experiment: str | None, job: str | None, limit: int, as_json: bool) -> None:
    """Print the newest ``limit`` runs of an experiment (default: the current branch's).

    Raises:
        InputError: no such experiment.
        UsageError: ``--limit`` out of 1-200.
    """
    if not 1 <= limit <= 200:
        raise UsageError(f"--limit {limit} is out of range.", hint="give 1 to 200.")
    console = app.console
    api = app.kfp()
    retry = app.retry()
    if experiment:
        name = experiment
        found = next((e for e in retry(lambda: api.find_experiments(experiment)) if e.name == experiment), None)
    else:  # the branch's: as written, or with the hash of a collision or of kfp-launch 0.1
        names = experiment_names(app.require_ref(), app.settings)
        assert names is not None
        found, name = retry(lambda: find_experiment(api, names))
    if found is None:
        raise InputError(
            f'No experiment named "{name}" in namespace {api.namespace or "(single-user)"}.',
            hint="kfp-launch context shows the experiment of this branch; --experiment NAME picks another.",
        )
    page = 200 if job else limit
    runs = retry(lambda: api.list_runs(found.experiment_id, page_size=page))
    if job:
        runs = [r for r in runs if run_job(r) == job]
    runs = runs[:limit]
    if as_json:
        console.data(
            json.dumps(
                {
                    "experiment": name,
                    "experiment_id": found.experiment_id,
                    "runs": [run_summary(r) for r in runs],
                    "metrics": None,
                    "metrics_note": METRICS_NOTE,
                },
                indent=2,
                default=str,
            )
        )
        return
    rows = []
    for run in runs:
        duration = _duration(run)
        effective = list(run.effective_parameters.items())
        given_first = sorted(effective, key=lambda item: (item[1][1], item[0]))  # given before defaults, by name
        params = ", ".join(f"{k}={_cell(run.effective_parameters, k)}" for k, _ in given_first)
        rows.append(
            [
                run.run_id,  # whole: watch, compare and cancel take it (or a unique 8-character prefix)
                run_job(run),
                run.state,
                run.created_at.strftime("%Y-%m-%d %H:%M") if run.created_at else "",
                f"{duration:.0f}s" if duration is not None else "",
                run_commit(run),
                params,
            ]
        )
    console.line(f'experiment "{name}" ({found.experiment_id}): {len(runs)} run{"" if len(runs) == 1 else "s"}')
    console.table(["run", "job", "state", "started (UTC)", "duration", "commit", "parameters"], rows, whole=["run"])
    console.line(METRICS_NOTE, style="dim")


def compare_runs(app: App, run_a: str, run_b: str, *, as_json: bool) -> None:
    """Print the parameters of two runs side by side, differences first."""
    console = app.console
    api = app.kfp()
    retry = app.retry()
    a = retry(lambda: api.get_run(resolve_run_id(api, run_a)))
    b = retry(lambda: api.get_run(resolve_run_id(api, run_b)))
    values_a, values_b = a.effective_parameters, b.effective_parameters
    names = list(dict.fromkeys([*values_a, *values_b]))
    differing = [n for n in names if values_a.get(n, (MISSING,))[0] != values_b.get(n, (MISSING,))[0]]
    if as_json:
        console.data(
            json.dumps(
                {
                    "runs": [run_summary(a), run_summary(b)],
                    "parameters": {n: [values_a.get(n, (None,))[0], values_b.get(n, (None,))[0]] for n in names},
                    "defaults": {
                        n: [values_a.get(n, (None, False))[1], values_b.get(n, (None, False))[1]] for n in names
                    },
                    "differences": differing,
                    "metrics": None,
                    "metrics_note": METRICS_NOTE,
                },
                indent=2,
                default=str,
            )
        )
        return

    rows = [
        [("≠ " if n in differing else "  ") + n, _cell(values_a, n), _cell(values_b, n)]
        for n in sorted(names, key=lambda n: n not in differing)
    ]
    rows += [
        ["  state", a.state, b.state],
        ["  job", run_job(a), run_job(b)],
        ["  commit", run_commit(a), run_commit(b)],
    ]
    console.table(["parameter", _column(a), _column(b)], rows)
    console.line(f"{len(differing)} of {len(names)} parameters differ")
    console.line(METRICS_NOTE, style="dim")


def _cell(values: dict[str, tuple[object, bool]], name: str) -> str:
    """A parameter's value as shown, ``(default)`` after a pipeline default; ``(unset)`` when it has none."""
    if name not in values:
        return MISSING
    value, default = values[name]
    return json.dumps(value) + (" (default)" if default else "")


def _column(run: RunStatus) -> str:
    """A compare column's header: the run's name and its id prefix (two runs may share a name)."""
    return f"{run.name} ({run.run_id[:8]})" if run.name else run.run_id[:8]
