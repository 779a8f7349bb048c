"""bench/overlay.py runs end to end (quick mode) and writes its section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_overlay_bench_quick_writes_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "b.md"
    out = subprocess.run([sys.executable, str(REPO / "bench" / "overlay.py"), "--quick", "--doc", str(doc)],
                         capture_output=True, text=True, timeout=110, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    text = doc.read_text()
    assert "<!-- bench:overlay -->" in text and "overlay, direct" in text and "peak growth" in text
    assert "Traceback" not in out.stderr
