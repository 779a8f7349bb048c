"""`cloudless agent --no-s3-endpoint` reaches the agent's service settings (edge_agent.cli -> run -> ServiceSettings
.builtins); without it the agent serves s3.cloudless to its workloads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from edge_agent import cli


@pytest.mark.parametrize(("flags", "served"), [((), True), (("--no-s3-endpoint",), False)],
                         ids=["default", "opted-out"])
def test_the_flag_reaches_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...],
                                    served: bool) -> None:
    seen: dict[str, Any] = {}

    async def run(cfg: Any, **kw: Any) -> int:  # the agent itself is not started: only what it is given
        seen.update(kw)
        return 0

    monkeypatch.setattr(cli, "run", run)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    (tmp_path / "pw").write_text("secret")
    args = parser.parse_args(["agent", "--data-dir", str(tmp_path / "data"), "--node-id", "n1", "--broker",
                              "mqtt://127.0.0.1:1883", "--password-file", str(tmp_path / "pw"), *flags])
    assert args.func(args) == 0
    assert seen["s3_endpoint"] is served and seen["services"] is True
