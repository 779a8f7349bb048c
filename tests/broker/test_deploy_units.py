"""Every systemd unit the project ships or documents sets LimitNOFILE (issue 16, High 3): with the common 1,024
open-file default a flood of idle connections took every descriptor of the broker and the API."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def service_sections() -> list[tuple[str, str]]:
    found = []
    for path in [*sorted((ROOT / "deploy").rglob("*")), ROOT / "docs" / "install.md"]:
        if not path.is_file() or path.suffix not in (".service", ".conf", ".md"):
            continue
        text = path.read_text()
        for match in re.finditer(r"\[Service\](.*?)(?=\n\s*\[|\Z|```)", text, re.S):
            found.append((str(path.relative_to(ROOT)), match.group(1)))
    return found


def test_every_service_section_sets_the_open_file_limit() -> None:
    sections = service_sections()
    assert any(name.startswith("deploy/systemd/") for name, _ in sections)
    missing = [name for name, body in sections if not re.search(r"^\s*LimitNOFILE=\d+", body, re.M)]
    assert missing == []
