"""The state file (``.kfp-launch/state.json``): the runs a ``run`` submitted, so that ``kfp-launch cancel
--state-file`` (the CI template's after_script) can find and terminate them, or leave them (``detach``).

It is written before the first create call, with each run's key, and after each run is created; every
write is atomic (temporary file and rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from kfp_launch.errors import InputError


@dataclass(frozen=True, kw_only=True)
class StateEntry:
    """One run in ``.kfp-launch/state.json`` (what ``kfp-launch cancel --state-file`` needs).

    Attributes:
        run_id, experiment_id: the KFP ids (``run_id`` is '' while the run is being created: then
            ``run_key`` and ``run_name`` find it).
        host, namespace: where the run lives.
        url: the run's UI link.
        job: the job name.
        cancel_policy: ``"terminate"`` or ``"detach"`` (``--on-cancel``).
        created_at: when kfp-launch recorded it, ISO 8601 UTC.
        run_key: the run's kfp-launch key.
        run_name: the run's display name.
        ci_job_id: the GitLab job that recorded it (``CI_JOB_ID``): ``cancel`` in another job (which got
            this file as an artifact) leaves the run alone.
    """

    run_id: str
    experiment_id: str
    host: str
    namespace: str
    url: str
    job: str
    cancel_policy: str
    created_at: str = ""
    run_key: str = ""
    run_name: str = ""
    ci_job_id: str = ""


def write_state(path: Path, entries: list[StateEntry]) -> None:
    """Write ``{"runs": [...]}`` atomically (temp file + rename), creating the directory.

    Raises:
        InputError: the file cannot be written.
    """
    stamped = [asdict(e) | {"created_at": e.created_at or datetime.now(UTC).isoformat()} for e in entries]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"runs": stamped}, handle, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(
            f"Cannot write the state file {path}: {exc.strerror or exc}.", hint="set --state-file to a writable path."
        ) from None


def read_state(path: Path) -> list[StateEntry]:
    """Read the runs of a state file.

    Raises:
        InputError: missing, unreadable or malformed file.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [
            StateEntry(**{k: v for k, v in run.items() if k in StateEntry.__dataclass_fields__}) for run in data["runs"]
        ]
    except FileNotFoundError:
        raise InputError(
            f"No state file at {path}: no run was recorded there.",
            hint="kfp-launch run writes it when it submits a run.",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"The state file {path} is unreadable or malformed: {exc}.",
            hint='it must be {"runs": [{"run_id": ..., "host": ...}]}.',
        ) from None


def mark_detached(path: Path, run_ids: Iterable[str]) -> None:
    """Set the cancel policy of these runs to ``detach`` (the after_script leaves them running)."""
    ids = set(run_ids)
    if not ids or not path.is_file():
        return
    write_state(path, [replace(e, cancel_policy="detach") if e.run_id in ids else e for e in read_state(path)])


def recorded_by_this_job(path: Path, ci_job_id: str | None) -> bool:
    """Whether the state file at ``path`` holds runs of this CI job only (``CI_JOB_ID``; never outside CI)."""
    if not ci_job_id or not path.is_file():
        return False
    try:
        entries = read_state(path)
    except InputError:
        return False
    return bool(entries) and all(e.ci_job_id == ci_job_id for e in entries)
