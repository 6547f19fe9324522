"""The docs are self-contained: no reference leaves the repository, and every link lands.

A maintainer who clones the repository must be able to follow every pointer in
it. So nothing may cite the notes file the project started from, markdown links
in README.md and docs/ must name files that exist, and a ``docs/<page>.md#anchor``
pointer (in a link or in a code comment) must name a heading of that page.
Anchors are GitHub's: the heading lower-cased, punctuation dropped, spaces as hyphens.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Spelled in pieces so this file does not match itself.
OUTSIDE = ("NATS" + "-NOTES", "../" + "shared")
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "data", "build", "dist"}

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
DOC_POINTER = re.compile(r"\bdocs/([\w.-]+\.md)#([\w-]+)")


def repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files; a plain walk when git is not there."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout
        paths = [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if not SKIPPED_DIRS & set(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.is_file() and not p.is_symlink() and not SKIPPED_DIRS & set(p.relative_to(ROOT).parts)]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary (an image), or gone since the listing


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped, lower-cased, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers: its headings (duplicates numbered, as GitHub does) and HTML anchors."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: Counter[str] = Counter()
    out = set(HTML_ANCHOR.findall(text))
    for heading in HEADING.findall(text):
        base = slug(heading)
        out.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return out


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def links(page: Path) -> list[str]:
    """The targets of a page's markdown links, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def broken_link(page: Path, target: str) -> str | None:
    """Why a link does not land, or None when it does (web links are not checked)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        return None  # http:, https:, mailto:
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / path_part).resolve() if path_part else page
    if not dest.exists():
        return f"{path_part} does not exist"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{dest.relative_to(ROOT)} has no heading for #{anchor}"
    return None


def test_no_file_refers_to_a_document_outside_the_repository():
    """Given every file in the repository, when searched,
    then none cites the outside notes file or the shared folder beside the repository."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in repository_files()
        if (text := text_of(path)) is not None
        for n, line in enumerate(text.splitlines(), 1)
        if any(word in line for word in OUTSIDE)
    ]
    assert not offenders, "facts about NATS belong in docs/nats-notes.md:\n" + "\n".join(offenders)


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_in_the_docs_lands_on_a_file_and_heading_that_exist(page):
    """Given README.md or a docs page, when its links are resolved, then every file and anchor exists."""
    broken = [f"({target}): {why}" for target in links(page) if (why := broken_link(page, target))]
    assert not broken, f"{page.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)


def test_every_pointer_to_a_docs_section_names_a_heading_that_exists():
    """Given comments and docs that point at docs/<page>.md#anchor, when resolved, then the heading exists."""
    broken = [
        f"{path.relative_to(ROOT)}: docs/{page}#{anchor}"
        for path in repository_files()
        if (text := text_of(path)) is not None
        for page, anchor in DOC_POINTER.findall(text)
        if not (ROOT / "docs" / page).exists() or anchor not in anchors(ROOT / "docs" / page)
    ]
    assert not broken, "pointers to missing docs sections:\n" + "\n".join(broken)


def test_anchors_follow_githubs_rules_for_headings():
    """Given headings with code, punctuation and underscores, when slugged, then they match GitHub's anchors."""
    assert slug("Durability and sync_interval") == "durability-and-sync_interval"
    assert slug("Fetching, no_wait and long polls") == "fetching-no_wait-and-long-polls"
    assert slug("Sync handlers in a child process (`@process`)") == "sync-handlers-in-a-child-process-process"
    assert slug("One message per subject: the result fence") == "one-message-per-subject-the-result-fence"
