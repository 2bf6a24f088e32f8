"""Every repository path that a doc or a code comment cites exists, and nothing cites design or
contract documents outside the repository: the design lives in docs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "deploy/README.md",
        ROOT / "examples/README.md",
        ROOT / "bench/README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
"""The docs whose cited paths and relative links must exist."""
CODE_SUFFIXES = {".py", ".js", ".html", ".css", ".toml", ".yaml", ".yml", ".cfg", ".service"}
"""Files whose comments (scanned as whole text) may cite repository paths."""
SKIPPED_DIRS = {
    ".venv",
    ".git",
    "test-artifacts",
    "__pycache__",
    ".ruff_cache",
    ".pytest_cache",
    ".mypy_cache",
    ".regionfarm",
    "out",
    "build",
    "dist",
}
"""Directories that are not the repository's own files (environments, caches, outputs)."""

TOP_DIRS = (
    "docs",
    "api",
    "cli",
    "farm",
    "schemas",
    "worker",
    "tests",
    "examples",
    "bench",
    "deploy",
    "toy",
)
EXTENSIONS = ("md", "py", "json", "toml", "yaml", "yml", "js", "html", "css", "service", "txt")
# The rule: a top-level directory of this repository, then path characters (no spaces, no
# globs or placeholders like `*` or `<kind>`), ending in one of EXTENSIONS; not preceded by
# a path character, so `src/worker/x.py` or `~/.cache/...` are not read as ours.
PATH_RE = re.compile(
    r"(?<![\w./~-])((?:"
    + "|".join(TOP_DIRS)
    + r")/[\w./@-]*\.(?:"
    + "|".join(EXTENSIONS)
    + r"))(?![\w/-])"
)
# Markdown links with a relative target: `[text](target)` or `[text](target#anchor)`.
LINK_RE = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")
GENERATED = {"bench/RESULTS.md": "bench/gpu.py"}
"""Cited outputs that a script of the repository writes (here: from a full-size CUDA run), and
that script; such a path counts as existing while its script exists and names it."""
# Written in two parts so that this file does not itself mention them.
OUTSIDE = ("../" + "shared", "shared/" + "design", "shared/" + "contract")


def repo_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts[:-1]
        ours = not SKIPPED_DIRS.intersection(parts) and not any(
            part.endswith(".egg-info") for part in parts
        )
        if ours and path.is_file():
            found.append(path)
    return sorted(found)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary (images, weights): cites nothing


def cited_paths(text: str) -> set[str]:
    """The repository paths that `text` names (see PATH_RE); a trailing dot ends a sentence."""
    return {m.rstrip(".") for m in PATH_RE.findall(text)}


def exists(cited: str) -> bool:
    """The path is in the repository, or is a GENERATED output whose script names it."""
    if (ROOT / cited).exists():
        return True
    script = ROOT / GENERATED.get(cited, "-")
    return script.is_file() and cited in script.read_text(encoding="utf-8")


def missing_in(path: Path, text: str) -> list[str]:
    """`path`'s cited paths (from the repository root) that do not exist, as `file: path`."""
    rel = path.relative_to(ROOT)
    return [f"{rel}: {p}" for p in sorted(cited_paths(text)) if not exists(p)]


def broken_links(path: Path, text: str) -> list[str]:
    """Relative Markdown link targets of `path` that do not exist beside it."""
    out = []
    for target in LINK_RE.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (path.parent / target).exists():
            out.append(f"{path.relative_to(ROOT)}: ({target})")
    return out


def test_the_path_rule_finds_real_and_made_up_paths():
    text = (
        "see docs/method.md and `worker/render/sampler.py`, examples/street.json. "
        "Not ours: src/worker/x.py, ~/.cache/api/y.py, tests/<suite>/test_x.py, "
        "deploy/k8s/*.yaml. Made up: docs/no-such-page.md"
    )
    assert cited_paths(text) == {
        "docs/method.md",
        "worker/render/sampler.py",
        "examples/street.json",
        "docs/no-such-page.md",
    }
    assert missing_in(ROOT / "README.md", text) == ["README.md: docs/no-such-page.md"]
    assert broken_links(ROOT / "docs/README.md", "[a](method.md) [b](nothing-here.md)") == [
        "docs/README.md: (nothing-here.md)"
    ]


def test_every_path_a_doc_cites_exists():
    assert len(DOCS) >= 8, DOCS  # the docs/ pages are really there
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        missing += missing_in(doc, text) + broken_links(doc, text)
    assert not missing, "cited paths that do not exist:\n" + "\n".join(missing)


def test_every_path_a_code_comment_cites_exists():
    this = Path(__file__).resolve()
    missing = []
    for path in repo_files():
        if path.suffix not in CODE_SUFFIXES or path == this:  # this file cites made-up paths
            continue
        text = read_text(path)
        if text is not None:
            missing += missing_in(path, text)
    assert not missing, "cited paths that do not exist:\n" + "\n".join(missing)


def test_nothing_cites_documents_outside_the_repository():
    found = []
    for path in repo_files():
        text = read_text(path)
        if text is not None:
            found += [f"{path.relative_to(ROOT)}: {o}" for o in OUTSIDE if o in text]
    assert not found, "cite docs/ instead:\n" + "\n".join(found)
