"""Every Python and shell block of README.md runs as written against a real `initium serve` (issue 18,
item 1): a README that drifts from the code fails `make test`.

A block is exempt only when the line before its fence says `<!-- readme-test: skip (why) -->`; the
exempt blocks are listed here, so adding one is a decision this test makes visible. The blocks run
in a fresh folder each, with the server's address in place of http://127.0.0.1:8000 (and in
INITIUM_BASE_URL, which the client and the CLI read), the project's `initium` on PATH, and python3
being this interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_URL = "http://127.0.0.1:8000"
SKIP = re.compile(r"<!-- readme-test: skip \((?P<why>[^)]+)\) -->\s*$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
# The first line of each exempt block, and why: the setup itself, and long-lived servers.
EXEMPT = {
    "make serve   # sets up .venv and starts the service (API + embedded worker) on http://127.0.0.1:8000",
    "initium serve [--host 127.0.0.1] [--port 8000] [--data-dir .initium-data] [--broker redis://...]",
    "redis-server --appendonly yes &",
}


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None  # why it is exempt

    @property
    def first(self) -> str:
        return self.code.splitlines()[0] if self.code else ""


def blocks(text: str) -> list[Block]:
    """The README's fenced blocks, in order, each with the skip marker just above it if any."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = SKIP.match(lines[i - 1]) if i else None
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(i + 1, opening["lang"], code, marker["why"] if marker else None))
        i = end + 1
    return found


RUNNABLE = [b for b in blocks(README.read_text()) if b.lang in ("sh", "python") and b.skip is None]


def test_every_code_block_is_runnable_or_deliberately_exempt() -> None:
    """Only sh and python blocks hold commands (others are text: the layout tree); every exempt
    one is listed above with its reason, and no unlabelled fence hides a command."""
    every = blocks(README.read_text())
    assert all(b.lang in ("sh", "python", "text") for b in every), [(b.line, b.lang) for b in every]
    assert {b.first for b in every if b.skip is not None} == EXEMPT
    assert len(RUNNABLE) >= 5


def _environment(url: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # the project's venv: `initium` and python3
    env = {**os.environ, "INITIUM_BASE_URL": url, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env["INITIUM_CACHE_DIR"] = "off"  # a user's cache is theirs; the test's folder is fresh
    return env


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line{b.line}-{b.lang}" for b in RUNNABLE])
def test_the_block_runs_as_written(block: Block, served: str, tmp_path: Path) -> None:
    code = block.code.replace(DEFAULT_URL, served)
    command = [sys.executable, "-c", code] if block.lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=tmp_path, env=_environment(served), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"README line {block.line}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if "safetensors" in code:  # a block that fetches weights leaves them here, whole
        files = list(tmp_path.glob("*.safetensors"))
        assert files and all(f.stat().st_size > 8 for f in files), sorted(p.name for p in tmp_path.iterdir())
