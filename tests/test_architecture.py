"""docs/architecture.md holds the module map: it names every module of kfp_launch/, and only those."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP_ROW = re.compile(r"^\| `(?P<module>[a-z_]+\.py)` \| (?P<owns>.+) \|$")


def mapped_modules() -> dict[str, str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return {m["module"]: m["owns"] for line in text.splitlines() if (m := MAP_ROW.match(line))}


def test_the_module_map_names_every_module_of_the_package_and_no_other() -> None:
    modules = {path.name for path in (ROOT / "kfp_launch").glob("*.py")}
    mapped = mapped_modules()
    assert sorted(modules - mapped.keys()) == [], "modules missing from docs/architecture.md's map"
    assert sorted(mapped.keys() - modules) == [], "docs/architecture.md maps modules that do not exist"


def test_each_module_in_the_map_says_what_it_owns() -> None:
    assert all(len(owns.split()) >= 2 for owns in mapped_modules().values())


def test_the_readme_links_to_the_architecture() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")
