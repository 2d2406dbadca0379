"""The UI's static sources are whole: no merge-conflict leftovers, and every stylesheet has
balanced braces and comments (an unclosed comment silently drops every rule after it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "app" / "web" / "static"
TEMPLATES = STATIC.parent / "templates"
SOURCES = sorted([*STATIC.rglob("*.css"), *STATIC.rglob("*.js"), *TEMPLATES.rglob("*.html")])
MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.M)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(STATIC.parent)))
def test_no_merge_leftovers(path):
    assert not MARKER.search(path.read_text(encoding="utf-8")), path


@pytest.mark.parametrize("path", sorted(STATIC.rglob("*.css")), ids=lambda p: p.name)
def test_stylesheet_comments_and_braces_balance(path):
    text = path.read_text(encoding="utf-8")
    without_comments = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    assert "/*" not in without_comments and "*/" not in without_comments, "an unclosed comment"
    assert without_comments.count("{") == without_comments.count("}")


@pytest.mark.parametrize("path", sorted(STATIC.rglob("*.js")), ids=lambda p: p.name)
def test_every_module_parses(path, tmp_path):
    """Each browser module parses as an ES module (a duplicate import, say, is a SyntaxError
    that blanks the page); checked with node, which `make test` needs for npm anyway."""
    node = shutil.which("node")
    assert node, "node is needed (it comes with npm)"
    copy = tmp_path / (path.stem + ".mjs")
    copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    checked = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
