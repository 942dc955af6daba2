"""What kfp-launch stores besides names fits every backend: 255 characters, key first, no 4-byte UTF-8."""

from __future__ import annotations

import re

from kfp_launch.ci_context import CiContext
from kfp_launch.descriptions import experiment_description, fit_lines, run_description
from kfp_launch.models import CompiledPipeline
from kfp_launch.naming import attach_prefixes, bmp_only, new_run_key, run_key

COMPILED = CompiledPipeline(job="train", module="pipelines.train", function="pipeline", pipeline_name="train",
                            description="", package_yaml="", parameters=())
LONG = "https://gitlab.example.com/" + "group/" * 30 + "project"


def ci(**fields: object) -> CiContext:
    base = {"in_ci": True, "ref_kind": "branch", "ref": "feature/ML-1-x", "branch": "feature/ML-1-x",
            "commit_sha": "0" * 40, "commit_title": "Add 🚀 rockets", "project_path": "group/project",
            "project_url": "https://gitlab.example.com/group/project", "pipeline_id": "7", "job_name": "train",
            "pipeline_url": "https://gitlab.example.com/group/project/-/pipelines/7",
            "job_url": "https://gitlab.example.com/group/project/-/jobs/9", "ticket": "ML-1", "user_login": "alice"}
    return CiContext(**{**base, **fields})  # type: ignore[arg-type]


def test_short_links_all_fit_with_the_key_first() -> None:
    key = new_run_key(ci(), "train", "a" * 12)
    text = run_description(COMPILED, ci(project_url="", job_url="", pipeline_url=""), key, jira_url=None)
    lines = text.splitlines()
    assert lines[0] == f"kfp-launch-key: {key}" and re.fullmatch(r"[0-9a-f]{12}\.a{12}\.[0-9a-f]{8}", key)
    assert "Triggered by: alice" in lines and "Branch: feature/ML-1-x" in lines


def test_long_links_are_dropped_before_anything_else_and_the_text_fits_255() -> None:
    context = ci(project_url=LONG, job_url=LONG + "/-/jobs/9", pipeline_url=LONG + "/-/pipelines/7")
    text = run_description(COMPILED, context, new_run_key(context, "train", "b" * 12), jira_url=LONG)
    assert len(text) <= 255
    assert text.startswith("kfp-launch-key: ")
    assert "Launched by kfp-launch: job train" in text and "Commit: " + "0" * 40 in text
    assert LONG not in text  # no link fitted
    assert "Ticket: ML-1" in text


def test_emoji_are_replaced_in_stored_text() -> None:
    text = run_description(COMPILED, ci(), new_run_key(ci(), "train", "c" * 12), jira_url=None)
    assert "🚀" not in text and "Add \ufffd rockets" in text
    assert bmp_only("a😀b") == "a\ufffdb"


def test_experiment_descriptions_fit_too() -> None:
    text = experiment_description(ci(project_url=LONG, ref="x" * 300), jira_url=LONG)
    assert len(text) <= 255 and text.startswith("JIRA ML-1") and text.endswith("runs launched by kfp-launch")


def test_a_key_on_the_last_line_written_by_kfp_launch_0_1_is_still_found() -> None:
    legacy = "Launched by kfp-launch: job train\nCommit: abc\nkfp-launch-key: group/project/7/train/train/a1b2c3"
    assert run_key(legacy) == "group/project/7/train/train/a1b2c3"
    assert run_key("no key here") is None


def test_keys_of_one_ci_job_share_the_attempt_and_differ_by_inputs() -> None:
    same, any_inputs = attach_prefixes(ci(), "train", "d" * 12)  # type: ignore[misc]
    assert new_run_key(ci(), "train", "d" * 12).startswith(same)
    other = new_run_key(ci(), "train", "e" * 12)
    assert other.startswith(any_inputs) and not other.startswith(same)
    assert not new_run_key(ci(job_name="train 2/3"), "train", "d" * 12).startswith(any_inputs)
    assert attach_prefixes(ci(in_ci=False), "train", "d" * 12) is None


def test_fit_lines_keeps_the_first_variant_that_fits() -> None:
    assert fit_lines([["k" * 5], ["long line", "short"], ["x" * 20]], limit=12) == "kkkkk\nshort"
