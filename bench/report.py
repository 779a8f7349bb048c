"""Write one benchmark's results into docs/benchmarks.md, replacing only that benchmark's section.

Each benchmark owns a block delimited by `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; other blocks and
any prose around them are kept. The block records when and where it was measured and the command to rerun it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Numbers measured on the project's reference machine by the scripts in `bench/`; each section is rewritten\n"
    "by its own script (`make bench` runs them all). Treat them as this machine's numbers, not guarantees.\n"
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def write_section(name: str, title: str, body: str, *, command: str, doc: Path = DOC) -> Path:
    """Replace (or append) the block for `name` with `title`, `body` (markdown) and provenance."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- bench:{name} -->\n## {title}\n\n{body.rstrip()}\n\n"
        f"_Measured {stamp} on {machine()} with `{command}`._\n<!-- /bench:{name} -->"
    )
    text = doc.read_text() if doc.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(doc)
    return doc


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
