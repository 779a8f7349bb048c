"""Fixtures for the admin CLI tests: a FakeCoordinator behind real HTTP, a FakeClock, and `cli(...)`, which runs
`cloudless.cli.main([...])` and returns its exit code and captured output.

Every test starts from a clean environment: no CLOUDLESS_* variables, HOME and XDG_CONFIG_HOME in tmp_path, so
no developer's real ~/.config/cloudless/config.json is ever read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudless.cli import main
from cloudless.ctl import core as ctl_core
from tests.cli.fake_coordinator import FakeCoordinator, FakeServer

START = 1_700_000_000.0
SLEEP_BUDGET = 10_000  # a wait loop that never ends fails fast instead of hanging the suite


@dataclass
class FakeClock:
    """Time moves only when the code under test sleeps; `interrupt_after` N sleeps simulates Ctrl-C."""

    now: float = START
    sleeps: list[float] = field(default_factory=list)
    interrupt_after: int | None = None
    on_sleep: list[Callable[[int], None]] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            hook(len(self.sleeps))
        if self.interrupt_after is not None and len(self.sleeps) >= self.interrupt_after:
            raise KeyboardInterrupt
        assert len(self.sleeps) < SLEEP_BUDGET, "wait loop did not end"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("CLOUDLESS_SERVER", "CLOUDLESS_TOKEN", "CLOUDLESS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake_clock = FakeClock()
    monkeypatch.setattr(ctl_core, "CLOCK", fake_clock)  # where as_command reads it
    return fake_clock


@pytest.fixture
def fake(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCoordinator]:
    """A FakeCoordinator served over HTTP; the environment points the CLI at it with its token."""
    coordinator = FakeCoordinator(clock=clock.time)
    with FakeServer(coordinator) as server:
        coordinator.url = server.url  # type: ignore[attr-defined]
        monkeypatch.setenv("CLOUDLESS_SERVER", server.url)
        monkeypatch.setenv("CLOUDLESS_TOKEN", coordinator.token)
        yield coordinator


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], clock: FakeClock) -> Callable[..., Result]:
    def run(*argv: str) -> Result:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors and --help
            code = exc.code if isinstance(exc.code, int) else 2
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return run
