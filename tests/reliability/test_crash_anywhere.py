"""Crash anywhere: `statestore bootstrap` and `statestore serve` are SIGKILLed at random
moments, restarted, and the view ends equal to the log, each restart resuming from the
offsets stored with the data."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from reliability_support import check_against_log, entity_records, entity_view, run_cli
from run_mode import Figures, Mode
from trickle import Trickle

from statestore import StateStore, StorageError, load_config
from tests.support.kafka import Topics, fast_producer, high_watermarks, produce_all
from tests.support.processes import Proc, free_port

pytestmark = pytest.mark.integration

VIEW = "crash"
KEYS = 40_000
_EXPECTED = re.compile(rf"bootstrap\.start view={VIEW} .* expected=(\d+)")


def stored_positions(config: Path) -> dict[int, int]:
    """The positions stored in the view (read-only); empty when there is no store yet."""
    try:
        with StateStore(load_config(config), read_only=True) as store:
            return dict(store.view(VIEW).slot.positions)
    except StorageError:
        return {}


@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_loses_nothing(
    topics: Topics, shared_bootstrap: str, tmp_path: Path, mode: Mode, figures: Figures
) -> None:
    """After many SIGKILLs of bootstrap and serve, each restart resumes from its stored offsets and the final view equals the log's reduction key by key."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    topic = topics.create(3, prefix="crash")
    producer = fast_producer(shared_bootstrap)
    seq = produce_all(producer, topic, entity_records(rng, mode.topic_records, keys=KEYS))
    config = entity_view(tmp_path, VIEW, topic, shared_bootstrap, port=free_port())
    trickle = Trickle(shared_bootstrap, topic, seed + 1, keys=KEYS, batch=200, interval=0.02)
    log = tmp_path / "runs.log"
    moments: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    resumed = 0
    finished_before_kill = 0
    kills = 0
    rounds = 0
    after: dict[int, int] = {}
    try:
        while kills < mode.kills:
            rounds += 1
            assert rounds <= mode.kills * 4, "too many rounds finished before they could be killed"
            if rounds > 1:
                burst = rng.randrange(3_000, 12_000)
                produce_all(producer, topic, entity_records(rng, burst, keys=KEYS, start=seq))
                seq += burst
            before = after
            highs = high_watermarks(topic, shared_bootstrap)
            command = rng.choice(["bootstrap", "serve"])
            commands[command] += 1
            proc = Proc(["-c", config, command], tmp_path, log)
            aim = rng.random()
            if aim < 0.3:
                # Anywhere: during start-up, opening the store, catching up or following.
                time.sleep(rng.uniform(0.05, 2.5))
            elif aim < 0.7 or command == "bootstrap":
                # While the catch-up applies batches.
                proc.wait_for_line("bootstrap.start", 60)
                time.sleep(rng.uniform(0.0, 0.8))
            else:
                # While following a stream of new records.
                proc.wait_for_line("bootstrap.done", 60)
                trickle.on.set()
                time.sleep(rng.uniform(0.1, 1.0))
            output = proc.output()
            if proc.alive():
                proc.kill()
                kills += 1
                if "bootstrap.start" not in output:
                    moments["starting"] += 1
                elif "bootstrap.done" not in output:
                    moments["catching up"] += 1
                else:
                    moments["following" if command == "serve" else "closing"] += 1
            else:
                code = proc.wait(10)
                assert command == "bootstrap" and code == 0, f"{command} exited {code}:\n{output}"
                finished_before_kill += 1
            trickle.pause()
            output = proc.output()
            assert "Traceback" not in output and " ERROR " not in output, output[-3000:]
            match = _EXPECTED.search(output)
            if match is not None:
                # The catch-up read exactly what was missing above the stored positions.
                missing = sum(high - before.get(p, 0) for p, high in highs.items())
                assert int(match.group(1)) == missing, (before, highs, match.group(0))
                if any(before.values()):
                    resumed += 1
                    assert missing < sum(highs.values()), "a restart read the topic from zero"
            after = stored_positions(config)
            for p, pos in before.items():
                assert after.get(p, 0) >= pos, f"partition {p} went back from {pos} to {after}"
    finally:
        trickle.pause()
        trickle.close()

    final = run_cli(["-c", config, "bootstrap"], tmp_path)
    assert final.returncode == 0, final.stderr
    check_against_log(
        config,
        VIEW,
        topic,
        shared_bootstrap,
        figures,
        "crash_anywhere",
        seed=seed,
        kills=kills,
        kill_moments=dict(moments),
        commands=dict(commands),
        rounds_finished_before_kill=finished_before_kill,
        restarts_resumed_from_stored_offsets=resumed,
    )
    assert resumed > 0
