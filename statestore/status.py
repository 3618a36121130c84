"""Status values: one truth for the CLI, the REST API and the metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "ClusterFacts",
    "LoadStatus",
    "PartitionStatus",
    "Partitioning",
    "ViewEvent",
    "ViewState",
    "ViewStatus",
]

ViewState = Literal[
    "starting", "bootstrapping", "ready", "rebuilding", "degraded", "failed", "stopped"
]


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition of a view's topic.

    ``position`` is the next offset the view will read (every offset below it is
    applied); ``end_offset`` the partition's high watermark when last seen;
    ``lag = end_offset - position``.
    """

    partition: int
    position: int
    end_offset: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class LoadStatus:
    """A bulk load under way (a first bootstrap, a rebuild's new copy).

    ``processes`` is the number of worker processes (0: read in the owning
    process); ``records_read`` counts this run's records, durable or not yet;
    ``offsets_left`` what is left to read below the end offsets of the start.
    """

    phase: Literal["reading", "merging"]
    processes: int
    records_read: int
    offsets_left: int
    started_at_ms: int


@dataclass(frozen=True, slots=True)
class ViewEvent:
    """A staleness event or a rebuild: when (ms since the epoch), its cause in a word
    (see :mod:`statestore.history`) and its reason."""

    at_ms: int
    cause: str
    reason: str


@dataclass(frozen=True, slots=True)
class Partitioning:
    """How the view's records sit against the partitioner it declares.

    ``misplaced`` counts the keyed records read in another partition than the
    partitioner gives their key; ``checked_from`` is empty when every record the view
    read was checked, else the positions the check began at (the partitioner was
    declared or changed after them). ``first`` is the first misplaced record the follow
    path met: partition, offset, key (base64) and the partition expected.
    """

    partitioner: str
    misplaced: int
    checked_from: dict[int, int] = field(default_factory=dict)
    first: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    """A partitioned cluster as one instance sees it, for its metrics."""

    members_alive: int  # this instance included
    rebalances: int  # assignment changes this instance took part in
    owned: dict[str, int]  # per view, partitions the group gave this instance
    serving: dict[str, int]  # per view, those of them it answers for


@dataclass(frozen=True, slots=True)
class ViewStatus:
    """A view at one moment.

    ``servable`` is true once this copy of the view has caught up at least once
    (persisted across restarts): reads may be served from it while it catches up again.
    ``rebuilds``, ``stale_events`` and the last of each are counted over every process
    that served the view (kept in the store).
    """

    name: str
    topic: str
    state: ViewState
    reason: str | None
    keys: int
    records_applied: int
    bytes_applied: int
    quarantined: int
    lag: int | None
    partitions: tuple[PartitionStatus, ...] = field(default_factory=tuple)
    bootstrap_seconds: float | None = None
    bootstrap_records: int = 0
    last_applied_at_ms: int | None = None
    generation: int = 0
    rebuilds: int = 0
    stale_events: int = 0
    servable: bool = False
    schema_entities: dict[int, int] = field(default_factory=dict)
    load: LoadStatus | None = None
    last_stale: ViewEvent | None = None
    last_rebuild: ViewEvent | None = None
    partitioning: Partitioning | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["partitions"] = [asdict(p) for p in self.partitions]
        data["load"] = asdict(self.load) if self.load is not None else None
        for name in ("last_stale", "last_rebuild"):
            event = getattr(self, name)
            data[name] = asdict(event) if event is not None else None
        data["schema_entities"] = {str(k): n for k, n in self.schema_entities.items()}
        if self.partitioning is not None:
            data["partitioning"]["checked_from"] = {
                str(p): o for p, o in self.partitioning.checked_from.items()
            }
        return data
