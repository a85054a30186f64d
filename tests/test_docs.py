"""Docs: every fenced ```python block marked `<!-- runnable -->` (on the line right before it) in `docs/*.md` and
`README.md` runs offline in a fresh subprocess with a temporary working directory; `mkdocs build --strict` passes
when mkdocs and mkdocstrings are installed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
DOC_FILES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def runnable_blocks(path: Path) -> list[tuple[int, str]]:
    """`(line number, code)` of each ```python block whose previous non-blank line is the marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == MARKER:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j >= len(lines) or not re.match(r"^```python\b", lines[j].strip()):
                raise AssertionError(f"{path.name}:{i + 1}: {MARKER} must be followed by a ```python block")
            end = next(k for k in range(j + 1, len(lines)) if lines[k].strip() == "```")
            blocks.append((j + 1, "\n".join(lines[j + 1 : end])))
            i = end
        i += 1
    return blocks


BLOCKS = [(path, line, code) for path in DOC_FILES if path.exists() for line, code in runnable_blocks(path)]


def test_there_are_runnable_blocks():
    assert len(BLOCKS) >= 2
    assert "<!-- runnable -->" in (REPO / "docs" / "index.md").read_text()  # the convention is documented there


@pytest.mark.slow
@pytest.mark.parametrize("path,line,code", BLOCKS, ids=[f"{p.relative_to(REPO)}:{line}" for p, line, _ in BLOCKS])
def test_runnable_block(path, line, code, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # conftest set the offline variables
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{path.name}:{line} failed:\n{result.stderr[-3000:]}"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(REPO / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_docstring_references_render_as_code():
    """The mkdocs hook turns TRL-style `[`~trl.SFTTrainer`]` references (rendered as literal brackets) into code."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    html = "see [<code>~trl.SFTTrainer</code>], [<code>transformers.Trainer.train()</code>] and [a](b)"
    assert hooks.on_page_content(html) == (
        "see <code>SFTTrainer</code>, <code>transformers.Trainer.train()</code> and [a](b)"
    )


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_pages_write_plain_code_not_docstring_references(path):
    """Docstrings use TRL's `[`~trl.SFTTrainer`]` form (the hook renders it); the Markdown pages are also read on
    GitHub, where it would stay literal brackets, so they write `SFTTrainer`."""
    found = re.findall(r"\[`~?[\w.]+(?:\(\))?`\](?!\()", path.read_text(encoding="utf-8"))
    assert not found, f"{path.name}: write {found[0]} as plain code"
