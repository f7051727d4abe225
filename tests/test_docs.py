"""The code blocks of README.md and docs/*.md run as written.

Python blocks of a file run in order in one namespace (they tell one story); each bash block runs its
`langneurons` lines in order, in-process, in one folder per file. Both use the embedded model (integration). A block
preceded by `<!-- skip: why -->` is not run: pytest lists it as skipped with that reason. The fast checks here
(names defined, only `langneurons` lines in bash blocks that run) need no model.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"^<!--\s*skip:\s*(.+?)\s*-->$")


@dataclass
class Block:
    file: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None  # the reason, when the block is marked to be skipped

    @property
    def name(self) -> str:
        return f"{self.file.name}:{self.line}:{self.language}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced python and bash blocks of a Markdown file, with the skip reason written before each."""
    lines = path.read_text("utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            reason = SKIP.match(before)
            if fence.group(1) in ("python", "bash"):
                out.append(Block(path, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]),
                                 reason.group(1) if reason else None))
            i = end
        i += 1
    return out


BLOCKS = [b for f in FILES for b in code_blocks(f)]
RUN = [b for b in BLOCKS if b.skip is None]


def commands(block: Block) -> list[list[str]]:
    """The command lines of a bash block (comments dropped), each split like the shell does."""
    return [args for line in block.code.splitlines() if (args := shlex.split(line, comments=True))]


def test_the_readme_has_blocks_that_run():
    assert {b.language for b in RUN} == {"python", "bash"}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.skip], ids=lambda b: b.name)
def test_skipped_block(block):
    pytest.skip(f"{block.name}: {block.skip}")


@pytest.mark.parametrize("block", [b for b in RUN if b.language == "bash"], ids=lambda b: b.name)
def test_bash_blocks_that_run_hold_only_langneurons_lines(block):
    assert commands(block) and all(args[0] == "langneurons" for args in commands(block)), block.code


@pytest.mark.parametrize("path", [f for f in FILES if any(b.language == "python" for b in RUN if b.file == f)],
                         ids=lambda p: p.name)
def test_python_blocks_define_every_name(path, tmp_path):
    """Undefined names and other errors ruff finds without running the code (F: pyflakes rules)."""
    code = "\n\n".join(b.code for b in RUN if b.file == path and b.language == "python")
    script = tmp_path / "blocks.py"
    script.write_text(code + "\n", "utf-8")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F",
                           "--line-length", "200", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def embedded(gemma, monkeypatch):
    """Loading the embedded model returns the session's copy (same model, no second load)."""
    from langneurons.core import models

    original = models.load_model

    def load(name, *args, **kwargs):
        return gemma if name == "gemma-3-270m" else original(name, *args, **kwargs)

    monkeypatch.setattr(models, "load_model", load)
    monkeypatch.setattr("langneurons.load_model", load)
    return gemma


@pytest.mark.parametrize("path", [f for f in FILES if any(b.language == "python" for b in RUN if b.file == f)],
                         ids=lambda p: p.name)
def test_python_blocks_run(path, embedded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for block in (b for b in RUN if b.file == path and b.language == "python"):
        exec(compile(block.code, block.name, "exec"), namespace)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[Path, Path]:
    """One working folder per documentation file: its bash blocks build on each other's files."""
    return {f: tmp_path_factory.mktemp(f.stem) for f in FILES}


@pytest.mark.parametrize("block", [b for b in RUN if b.language == "bash"], ids=lambda b: b.name)
def test_bash_blocks_run(block, embedded, folders, monkeypatch, capsys):
    from langneurons.cli.main import main

    monkeypatch.chdir(folders[block.file])
    for args in commands(block):
        assert main(args[1:]) == 0, f"{shlex.join(args)}: {capsys.readouterr().err[-2000:]}"
