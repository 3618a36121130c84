"""The run of the reliability suite: its mode (CI or soak), the private broker that tests
may stop and start, and the figures report."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.support.processes import run_script

# -- run mode and a private broker ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mode:
    """How hard each scenario pushes: CI mode is lean, soak mode long."""

    name: str
    kills: int
    topic_records: int
    bounces: int
    poison_scale: int
    load_seconds: float
    fuzz_examples: int
    soak_seconds: float


CI_MODE = Mode(
    "ci",
    kills=20,
    topic_records=200_000,
    bounces=1,
    poison_scale=1,
    load_seconds=10.0,
    fuzz_examples=25,
    soak_seconds=10.0,
)
_current: list[Mode] = [CI_MODE]


def soak_mode(minutes: float) -> Mode:
    """The soak: ten times the kills and the poison, three bounces, a minute of load."""
    return replace(
        CI_MODE,
        name="soak",
        kills=200,
        bounces=3,
        poison_scale=10,
        load_seconds=60.0,
        fuzz_examples=150,
        soak_seconds=minutes * 60,
    )


def set_mode(mode: Mode) -> None:
    _current[0] = mode


def current_mode() -> Mode:
    """The run mode, for settings fixed when a test module is imported (hypothesis)."""
    return _current[0]


@dataclass(frozen=True, slots=True)
class OwnBroker:
    """A private broker (scripts/local-kafka with its own var dir and ports) tests may bounce."""

    bootstrap: str
    env: dict[str, str]
    var: Path

    def start(self) -> None:
        run_script("local-kafka", "start", self.env)

    def stop(self) -> None:
        run_script("local-kafka", "stop", self.env)


# -- figures -------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the suite tried and found, written to var/reliability/ and printed at the end."""

    mode: str
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, **values: Any) -> None:
        self.data.setdefault(name, {}).update(values)

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"figures-{self.mode}.json"
        payload = {
            "mode": self.mode,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cores": os.cpu_count(),
            **self.data,
        }
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        return path
