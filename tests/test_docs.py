"""Every file the code and the docs cite exists in the repository, and every cited section exists (issue 11).

Scans the *.py and *.md files of the repository (not .venv, runs/, .git, caches) for:
- paths into the repository's own folders (docs, bench, data, scripts, configs, memlab, tests) ending in a
  file name with an extension, e.g. the contract page docs/DESIGN.md, bench/RESULTS.md or a shipped dataset
  (globs and placeholders such as `configs/<expt>.yaml` or `scripts/expt*.sh` are not citations);
- bare upper-case document names (the contract page by its bare name, a README or RESULTS page without its
  folder), which must exist beside the citing file or at the repository root, so a bare name that only
  exists elsewhere fails and must be written with its folder;
- absolute paths to a .md file, which point outside the repository and always fail;
- relative Markdown links `[text](target#anchor)` in .md files, resolved from the linking file, with the
  anchor checked against the target's headings (GitHub's slugs);
- section citations `<file>.md §N` (and bare `§N` inside a docs/ page, meaning that page), checked against
  the numbered headings (`## 6. …`, `### 6.2 …`) of the cited page.
Fails once, naming every citing file:line and what it cites.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", "venv", "runs", ".git", ".pytest_cache", "__pycache__", ".cache", "node_modules"}
REPO_DIRS = ("docs", "bench", "data", "scripts", "configs", "memlab", "tests")
_EXT = r"(?:md|py|sh|ya?ml|json|jsonl|csv|txt|png|cfg|toml)"
_NOT_AFTER = r"(?<![\w./$~-])"  # the start of a path, not the middle of a longer one (runs/data/x.jsonl)
REPO_PATH = re.compile(_NOT_AFTER + r"((?:" + "|".join(REPO_DIRS) + r")/(?:[\w.-]+/)*[\w-][\w.-]*\." + _EXT + r")\b")
BARE_DOC = re.compile(_NOT_AFTER + r"([A-Z][A-Z0-9_]*\.md)\b")
ABSOLUTE_MD = re.compile(r"(?<![\w.-])(/(?:[\w.-]+/)+[\w.-]+\.md)\b")
MD_LINK = re.compile(r"\]\(([^()\s]+)\)")
SECTION = re.compile(r"([\w./-]*[\w-]\.md)`?\s*§\s*(\d+(?:\.\d+)*)")
ANY_SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)\.?(?:\s|$)")


# The files the worked example of docs/adding_an_experiment.md creates (a toy experiment 8): the page (and a
# test that runs the example) cites them as files to write, so they are not looked for; they must not exist
# (a real expt8 would make the example shadow it: rename the toy). Built from pieces so that this file itself
# cites nothing missing.
EXAMPLE_PAGE = "docs/adding_an_experiment.md"
_TOY = "expt8"
EXAMPLE_FILES = {f"memlab/experiments/{_TOY}_toy.py", f"configs/{_TOY}.yaml", f"scripts/{_TOY}_toy.sh",
                 f"docs/experiments/{_TOY}_toy.md"}


def scanned_files() -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".venv"))
        out += [Path(dirpath) / f for f in sorted(filenames) if f.endswith((".py", ".md"))]
    return out


def resolve(ref: str, citing: Path) -> Path | None:
    """The cited file: from the repository root, or from the citing file's folder; None when neither exists."""
    for base in (ROOT, citing.parent):
        p = (base / ref).resolve()
        if p.exists():
            return p
    return None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces
    to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def parse_headings(text: str) -> tuple[set[str], set[str]]:
    """(section numbers, anchors) of a Markdown page's headings, code blocks skipped."""
    numbers, anchors, fenced = set(), set(), False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = HEADING.match(line) if not fenced else None
        if m:
            n = NUMBERED.match(m.group(2))
            if n:
                numbers.add(n.group(1))
            anchors.add(slug(m.group(2)))
    return numbers, anchors


_headings: dict[Path, tuple[set[str], set[str]]] = {}


def headings(page: Path) -> tuple[set[str], set[str]]:
    if page not in _headings:
        _headings[page] = parse_headings(page.read_text(encoding="utf-8"))
    return _headings[page]


