"""A staging worker process: one :class:`~statestore.stage.Stager` and its reports.

The owner (``bulk``) starts it with a :class:`WorkerSpec`; it reads its pieces,
sends each staged file (and how far it has read, and any trouble) through its
pipe, and ends with ``done`` or ``error``. It stops when asked (SIGTERM), ignores
Ctrl-C (the owner decides), and exits at once when the owner is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .config import ViewConfig
from .errors import KafkaError, OffsetOutOfRangeError, StorageError, TopicMissingError
from .logs import configure_child
from .stage import Piece, Stager
from .workers import owner_gone

__all__ = ["WorkerSpec"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a staging worker process needs: picklable, no open handle."""

    worker: int
    view: ViewConfig
    kafka: dict[str, Any]
    registry: dict[str, Any]
    known_schemas: tuple[dict[int, dict[str, Any]], dict[bytes, int]] | None
    pieces: tuple[Piece, ...]
    out_dir: str
    budget_bytes: int
    batch_size: int
    log_level: int
    # The topic's partition count, for the view's partitioner check (0: not checked).
    partitions: int = 0

    def run(self, conn: Connection) -> None:
        worker_main(self, conn)


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """A bulk-load worker process: stage its pieces, report to the owner over *conn*."""
    configure_child(spec.log_level, f"bulk-worker-{spec.worker}")
    owner_pid = os.getppid()
    halted = threading.Event()
    # The owner decides when to stop: Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: halted.set())
    from .codecs import key_codec, value_codec
    from .kafka import KafkaClient
    from .partitioners import partitioner

    vc = spec.view
    schemas: Any = None
    hook = None
    if vc.uses_registry:
        from .registry_codecs import registry_codecs
        from .schemas import Schemas

        schemas = Schemas(None, spec.registry, known=spec.known_schemas)
        keys, values, hook = registry_codecs(vc, schemas)
    else:
        keys, values = key_codec(vc.key), value_codec(vc.value)

    def tell(msg: tuple[Any, ...]) -> None:
        try:
            conn.send(msg)
        except OSError:
            # The owner is gone (killed): nobody will ingest what this worker writes.
            os._exit(1)

    said: dict[str, float] = {}
    told = [0.0]

    def on_read(records: int) -> None:
        now = time.monotonic()
        if now - told[0] >= 0.1:
            told[0] = now
            tell(("read", spec.worker, records))

    def on_trouble(text: str) -> None:
        now = time.monotonic()
        if now - said.get(text, -1e9) >= 5.0:
            said[text] = now
            tell(("trouble", spec.worker, text))

    def stopped() -> bool:
        if owner_gone(owner_pid):
            # The owner is gone (killed): nobody will ingest what this worker writes.
            os._exit(1)
        return halted.is_set()

    client = KafkaClient(spec.kafka)
    client.on_error = lambda text, fatal: on_trouble(f"Kafka unreachable: {text}")
    reader = client.range_reader(f"statestore.{vc.name}.bulk{spec.worker}", vc.topic)
    stager = Stager(
        worker=spec.worker,
        topic=vc.topic,
        keys=keys,
        values=values,
        checks_values=vc.value != "bytes",
        tracks_schemas=vc.uses_registry,
        header_hook=hook,
        fail_fast=vc.on_error == "fail",
        out_dir=Path(spec.out_dir),
        budget_bytes=spec.budget_bytes,
        emit=lambda staged: tell(("staged", staged)),
        new_schemas=schemas.take_new if schemas is not None else None,
        on_trouble=on_trouble,
        on_read=on_read,
        batch_size=spec.batch_size,
        placement=partitioner(vc.partitioner) if vc.partitioner else None,
        partitions=spec.partitions,
    )
    try:
        failure = stager.run(reader, list(spec.pieces), stopped)
        tell(("done", spec.worker, failure))
    except OffsetOutOfRangeError as exc:
        tell(("error", spec.worker, "stale", str(exc)))
    except TopicMissingError as exc:
        tell(("error", spec.worker, "missing", str(exc)))
    except KafkaError as exc:
        tell(("error", spec.worker, "kafka", str(exc)))
    except StorageError as exc:
        tell(("error", spec.worker, "storage", str(exc)))
    except Exception as exc:
        log.exception("bulk.worker_crashed worker=%d", spec.worker)
        tell(("error", spec.worker, "fatal", f"bulk-load worker {spec.worker}: {exc!r}"))
    finally:
        reader.close()
        client.close()
        conn.close()
