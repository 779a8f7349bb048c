"""Device gates for the agent: the profile's battery/thermal rules applied to the current readings.

The decision (with hysteresis) is `firmware_profiles.gates.evaluate_gates`, a pure core; this wraps it with the
profile and the previous verdict so the agent keeps one value and asks one question per heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_agent.facts import Readings
from firmware_profiles import GateAction, GateVerdict, Profile, evaluate_gates


@dataclass(frozen=True, slots=True)
class GateState:
    verdict: GateVerdict

    @property
    def schedulable(self) -> bool:
        return self.verdict.schedulable

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.verdict.gates

    @property
    def stop_workloads(self) -> bool:
        return not self.verdict.schedulable and self.verdict.action is GateAction.STOP


class Gate:
    def __init__(self, profile: Profile, sensor_file: Path | None = None) -> None:
        self.profile = profile
        self.sensor_file = sensor_file

    def initial(self) -> GateState:
        return GateState(GateVerdict(schedulable=True, gates=(), action=GateAction.KEEP))

    def evaluate(self, previous: GateState, readings: Readings) -> GateState:
        verdict = evaluate_gates(self.profile, readings.battery_percent, readings.charging,
                                 readings.temperatures, previous.verdict)
        return previous if verdict == previous.verdict else GateState(verdict)
