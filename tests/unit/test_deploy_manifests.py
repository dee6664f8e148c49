"""deploy/: the compose file and the kustomize base keep the invariants operators rely on.

Docker and a cluster are not available to CI, so the files are parsed (and the kustomize base rendered
with ``kubectl kustomize``) and checked: every process has a probe, one image everywhere, no secret
value inline, non-root with a read-only root filesystem, Redis with AOF fsynced every second, and
migrate finished before web, worker and beat start. The probes' commands themselves are run against
real processes in tests/e2e/test_production_parity.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
KUSTOMIZE_BASE = ROOT / "deploy" / "k8s" / "base"
GATEWAY_PROCESSES = ("migrate", "web", "worker", "beat")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|MASTER_KEY|ENCRYPTION_KEYS|DATABASE_URL|REDIS_URL")
# What a pasted credential looks like: provider/gateway keys, long random strings, URLs with a password.
SECRET_VALUE = re.compile(r"sk-[A-Za-z0-9_-]{8,}|[A-Za-z0-9+/_=-]{32,}|://[^/\s:@]+:[^/\s@$]+@")


def looks_secret(value: str) -> bool:
    """A value is a secret unless it is only a reference resolved at deploy time (``${VAR}``)."""
    without_references = re.sub(r"\$\{[^}]*\}", "", value)
    return bool(SECRET_VALUE.search(without_references))


# --- docker compose ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_every_process_from_one_image(compose):
    services = compose["services"]
    assert {"db", "redis", *GATEWAY_PROCESSES} <= set(services)
    assert {services[name]["command"][0] for name in GATEWAY_PROCESSES} == set(GATEWAY_PROCESSES)
    assert len({services[name]["image"] for name in GATEWAY_PROCESSES}) == 1
    assert services["web"]["deploy"]["replicas"] == 2
    assert services["migrate"]["restart"] == "no"


def test_compose_waits_for_migrate_and_healthy_servers(compose):
    services = compose["services"]
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, name
    assert services["migrate"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("db", "redis", "web", "worker", "beat"):
        assert services[name]["healthcheck"]["test"], f"{name} has no health check"


def test_compose_redis_keeps_the_outbox_with_aof_every_second(compose):
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert any(volume.endswith(":/data") for volume in compose["services"]["redis"]["volumes"])


def test_compose_gateway_containers_are_non_root_and_read_only(compose):
    for name in GATEWAY_PROCESSES:
        service = compose["services"][name]
        assert str(service["user"]).split(":")[0] not in ("0", "root"), name
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        prometheus_dir = service["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        assert prometheus_dir.startswith("/tmp/"), f"{name}: metrics directory outside the writable /tmp"


def test_compose_has_no_inline_secret(compose):
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        for variable, value in environment.items():
            value = str(value)
            assert not looks_secret(value), f"{name}.{variable} carries an inline secret"
            if SECRET_NAME.search(variable) and variable not in ("DATABASE_URL", "REDIS_URL"):
                assert value.startswith("${"), f"{name}.{variable} must be a ${{VAR}} reference"


def test_the_secret_check_catches_a_pasted_secret():
    assert looks_secret("sk-gw-" + "a1B2" * 10)
    assert looks_secret("postgres://gateway:hunter2hunter2@db:5432/gateway")
    assert not looks_secret("postgres://gateway:${POSTGRES_PASSWORD:?set it}@db:5432/gateway")
    assert not looks_secret("gateway_project.settings.production")


# --- kustomize ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize base cannot be rendered here")
    result = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE_BASE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(rendered: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in rendered if doc["kind"] == kind}


def workloads(rendered: list[dict]) -> dict[str, dict]:
    return {**by_kind(rendered, "Deployment"), **by_kind(rendered, "Job")}


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_kustomize_renders_every_process_from_one_image(rendered):
    found = workloads(rendered)
    assert set(found) == {"gateway-web", "gateway-worker", "gateway-beat", "gateway-migrate"}
    assert {c["args"][0] for w in found.values() for c in containers(w)} == set(GATEWAY_PROCESSES)
    images = {c["image"] for w in found.values() for c in containers(w)}
    assert len(images) == 1, images


def test_kustomize_web_probes_autoscaler_and_disruption_budget(rendered):
    web = by_kind(rendered, "Deployment")["gateway-web"]
    (container,) = containers(web)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    port_names = {p["name"] for p in container["ports"]}
    assert {container["readinessProbe"]["httpGet"]["port"], container["livenessProbe"]["httpGet"]["port"]} <= port_names
    pod_labels = web["spec"]["template"]["metadata"]["labels"]

    (hpa,) = by_kind(rendered, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway-web"}
    assert hpa["spec"]["minReplicas"] >= 2
    (pdb,) = by_kind(rendered, "PodDisruptionBudget").values()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (service,) = by_kind(rendered, "Service").values()
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_kustomize_worker_and_beat_have_liveness_and_beat_is_single(rendered):
    deployments = by_kind(rendered, "Deployment")
    for name in ("gateway-worker", "gateway-beat"):
        (container,) = containers(deployments[name])
        assert container["livenessProbe"]["exec"]["command"], name
    beat = deployments["gateway-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in rendered if d["metadata"]["name"] == "gateway-beat"}


def test_kustomize_migrate_job_runs_before_the_rollout(rendered):
    job = by_kind(rendered, "Job")["gateway-migrate"]
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PreSync"
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # The documented plain-kubectl step applies only these labels first (docs/operations.md).
    first = {
        d["kind"] for d in rendered if d["metadata"]["labels"]["app.kubernetes.io/component"] in ("config", "migrate")
    }
    assert first == {"ConfigMap", "Job"}


def test_kustomize_secrets_are_only_referenced(rendered):
    assert by_kind(rendered, "Secret") == {}, "create gateway-secrets outside git; never render one"
    (configmap,) = by_kind(rendered, "ConfigMap").values()
    for variable, value in configmap["data"].items():
        assert not SECRET_NAME.search(variable), f"{variable} belongs in the Secret"
        assert not looks_secret(str(value)), variable
    for name, workload in workloads(rendered).items():
        for container in containers(workload):
            refs = {(next(iter(ref)), next(iter(ref.values()))["name"]) for ref in container["envFrom"]}
            assert refs == {("configMapRef", "gateway-config"), ("secretRef", "gateway-secrets")}, name
            for env in container.get("env", []):
                assert "value" not in env or not (SECRET_NAME.search(env["name"]) or looks_secret(env["value"]))


def test_kustomize_every_container_is_non_root_read_only_and_bounded(rendered):
    (configmap,) = by_kind(rendered, "ConfigMap").values()
    prometheus_dir = configmap["data"]["PROMETHEUS_MULTIPROC_DIR"]
    for name, workload in workloads(rendered).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in containers(workload):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security.get("runAsUser", pod["securityContext"]["runAsUser"]) != 0, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp is not an emptyDir"
            # The entrypoint empties the metrics directory with rm -rf: it must sit inside a mount, not be one.
            assert prometheus_dir.startswith("/tmp/") and prometheus_dir not in mounts, name


def test_kustomize_and_compose_check_worker_and_beat_with_the_same_command(rendered):
    from tests.support.production import compose_healthcheck

    deployments = by_kind(rendered, "Deployment")
    for name in ("worker", "beat"):
        (container,) = containers(deployments[f"gateway-{name}"])
        assert container["livenessProbe"]["exec"]["command"] == compose_healthcheck(name), name
