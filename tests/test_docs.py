"""The docs stay true: every relative link lands, the README stays short, the map names every
module.

Links are checked as GitHub renders them: a relative target must exist, and a `#anchor`
must match a heading of the target page by GitHub's slug rules. The architecture page's
module table must have a row for every module under src/scheda, with the layer that
tests/test_layers.py gives it, and no row for a module that is gone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_layers import LAYERS, layer_of, modules

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "scheda"
README_MOST_LINES = 200
TABLE_HEADER = "| module | layer | does | knows nothing of |"

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def pages() -> list[Path]:
    """The Markdown a reader follows: the README and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, where links and headings mean something."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lowercased, punctuation dropped,
    spaces made hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML shows nothing
    text = text.replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in a page; a repeated heading gets -1, -2... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The link targets of a page's prose (not those shown inside code)."""
    targets = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        targets += LINK.findall(CODE_SPAN.sub("", line))
    return targets


def broken(page: Path) -> list[str]:
    """The relative links of a page that lead nowhere: a missing file, or an anchor that is
    no heading of its page."""
    wrong = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            wrong.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            wrong.append(f"{target}: no heading #{anchor} in {where.name}")
    return wrong


def test_slugs_follow_githubs_rules() -> None:
    assert slug("Serve it: `scheda serve` and the studio") == "serve-it-scheda-serve-and-the-studio"
    assert slug("Look before you download: the Hub") == "look-before-you-download-the-hub"
    assert slug("eval on Ray") == "eval-on-ray"
    assert slug("The [API](api.md), *twice*") == "the-api-twice"
    assert slug("Installing: the lock (uv)") == "installing-the-lock-uv"


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Twice\n\n## Twice\n\n"
        "[ok](other.md#a-part) [ok](#twice-1) [web](https://example.org/x#y)\n"
        "[gone](missing.md) [bad anchor](other.md#no-part) [bad here](#twice-2)\n"
        "`[in code](missing-too.md)`\n\n```\n[in a block](missing-three.md)\n```\n",
        encoding="utf-8",
    )
    assert broken(page) == [
        "missing.md: no such file",
        "other.md#no-part: no heading #no-part in other.md",
        "#twice-2: no heading #twice-2 in page.md",
    ]


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken(page) == []


def test_the_readme_stays_short() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines < README_MOST_LINES, (
        f"README.md has {lines} lines: keep it to the pitch and one example per question, "
        "and move the rest to a page under docs/"
    )


def module_table() -> dict[str, str]:
    """The architecture page's module table: each module it names -> the layer its row says.

    A row may name several modules (`cli/card`, `cli/fit`): each is a path under
    src/scheda without `.py`, a package by its folder, the root package as `scheda`.
    """
    lines = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(TABLE_HEADER) + 2
    rows: dict[str, str] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        names, layer = (cell.strip() for cell in line.strip("|").split(" | ")[:2])
        for name in re.findall(r"`([^`]+)`", names):
            rows[name] = layer
    return rows


def dotted(name: str) -> str:
    """A table name (`formulas/fit`) as the module it names (`scheda.formulas.fit`)."""
    return "scheda" if name == "scheda" else "scheda." + name.replace("/", ".")


def test_every_module_has_a_row_in_the_architecture_table() -> None:
    named = {dotted(name) for name in module_table()}
    missing = sorted(m for m in modules() if m not in named)
    assert not missing, (
        f"add a row for {', '.join(missing)} to docs/architecture.md's module table "
        "(its layer and what it does)"
    )


def test_no_row_names_a_module_that_is_gone() -> None:
    # A row may also name a folder that holds no Python (the studio's static files).
    known = modules()
    gone = [
        name
        for name in module_table()
        if dotted(name) not in known and not (PACKAGE / name).is_dir()
    ]
    assert not gone, f"docs/architecture.md names modules that are gone: {', '.join(gone)}"


def test_each_row_gives_the_layer_the_layer_test_declares() -> None:
    wrong = []
    for name, said in module_table().items():
        index = layer_of(dotted(name))
        declared = None if index is None else LAYERS[index][0]
        if said != declared:
            wrong.append(f"{name}: the table says {said}, tests/test_layers.py {declared}")
    assert not wrong, "\n".join(wrong)


def test_every_task_has_a_row_in_the_eval_page() -> None:
    """docs/eval.md's task table names every task `--tasks` takes (the registry's)."""
    from scheda.evaluation.tasks import TASKS

    page = (ROOT / "docs" / "eval.md").read_text(encoding="utf-8")
    first_cells = {
        name
        for line in page.splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])
    }
    assert set(TASKS) <= first_cells, sorted(set(TASKS) - first_cells)
