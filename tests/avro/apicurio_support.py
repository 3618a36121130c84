"""Records written by Apicurio Registry's own Java serializers, for the framing tests.

The producer (tests/avro/java: a pom.xml and one class) is built with Maven once per
serde line into var/apicurio-producer/<line> and rebuilt only when its sources change;
it writes to the real broker against the real local registry (Apicurio 3, whose native
v3 and v2 APIs the 3.x and 2.x serdes talk to).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import REPO
from tests.support.registry import REGISTRY_URL

JAVA_DIR = REPO / "tests" / "avro" / "java"
BUILD_DIR = Path(os.environ.get("STATESTORE_VAR", REPO / "var")) / "apicurio-producer"
BASE_URL = REGISTRY_URL.split("/apis/", 1)[0]
# The serde lines: Maven profile -> the registry API its client speaks.
LINES = {"serde3": f"{BASE_URL}/apis/registry/v3", "serde2": f"{BASE_URL}/apis/registry/v2"}
LEGACY_8BYTE = "io.apicurio.registry.serde.Legacy8ByteIdHandler"


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([JAVA_DIR / "pom.xml", *JAVA_DIR.rglob("*.java")]):
        digest.update(path.relative_to(JAVA_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build(line: str) -> list[str]:
    """The java command line that runs the producer of serde *line* (built when stale).

    A build goes to a directory named for the sources' digest, under a lock, so test
    runs side by side share one build and never see a half-written one.
    """
    digest = _sources_digest()
    out = BUILD_DIR / f"{line}-{digest[:16]}"
    stamp = out / "built"
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / f"{line}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            mvn = shutil.which("mvn")
            if mvn is None:
                raise AssertionError("Maven (mvn) and a JDK 17 are needed to build the producer")
            shutil.rmtree(out, ignore_errors=True)
            cmd = [
                mvn, "-B", "-q", "-P", line, f"-Dout={out}", "compile",
                "dependency:build-classpath", f"-Dmdep.outputFile={out / 'classpath.txt'}",
            ]  # fmt: skip
            done = subprocess.run(cmd, cwd=JAVA_DIR, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise AssertionError(f"building the {line} producer failed:\n{done.stdout[-4000:]}")
            stamp.write_text(digest)
    classpath = f"{out / 'classes'}:{(out / 'classpath.txt').read_text().strip()}"
    return ["java", "-cp", classpath, "statestore.harness.Produce"]


@dataclass(frozen=True)
class Sent:
    """What the Java producer sent, in order: (key, value) in Avro's JSON form."""

    records: list[tuple[Any, dict[str, Any]]]

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last value per key, keyed by the key's JSON text as a view addresses it."""
        return {json.dumps(k, sort_keys=True): v for k, v in self.records}


def produce(
    command: list[str],
    line: str,
    bootstrap: str,
    topic: str,
    out: Path,
    *props: str,
    count: int = 6,
    evolve: bool = True,
    key: str = "avro",
) -> Sent:
    """Run the producer of *line* with serde properties *props*; what it sent."""
    args = [bootstrap, topic, LINES[line], str(out), str(count), str(evolve).lower(), key]
    done = subprocess.run([*command, *args, *props], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise AssertionError(f"the {line} producer failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(row) for row in lines]
    return Sent([(r["key"], r["value"]) for r in records])
