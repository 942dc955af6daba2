"""Experiment names KFP stores and finds reliably, whatever the branch holds (docs/kfp-backend-notes.md,
'Experiment names': kubeflow/pipelines backend/src/apiserver/model/experiment.go and
backend/src/apiserver/server/list_request_util.go at tag 2.17.0)."""

from __future__ import annotations

import re
import unicodedata

import pytest

from kfp_launch.ci_context import CiContext
from kfp_launch.errors import ConfigError, ExitCode
from kfp_launch.naming import (
    DEFAULT_EXPERIMENT_TEMPLATE,
    experiment_name,
    experiment_name_for,
    hashed_experiment_name,
    sanitize_display_name,
    validate_experiment_template,
)

HASH_SUFFIX = re.compile(r"(?:^|-)[0-9a-f]{8}$")


def is_valid_kfp_name(name: str, *, max_chars: int = 128) -> bool:
    """What KFP needs of a display name: fits varchar(128), survives the doubly-decoded filter,
    fits 3-byte MySQL utf8, is readable (no control or invisible characters, no surrounding spaces)."""
    return (
        0 < len(name) <= max_chars
        and "+" not in name
        and "%" not in name
        and all(len(char.encode("utf-8", "surrogatepass")) <= 3 for char in name)
        and not any(unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"} for char in name)
        and name == name.strip()
    )


def collation_key(name: str) -> str:
    """How a case- and accent-insensitive MySQL collation compares names (approximately)."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def branch_name(branch: str) -> str:
    return experiment_name(DEFAULT_EXPERIMENT_TEMPLATE, branch=branch, ticket=None, project=None, ref=branch)


NASTY_BRANCHES = [
    "feature/abc-12-foo",
    "feature/ABC-12-foo",
    "Feature/abc-12-foo",
    "feature/abc-12-foo-",
    "a-b",
    "a+b",
    "a b",
    "a%b",
    "a%20b",
    "a%%b",
    "50%",
    "c++",
    "c--",
    "cafe",
    "café",
    "cafe\u0301",
    "日本",
    "日本語/ブランチ",
    "🚀",
    "🚀🚀",
    "feature/🚀-launch",
    "feature/x\ty",
    "feature/x\ny",
    "feature/x\u202eevil",
    "feature/x\u200by",
    " leading",
    "leading",
    "trailing ",
    "a" * 300,
    "a" * 299 + "b",
    "a" * 128,
    "a" * 129,
    "é" * 300,
    "🚀" * 300,
    "x/" * 150,
]


def test_nasty_branches_give_valid_distinct_experiment_names() -> None:
    names = [branch_name(branch) for branch in NASTY_BRANCHES]

    invalid = [
        (branch, name)
        for branch, name in zip(NASTY_BRANCHES, names, strict=True)
        if not is_valid_kfp_name(name)
    ]
    assert invalid == []
    assert len(set(names)) == len(NASTY_BRANCHES)
    # Names as written may collide under Kubeflow's case- and accent-insensitive comparison (experiments.py
    # then takes the hashed name); the hashed names never do.
    hashed = [hashed_experiment_name("{branch}", CiContext(in_ci=True, branch=b, ref=b, ref_kind="branch"))
              for b in NASTY_BRANCHES]
    assert all(is_valid_kfp_name(name) for name in hashed)
    assert len({collation_key(name) for name in hashed}) == len(NASTY_BRANCHES)


def test_normalising_is_deterministic() -> None:
    assert [branch_name(b) for b in NASTY_BRANCHES] == [branch_name(b) for b in NASTY_BRANCHES]


@pytest.mark.parametrize(
    "branch",
    ["feature/abc-12-foo", "main", "release/1.2", "fix_thing.v2", "a b", "a" * 128, "it's-[odd]~#&?*\\\"<>",
     "feature/ABC-12-foo", "café", "Feature/ML-42-Better-Iris"],
)
def test_a_name_kubeflow_can_store_is_used_unchanged_whatever_its_case(branch: str) -> None:
    assert branch_name(branch) == branch


@pytest.mark.parametrize(
    ("branch", "readable"),
    [
        ("a+b", "a-b"),
        ("c++", "c"),
        ("50%", "50"),
        ("🚀 launch", "launch"),
        ("feature/🚀🚀-launch", "feature/--launch"),
        ("feature/x\ty", "feature/x-y"),
        ("  padded  ", "padded"),
        ("a" * 300, "a" * 119),
    ],
)
def test_a_name_that_had_to_change_keeps_a_readable_prefix_and_gets_a_hash(branch: str, readable: str) -> None:
    name = branch_name(branch)

    assert name.startswith(readable + "-")
    assert HASH_SUFFIX.search(name)
    assert len(name) == len(readable) + 9


def test_nothing_readable_left_gives_only_the_hash() -> None:
    assert re.fullmatch(r"[0-9a-f]{8}", branch_name("🚀"))


def test_long_name_is_exactly_128_characters() -> None:
    assert len(branch_name("a" * 129)) == 128
    assert len(branch_name("日本" * 100)) == 128


def test_tag_pipeline_renders_tag_prefix() -> None:
    tag = experiment_name("{branch}", branch=None, ticket=None, project=None, ref="v1.2.0")

    assert tag == "tag-v1.2.0"
    assert experiment_name("{ref}", branch=None, ticket=None, project=None, ref="v1.2.0") == "v1.2.0"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{branch}", "feature/abc-12-x"),
        ("{ref}", "feature/abc-12-x"),
        ("{project}/{branch}", "mlops/kfp-demo/feature/abc-12-x"),
        ("{ticket}", "ABC-12"),
        ("ci {{ {branch} }}", "ci { feature/abc-12-x }"),
        ("nightly", "nightly"),
    ],
)
def test_experiment_template_fields(template: str, expected: str) -> None:
    name = experiment_name(
        template, branch="feature/abc-12-x", ticket="ABC-12", project="mlops/kfp-demo", ref="feature/abc-12-x"
    )

    assert name.startswith(expected)
    assert is_valid_kfp_name(name)


def test_experiment_name_for_context() -> None:
    tag_context = CiContext(in_ci=True, ref="v2", ref_kind="tag", project_path="mlops/kfp-demo")

    assert experiment_name_for(tag_context) == "tag-v2"
    assert experiment_name_for(tag_context, "{project}/{ref}") == "mlops/kfp-demo/v2"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{user}", "unknown field {user}"),
        ("{}", "unknown field {}"),
        ("{0}", "unknown field {0}"),
        ("{branch.upper}", "unknown field {branch.upper}"),
        ("{branch!r}", "takes no format spec or conversion"),
        ("{branch:.20}", "takes no format spec or conversion"),
        ("{branch", "is not a valid template"),
        ("branch}", "is not a valid template"),
    ],
)
def test_invalid_template_is_a_config_error_naming_setting_and_fields(template: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="^experiment_template .*" + re.escape(problem)) as caught:
        validate_experiment_template(template)

    assert "{branch}, {ticket}, {project}, {ref}" in caught.value.hint
    assert caught.value.exit_code == ExitCode.INVALID_INPUT


def test_template_rendering_empty_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^experiment_template '\{ticket\}' renders an empty"):
        experiment_name("{ticket}", branch="main", ticket=None, project=None, ref="main")


def test_run_names_keep_case_and_respect_max_chars() -> None:
    assert sanitize_display_name("Train ABC-12 2025-03-04 10:20") == "Train ABC-12 2025-03-04 10:20"
    assert sanitize_display_name("Train ABC-12", case_insensitive_store=True).startswith("Train ABC-12-")
    short = sanitize_display_name("x" * 50, max_chars=20)
    assert len(short) == 20 and is_valid_kfp_name(short, max_chars=20)
    with pytest.raises(ValueError, match="max_chars"):
        sanitize_display_name("x", max_chars=9)
