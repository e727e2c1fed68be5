"""The user documentation (README.md, docs/**/*.md) against the repository it describes.

- A fenced code block right after ``<!-- from: PATH -->`` (or ``<!-- from: PATH lines N-M -->``)
  must equal that file (or those lines, 1-based, inclusive), so an example shown is the one
  the tests run.
- Every ``[[account]]`` TOML block must load through the accounts loader with every adapter's
  real metadata (``${ENV}`` references set to dummies), unless marked
  ``<!-- fragment -->`` right before it.
- Every relative link points to an existing file, and every ``#anchor`` to a heading of the
  page it names.
- README.md stays a front page (at most 400 lines), spells out "MMP" once, before any other
  use, and no page carries development-process wording.
- docs/design.md names only modules that exist.
"""

from __future__ import annotations

import importlib
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from mta.config import load_accounts, load_smpp_clients
from mta.registry import discover

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").rglob("*.md")])

#: How the README spells MMP out, once, at its first use.
MMP_SPELLED = "MMP (the SMS interface of the upstream platforms)"
README_MAX_LINES = 400
PROCESS_WORDS = ("the issue asks", "this session", "TODO", "issue #")

FENCE = re.compile(r"^(```+|~~~+)")
FROM = re.compile(r"<!--\s*from:\s*(?P<path>\S+)(?:\s+lines\s+(?P<a>\d+)-(?P<b>\d+))?\s*-->")
FRAGMENT = "<!-- fragment -->"
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """Fenced code blocks of a page: (line of the opening fence, info string, body, the
    nearest non-blank line before the fence)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group(1), lines[i][len(m.group(1)) :].strip(), i
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        found.append((start + 1, info, "\n".join(body), before.strip()))
        i += 1
    return found


def prose(path: Path) -> str:
    """The page without its fenced code blocks (links and headings live outside them)."""
    out, inside, fence = [], False, ""
    for line in path.read_text(encoding="utf-8").split("\n"):
        m = FENCE.match(line)
        if m and not inside:
            inside, fence = True, m.group(1)
            out.append("")
        elif inside and line.startswith(fence):
            inside = False
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to
    hyphens (hyphens and underscores kept)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.replace("`", "").strip().lower()
    kept = []
    for ch in text:
        if ch in " -_" or unicodedata.category(ch)[0] in "LN":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path).split("\n"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def from_blocks() -> list[tuple[str, int, str, str, int | None, int | None]]:
    found = []
    for page in DOCS:
        for line, _info, body, before in blocks(page):
            m = FROM.fullmatch(before)
            if m:
                a, b = m.group("a"), m.group("b")
                found.append(
                    (rel(page), line, body, m.group("path"), int(a) if a else None,
                     int(b) if b else None)
                )
    return found


@pytest.mark.parametrize(
    ("page", "line", "body", "source", "first", "last"),
    from_blocks(),
    ids=lambda v: v if isinstance(v, str) and v.endswith(".md") else None,
)
def test_code_from_a_file_is_that_file(
    page: str, line: int, body: str, source: str, first: int | None, last: int | None
) -> None:
    path = ROOT / source
    assert path.is_file(), f"{page}:{line}: <!-- from: {source} --> names no file"
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    if first is not None and last is not None:
        assert 1 <= first <= last <= len(lines), f"{page}:{line}: {source} has {len(lines)} lines"
        lines = lines[first - 1 : last]
    expected = "\n".join(lines)
    assert body == expected, (
        f"{page}:{line}: the block differs from {source}"
        + (f" lines {first}-{last}" if first else "")
        + "; copy the file's text into the page again"
    )


def test_pages_show_code_from_files() -> None:
    pages = {page for page, *_ in from_blocks()}
    assert {"README.md", "docs/accounts.md", "docs/partners.md"} <= pages


def adapter_metas() -> dict[str, object]:
    """Every installed adapter's metadata, and the example package's ``echo`` (the guide's
    accounts use it; it is imported from its source tree, not installed)."""
    metas: dict[str, object] = {n: c.meta for n, c in discover().items()}
    src = ROOT / "examples" / "adapter-package" / "src"
    sys.path.insert(0, str(src))
    try:
        echo = importlib.import_module("mta_adapter_echo").EchoAdapter
    finally:
        sys.path.remove(str(src))
    metas[echo.meta.name] = echo.meta
    return metas


def account_blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in DOCS:
        for line, info, body, before in blocks(page):
            accounts = re.search(r"^\[\[(account|smpp_client)\]\]", body, re.M)
            if info == "toml" and accounts and before != FRAGMENT:
                found.append((rel(page), line, body))
    return found


@pytest.mark.parametrize(("page", "line", "body"), account_blocks())
def test_accounts_examples_load(
    page: str, line: int, body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", body):
        monkeypatch.setenv(name, "x")
    path = tmp_path / "accounts.toml"
    path.write_text(body, encoding="utf-8")
    if "[[account]]" in body:
        assert load_accounts(path, adapter_metas()), (page, line)  # type: ignore[arg-type]
    if "[[smpp_client]]" in body:
        assert load_smpp_clients(path), (page, line)


def test_every_accounts_example_is_checked() -> None:
    assert len(account_blocks()) >= 8


def links() -> list[tuple[str, str]]:
    found = []
    for page in DOCS:
        for m in LINK.finditer(prose(page)):
            target = m.group("target")
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            found.append((rel(page), target))
    return found


@pytest.mark.parametrize(("page", "target"), links())
def test_relative_link_resolves(page: str, target: str) -> None:
    base = (ROOT / page).parent
    path_part, _, anchor = target.partition("#")
    dest = (base / path_part).resolve() if path_part else ROOT / page
    assert dest.exists(), f"{page}: link to {target!r}: no such file"
    assert dest.is_relative_to(ROOT), f"{page}: link to {target!r} leaves the repository"
    if anchor:
        assert dest.suffix == ".md", f"{page}: anchor {target!r} into a file that is not a page"
        assert anchor in anchors(dest), (
            f"{page}: link to {target!r}: {rel(dest)} has no heading with anchor #{anchor}"
        )


def test_links_are_found() -> None:
    assert len(links()) > 100


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").split("\n")
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; move sections into docs/ and link them"
    )


def test_readme_quick_start_is_the_two_make_commands() -> None:
    quick = next(body for _, info, body, _ in blocks(README) if info == "sh")
    assert [line.split("#")[0].strip() for line in quick.split("\n")] == [
        "make demo",
        "make test",
    ]


def test_readme_spells_out_mmp_once_at_its_first_use() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(MMP_SPELLED) == 1
    assert text.index("MMP") == text.index(MMP_SPELLED)


@pytest.mark.parametrize("page", [rel(p) for p in DOCS])
def test_no_development_process_wording(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    for word in PROCESS_WORDS:
        assert word.lower() not in text.lower(), f"{page}: {word!r}"


@pytest.mark.parametrize("page", [rel(p) for p in DOCS])
def test_no_reference_outside_the_repository(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    assert "research/" not in text and "../shared" not in text, page


def test_design_layout_names_existing_modules() -> None:
    text = prose(ROOT / "docs" / "design.md")
    named = re.findall(r"`((?:mta|adapters)/[\w/]*(?:\.py|/))`", text)
    assert len(named) > 20
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, f"docs/design.md names modules that do not exist: {missing}"