def problems_in(path: Path, text: str | None = None) -> list[str]:
    """Every broken citation in `path` (or in `text`, read as if it were that file)."""
    rel = path.relative_to(ROOT)
    is_md = path.suffix == ".md"
    if text is None:
        text = path.read_text(encoding="utf-8", errors="replace")
    own = parse_headings(text) if is_md else (set(), set())
    out = []
    for i, line in enumerate(text.split("\n"), start=1):
        where = f"{rel}:{i}"
        for m in REPO_PATH.finditer(line):
            if m.group(1) in EXAMPLE_FILES:
                continue
            if resolve(m.group(1), path) is None:
                out.append(f"{where}: cites {m.group(1)}, which is not in the repository")
        for m in BARE_DOC.finditer(line):
            if not ((ROOT / m.group(1)).exists() or (path.parent / m.group(1)).exists()):
                out.append(f"{where}: cites {m.group(1)}, which is neither beside {rel} nor at the repository root "
                           "(write the path from the root, e.g. docs/<name>.md)")
        for m in ABSOLUTE_MD.finditer(line):
            out.append(f"{where}: cites {m.group(1)}, an absolute path outside the repository")
        cited_with_file = set()
        for m in SECTION.finditer(line):
            cited_with_file.add(m.end())
            page = resolve(m.group(1), path)
            if page is not None and page.suffix == ".md" and m.group(2) not in headings(page)[0]:
                out.append(f"{where}: cites {m.group(1)} §{m.group(2)}, which has no such section")
        if is_md and rel.parts[0] == "docs":  # a bare §N in a docs page is a section of that page
            for m in ANY_SECTION.finditer(line):
                if m.end() not in cited_with_file and m.group(1) not in own[0]:
                    out.append(f"{where}: cites §{m.group(1)}, which {rel} has no section of")
        if is_md:
            for m in MD_LINK.finditer(line):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                file, _, anchor = target.partition("#")
                page = (path.parent / file).resolve()
                if file and not page.exists():
                    out.append(f"{where}: links to {target}, which does not exist")
                elif anchor and (not file or page.suffix == ".md") and \
                        anchor not in (headings(page) if file else own)[1]:
                    out.append(f"{where}: links to {target}: no heading of {file or rel} has that anchor")
    return out


def test_cited_files_and_sections_exist():
    assert (ROOT / "docs/DESIGN.md").is_file(), "docs/DESIGN.md (the contracts the code cites) is missing"
    files = scanned_files()
    problems = [p for f in files for p in problems_in(f)]
    assert not problems, "citations of files or sections that do not exist:\n  " + "\n  ".join(problems)


def test_the_scan_catches_what_it_should():
    """The patterns themselves, on text read as if it were a file of memlab/: a missing page, a bare name that
    exists only elsewhere, an absolute path and a missing section are reported; globs, placeholders, paths
    inside other paths and existing files are not. (The cited names are built from pieces so that this
    file itself cites nothing missing.)"""
    md, design = ".md", "DESIGN" + ".md"
    lines = [f"see docs/NO_SUCH_PAGE{md} and bench/MISSING{md}", f"as {design} says",
             f"from /somewhere/else/NOTES{md}", f"docs/{design} §99",
             "runs/data/x.jsonl configs/<expt>.yaml scripts/expt*.sh",
             f"memlab/io.py and docs/{design} §6.2 and data/README{md}"]
    found = problems_in(ROOT / "memlab" / "_virtual.py", "\n".join(lines))
    text = "\n".join(found)
    for expected in (f"docs/NO_SUCH_PAGE{md}", f"bench/MISSING{md}", f"cites {design}", f"/somewhere/else/NOTES{md}",
                     "§99"):
        assert expected in text, (expected, found)
    assert len(found) == 5, found


def test_worked_example_files_do_not_exist():
    """The toy experiment of docs/adding_an_experiment.md is an example: none of its files is in the
    repository (an experiment of that name would be shadowed by the example)."""
    present = sorted(f for f in EXAMPLE_FILES if (ROOT / f).exists())
    assert not present, f"{present} exist: rename the toy experiment of {EXAMPLE_PAGE} and EXAMPLE_FILES"


def test_docs_index_lists_every_page():
    """docs/README.md (the index) links every Markdown page under docs/, and the README links the index."""
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / "docs" / target.partition("#")[0]).resolve() for target in MD_LINK.findall(index)}
    pages = {p.resolve() for p in (ROOT / "docs").rglob("*.md") if p.name != "README.md"}
    missing = sorted(str(p.relative_to(ROOT)) for p in pages - linked)
    assert not missing, f"pages not listed in docs/README.md: {missing}"
    assert "](docs/README.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_experiment_pages_document_every_config_key():
    """Each configs/expt<N>.yaml has its page docs/experiments/expt<N>_<name>.md (named like its sbatch template),
    and every key of the config (grid axes, settings and data files, at every size) is on that page in
    backticks."""
    from omegaconf import OmegaConf

    problems = []
    for cfg_path in sorted((ROOT / "configs").glob("expt*.yaml")):
        expt = cfg_path.stem
        templates = sorted((ROOT / "scripts").glob(f"{expt}_*.sh"))
        pages = [ROOT / "docs" / "experiments" / f"{t.stem}.md" for t in templates]
        if len(templates) != 1 or not pages[0].is_file():
            problems.append(f"{expt}: expected one template scripts/{expt}_<name>.sh and its page "
                            f"docs/experiments/{expt}_<name>.md, found {[str(p.relative_to(ROOT)) for p in pages]}")
            continue
        cfg = OmegaConf.to_container(OmegaConf.load(cfg_path))
        keys = {k for section in ("grid", "settings") for size in (cfg.get(section) or {}).values() for k in size}
        keys |= set(cfg.get("data") or {})
        text = pages[0].read_text(encoding="utf-8")
        problems += [f"{pages[0].relative_to(ROOT)}: `{k}` ({cfg_path.relative_to(ROOT)}) is not documented"
                     for k in sorted(keys) if f"`{k}`" not in text]
    assert not problems, "\n  ".join(["experiment pages out of date:"] + problems)
