"""platform/k8s: every manifest valid for a pinned Kubernetes, the KEDA ScaledObjects valid for
the committed schema, and wired to what the code really runs (commands, probes, Redis keys)."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml

from inference import pool_protocol as wire
from inference.transport import DeploymentSpec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "platform" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # pinned: the oldest release the manifests promise to fit
KEDA_SCHEMA = json.loads((K8S / "schemas" / "keda-scaledobject-v1alpha1.json").read_text())


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization_files(folder: Path) -> list[Path]:
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    return [folder / name for name in listed if not (folder / name).is_dir()]


BUILT_IN = kustomization_files(K8S)
KEDA = kustomization_files(K8S / "keda")
RESOURCES = [d for path in BUILT_IN for d in documents(path)]
SCALED_OBJECTS = [d for path in KEDA for d in documents(path)]


def kubernetes_errors(resource: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc)]
    return []


def keda_errors(resource: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(KEDA_SCHEMA).iter_errors(resource)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in RESOURCES if d["kind"] == kind}


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    pod = resource["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def test_every_yaml_file_is_in_a_kustomization() -> None:
    on_disk = {p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk == set(BUILT_IN) | set(KEDA)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_is_valid_for_the_pinned_kubernetes(resource: dict[str, Any]) -> None:
    assert kubernetes_errors(resource) == []


def test_the_scaled_objects_are_valid_for_the_committed_keda_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(KEDA_SCHEMA)
    assert {d["kind"] for d in SCALED_OBJECTS} == {"ScaledObject"}
    for scaled in SCALED_OBJECTS:
        assert keda_errors(scaled) == [], scaled["metadata"]["name"]


def test_a_broken_manifest_fails_kubernetes_validation() -> None:
    web = copy.deepcopy(by_kind("Deployment")["modelhub-web"])
    web["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPortt"] = 8000
    assert kubernetes_errors(web)  # strict: unknown field
    web = copy.deepcopy(by_kind("Deployment")["modelhub-web"])
    web["spec"]["replicas"] = "two"
    assert kubernetes_errors(web)


def test_a_broken_scaled_object_fails_the_keda_schema() -> None:
    scaled = copy.deepcopy(SCALED_OBJECTS[0])
    redis_trigger = next(t for t in scaled["spec"]["triggers"] if t["type"] == "redis")
    del redis_trigger["metadata"]["listName"]
    assert any("listName" in e for e in keda_errors(scaled))
    scaled = copy.deepcopy(SCALED_OBJECTS[0])
    scaled["spec"]["maxReplicas"] = 8  # the HPA's name, not KEDA's
    assert keda_errors(scaled)
    scaled = copy.deepcopy(SCALED_OBJECTS[0])
    del scaled["spec"]["scaleTargetRef"]
    assert keda_errors(scaled)


def test_every_container_asks_for_resources_and_runs_as_the_image_user() -> None:
    for name, deployment in {**by_kind("Deployment"), **by_kind("Job")}.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 10001, name  # platform/Dockerfile's modelhub user
        for container in containers(deployment):
            assert container["resources"]["requests"]["cpu"], (name, container["name"])
            assert container["resources"]["requests"]["memory"], (name, container["name"])


def test_web_is_probed_on_the_health_endpoints_with_an_allowed_host() -> None:
    web = by_kind("Deployment")["modelhub-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["readinessProbe"]["httpGet"]["path"] == "/v2/health/live"  # the pod's own: listening = warm
    assert web["livenessProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    allowed = by_kind("ConfigMap")["modelhub-env"]["data"]["MODELHUB_ALLOWED_HOSTS"].split(",")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        headers = {h["name"]: h["value"] for h in web[probe]["httpGet"]["httpHeaders"]}
        assert headers["Host"] in allowed, probe
    assert (
        by_kind("Service")["modelhub-web"]["spec"]["selector"]
        == by_kind("Deployment")["modelhub-web"]["spec"]["selector"]["matchLabels"]
    )


def test_beat_is_one_pod_replaced_not_rolled() -> None:
    beat = by_kind("Deployment")["modelhub-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"


def test_gpu_workers_land_on_gpu_nodes_with_a_gpu_each() -> None:
    gpu = by_kind("Deployment")["modelhub-inference-worker-gpu"]
    pod = gpu["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    command = container["command"]
    assert command[command.index("--device") + 1] == "gpu"


def test_every_pod_that_reads_artifacts_mounts_the_shared_claim() -> None:
    claim = by_kind("PersistentVolumeClaim")["modelhub-artifacts"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    store = by_kind("ConfigMap")["modelhub-env"]["data"]["MODELHUB_ARTIFACT_STORE"]
    for name in ("modelhub-web", "modelhub-worker", "modelhub-inference-worker-cpu", "modelhub-inference-worker-gpu"):
        mounts = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert store in [m["mountPath"] for m in mounts], name


def test_web_and_celery_workers_share_the_batch_store() -> None:
    claim = by_kind("PersistentVolumeClaim")["modelhub-batch"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    store = by_kind("ConfigMap")["modelhub-env"]["data"]["MODELHUB_BATCH_STORE"]
    for name in ("modelhub-web", "modelhub-worker"):  # uploads in, chunks scored, results out
        pod = by_kind("Deployment")[name]["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert any(path == store and claims[volume] == "modelhub-batch" for volume, path in mounts.items()), name


def load_script(path: Path) -> types.ModuleType:
    loader = importlib.machinery.SourceFileLoader(path.name.replace("-", "_"), str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test_every_container_command_exists_in_the_repository() -> None:
    commands = load_script(ROOT / "platform" / "compose-check").CommandCheck(ROOT)
    for resource in [*by_kind("Deployment").values(), *by_kind("Job").values()]:
        for container in containers(resource):
            commands.command_exists(f"{resource['metadata']['name']}/{container['name']}", container["command"])
    assert commands.problems == []


def test_the_scaled_objects_scale_real_deployments_on_the_lists_the_workers_consume() -> None:
    deployments = by_kind("Deployment")
    spec = types.SimpleNamespace(deployment_id=17)
    queue_of_deployment_17 = wire.queue_key(DeploymentSpec.key.fget(spec))  # what web pushes, workers pop
    pattern = re.escape(queue_of_deployment_17).replace("17", r"\d+")
    for scaled in SCALED_OBJECTS:
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert target in deployments and scaled["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
        lists = [t["metadata"]["listName"] for t in scaled["spec"]["triggers"] if t["type"] == "redis"]
        assert lists and all(re.fullmatch(pattern, name) for name in lists), lists


@pytest.fixture
def assigned(settings: Any) -> Any:
    client = redis.Redis.from_url(settings.REDIS_URL)
    key = wire.assign_key("cpu")
    client.hset(key, mapping={"d903": "{}", "d904": "{}"})
    yield settings.REDIS_URL
    client.hdel(key, "d903", "d904")


def test_keda_triggers_writes_a_valid_scaled_object_with_a_trigger_per_assigned_deployment(assigned: str) -> None:
    done = subprocess.run(
        [sys.executable, str(K8S / "keda-triggers"), "--device", "cpu", "--redis-url", assigned],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    scaled = yaml.safe_load(done.stdout)
    assert keda_errors(scaled) == []
    lists = [t["metadata"]["listName"] for t in scaled["spec"]["triggers"] if t["type"] == "redis"]
    assert {wire.queue_key("d903"), wire.queue_key("d904")} <= set(lists)
    assert wire.queue_key("d1") not in lists  # the committed example is replaced, not kept
    assert any(t["type"] == "cpu" for t in scaled["spec"]["triggers"])


@pytest.mark.integration
def test_the_inference_worker_probe_finds_a_live_workers_heartbeat(settings: Any, tmp_path: Path) -> None:
    """The probe command of the manifest, run as the kubelet would, against a real worker."""
    container = by_kind("Deployment")["modelhub-inference-worker-cpu"]["spec"]["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]["exec"]["command"]
    assert container["livenessProbe"]["exec"]["command"] == probe
    assert probe[0] == "python"
    probe = [sys.executable, *probe[1:]]  # the image's python: this environment's here
    env = {**os.environ, "REDIS_URL": settings.REDIS_URL, "MODELHUB_WORKER_ID": f"pod-{os.getpid()}"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, *container["command"][1:]], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        other_pod = {**env, "MODELHUB_WORKER_ID": "some-other-pod"}
        assert subprocess.run(probe, env=other_pod, cwd=ROOT, timeout=60).returncode == 1
        deadline = time.monotonic() + 90
        while subprocess.run(probe, env=env, cwd=ROOT, timeout=60).returncode != 0:
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(30)
