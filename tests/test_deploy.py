"""deploy/: the Kubernetes example and the Dockerfile must fit the app they run.

No image can be built or run here (no container engine): these tests hold the
manifests to the app itself -- its config loads, ports agree from the config to
the Service, the probes name routes that answer without a token the way a probe
needs, the grace period covers the shutdown, the user matches the image's.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from statestore import StateStore, load_config
from statestore.api import HTTP_DRAIN_S, create_app

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "deploy" / "kubernetes.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
TOKEN = "t" * 32


@pytest.fixture(scope="module")
def kinds() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFESTS.read_text(encoding="utf-8")) if d]
    return {d["kind"]: d for d in docs}


@pytest.fixture
def config_file(kinds: dict[str, dict[str, Any]], tmp_path: Path) -> Path:
    path = tmp_path / "statestore.toml"
    path.write_text(kinds["ConfigMap"]["data"]["statestore.toml"], encoding="utf-8")
    return path


def _container(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_config_loads_and_ports_agree_from_config_to_service(
    kinds: dict[str, dict[str, Any]], config_file: Path
) -> None:
    config = load_config(config_file, environ={})
    container = _container(kinds)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.api.port}
    service = kinds["Service"]["spec"]
    assert service["selector"] == kinds["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(config.api.port, "http")]
    annotations = kinds["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.api.port)
    expose = re.search(r"^EXPOSE (\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert expose and int(expose.group(1)) == config.api.port
    # The store lives on the StatefulSet's volume, the config on the ConfigMap's.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(config.store.path).startswith(mounts["data"] + "/")
    assert container["args"][:2] == ["-c", f"{mounts['config']}/statestore.toml"]


def test_probes_name_routes_that_answer_without_a_token(
    kinds: dict[str, dict[str, Any]], config_file: Path
) -> None:
    """The app refuses a wildcard bind without tokens; with the manifest's token from its
    Secret, the probes' and the scrape's paths still answer a caller without one."""
    config = load_config(config_file, environ={})
    container = _container(kinds)
    env = {e["name"]: e for e in container["env"]}
    for token in config.api.tokens:
        assert "secretKeyRef" in env[token.env]["valueFrom"], token.env
    app = create_app(config, environ={t.env: TOKEN for t in config.api.tokens}, start=False)
    probes = {
        k: container[k]["httpGet"] for k in ("readinessProbe", "livenessProbe", "startupProbe")
    }
    assert {p["port"] for p in probes.values()} == {"http"}
    client = TestClient(app, base_url="http://localhost")  # no lifespan: no store opened
    assert client.get(probes["livenessProbe"]["path"]).status_code == 200
    assert client.get(probes["startupProbe"]["path"]).status_code == 200
    # Readiness answers 503 until every view has caught up (here: no store at all).
    assert client.get(probes["readinessProbe"]["path"]).status_code == 503
    assert probes["readinessProbe"]["path"] == "/readyz"
    metrics = kinds["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    assert client.get(metrics["prometheus.io/path"]).status_code == 200
    assert client.get("/views/deliveries/entities/k").status_code == 401


def test_grace_period_covers_the_shutdown_and_the_user_is_the_images(
    kinds: dict[str, dict[str, Any]],
) -> None:
    pod = kinds["StatefulSet"]["spec"]["template"]["spec"]
    stop_timeout = inspect.signature(StateStore.stop).parameters["timeout"].default
    assert pod["terminationGracePeriodSeconds"] > HTTP_DRAIN_S + stop_timeout
    user = re.search(r"^USER (\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert user and pod["securityContext"]["runAsUser"] == int(user.group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    claims = kinds["StatefulSet"]["spec"]["volumeClaimTemplates"]
    assert [c["spec"]["accessModes"] for c in claims] == [["ReadWriteOnce"]]
