"""The migration guide's code runs: every ```python block of docs/migrating.md, each in a fresh namespace.

A block preceded by the line ``<!-- not run -->`` is only compiled. A block that imports torchattacks or
ART is skipped when that library is missing, naming the extra that installs it.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass

import pytest

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "migrating.md"
NOT_RUN = "<!-- not run -->"
# Libraries a "before" snippet may need, and the advhooks extra that installs each.
EXTRAS = {"torchattacks": "dev", "art": "peers"}
# Each section of the guide (found by a word of its heading) needs at least one snippet that runs.
SECTIONS = ("torchattacks", "robust_overfitting", "ART")


@dataclass(frozen=True)
class Block:
    index: int
    heading: str
    code: str
    runs: bool

    @property
    def needs(self) -> list[str]:
        """The optional libraries this block imports."""
        return [name for name in EXTRAS if re.search(rf"^\s*(import|from)\s+{name}\b", self.code, re.MULTILINE)]

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-") or "intro"
        return f"{self.index:02d}-{slug}"


def _blocks(text: str) -> list[Block]:
    """Every ```python block with the ``## `` heading it sits under and whether it is to be run."""
    blocks: list[Block] = []
    heading, previous, marker, fence, body = "", "", "", None, []
    for line in text.splitlines():
        stripped = line.strip()
        if fence is not None:  # inside a fenced block
            if stripped == "```":
                if fence == "python":
                    blocks.append(Block(len(blocks), heading, "\n".join(body), runs=marker != NOT_RUN))
                fence, body, previous = None, [], stripped
            else:
                body.append(line)
            continue
        if stripped.startswith("```"):
            fence, marker = stripped[3:].strip(), previous
            continue
        if line.startswith("## "):
            heading = line[3:].strip()
        if stripped:
            previous = stripped
    assert fence is None, f"{GUIDE.name}: a ``` fence is never closed"
    return blocks


BLOCKS = _blocks(GUIDE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_snippet_runs(block: Block) -> None:
    code = compile(block.code, f"{GUIDE.name} block {block.id}", "exec")
    if not block.runs:
        return
    for name in block.needs:
        pytest.importorskip(name, reason=f"this snippet needs {name}: pip install 'advhooks[{EXTRAS[name]}]'")
    exec(code, {"__name__": f"migrating_snippet_{block.index}"})


def test_every_section_has_a_snippet_that_always_runs() -> None:
    for word in SECTIONS:
        in_section = [b for b in BLOCKS if word in b.heading]
        assert in_section, f"no ```python block under a heading that names {word!r}"
        assert any(b.runs and not b.needs for b in in_section), (
            f"the {word!r} section needs a snippet that runs with advhooks alone (its 'after' snippet)"
        )


def test_the_block_parser() -> None:
    text = ("## A\n```python\nx = 1\n```\n<!-- not run -->\n\n```python\nimport art\n```\n```python\ny = 2\n```\n"
            "```bash\n## not a heading\n```\n## B\n```python\nfrom torchattacks import PGD\n```\n")
    assert [(b.heading, b.code, b.runs, b.needs) for b in _blocks(text)] == [
        ("A", "x = 1", True, []),
        ("A", "import art", False, ["art"]),
        ("A", "y = 2", True, []),
        ("B", "from torchattacks import PGD", True, ["torchattacks"]),
    ]
