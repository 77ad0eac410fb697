"""The Kubernetes manifests (deploy/kubernetes/, docs/deploy.md#kubernetes): the policies every pod
must keep, and the wiring between the objects. The schemas are checked by kubernetes-validate in
`make lint`; this file checks what a schema cannot: that every pod runs locked down, that no secret
value is committed, and that the objects name each other correctly."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
IMAGE = "registry.example.com/data-access-governance"
# The image's commands, one per workload (docs/deploy.md#kubernetes).
COMMANDS = {"governance-web": ["web"], "governance-worker": ["worker"], "governance-beat": ["beat"]}
JOB_COMMAND = ["migrate"]
# Names that hold secrets: such a variable must never be given a literal value in a manifest.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY|KEYS|DATABASE_URL|REDIS_URL|BROKER_URL|CACHE_URL")
PLACEHOLDER = "REPLACE-ME"
# The one writable directory of every container (its root filesystem is read-only): an emptyDir.
SCRATCH = "/tmp"  # noqa: S108 (a path inside the pods, compared with the manifests, never opened here)


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _base() -> list[dict[str, Any]]:
    """The objects the base deploys, in the order its kustomization lists them."""
    kustomization = _documents(BASE / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in _documents(BASE / name)]


def _named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in _base() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} in the base"
    return found[0]


def _pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in _base():
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{doc['kind']} {doc['metadata']['name']}", doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            yield f"CronJob {doc['metadata']['name']}", doc["spec"]["jobTemplate"]["spec"]["template"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_the_kustomization_lists_every_manifest_of_the_base_and_nothing_else() -> None:
    listed = _documents(BASE / "kustomization.yaml")[0]["resources"]
    on_disk = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(listed) == len(set(listed))


def _commands() -> Any:
    """scripts/devstack_lib/commands.py, where `make lint`'s steps are."""
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.append(scripts)
    from devstack_lib import commands

    return commands


def test_the_lint_step_validates_every_manifest_strictly() -> None:
    """`make lint` runs kubernetes-validate --strict on every file of objects under deploy/kubernetes."""
    step = next(step for step in _commands().lint_steps() if step.title.startswith("kubernetes-validate"))
    assert "--strict" in step.argv
    objects = {p.relative_to(ROOT).as_posix() for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert objects <= set(step.argv)
    assert "deploy/kubernetes/base/web-deployment.yaml" in objects
    assert "deploy/kubernetes/examples/secret.example.yaml" in objects


def test_kubernetes_validate_rejects_a_misspelt_security_field(tmp_path: Path) -> None:
    """The lint step fails on a typo that would silently drop a policy, not only on a broken file."""
    deployment = _named("Deployment", "governance-web")
    text = yaml.safe_dump(deployment).replace("readOnlyRootFilesystem", "readOnlyRootFileSystem")
    (tmp_path / "typo.yaml").write_text(text)
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(deployment))
    validate = str(Path(sys.executable).parent / "kubernetes-validate")
    version = _commands().KUBERNETES_VERSION
    good = subprocess.run(
        [validate, "--strict", "-k", version, str(tmp_path / "good.yaml")], capture_output=True, text=True, check=False
    )
    assert good.returncode == 0, good.stdout + good.stderr
    typo = subprocess.run(
        [validate, "--strict", "-k", version, str(tmp_path / "typo.yaml")], capture_output=True, text=True, check=False
    )
    assert typo.returncode != 0
    assert "readOnlyRootFileSystem" in typo.stdout + typo.stderr


@pytest.mark.parametrize("workload", [name for name, _ in _pod_templates()])
def test_every_pod_runs_locked_down(workload: str) -> None:
    pod = dict(_pod_templates())[workload]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    # Numeric (a name cannot be checked against runAsNonRoot) and above 10000: no host user's id.
    assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 10000
    assert isinstance(context["runAsGroup"], int) and context["runAsGroup"] > 10000
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "governance"
    for namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(namespace), f"{workload}: {namespace}"
    tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for container in _containers(pod):
        where = f"{workload}, container {container['name']}"
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["allowPrivilegeEscalation"] is False, where
        assert security.get("privileged", False) is False, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert not security["capabilities"].get("add"), where
        assert security.get("runAsUser", context["runAsUser"]) != 0, where
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert mounts.get(SCRATCH) in tmp_volumes, f"{where}: {SCRATCH} is not an emptyDir"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where}: {kind}"


@pytest.mark.parametrize("workload", [name for name, _ in _pod_templates()])
def test_every_container_runs_the_portals_image_at_a_pinned_release(workload: str) -> None:
    pod = dict(_pod_templates())[workload]["spec"]
    for container in _containers(pod):
        image = container["image"]
        if "@" in image:
            name, digest = image.split("@", 1)
            assert digest.startswith("sha256:"), image
        else:
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest", f"{workload}: {image} is not pinned"
        assert name == IMAGE, image
        assert container["imagePullPolicy"] == "IfNotPresent"
    kustomization = _documents(BASE / "kustomization.yaml")[0]
    (override,) = kustomization["images"]
    assert override["name"] == IMAGE and override["newTag"] != "latest"


@pytest.mark.parametrize("workload", [name for name, _ in _pod_templates()])
def test_every_container_reads_the_config_and_the_secret_and_no_literal_secret(workload: str) -> None:
    pod = dict(_pod_templates())[workload]["spec"]
    for container in _containers(pod):
        sources = container["envFrom"]
        assert {"configMapRef": {"name": "governance-config"}} in sources
        assert {"secretRef": {"name": "governance-secrets"}} in sources
        for variable in container.get("env", []):
            if SECRET_NAME.search(variable["name"]):
                assert "value" not in variable, f"{workload}: {variable['name']} has a literal value"


def test_no_secret_value_is_committed() -> None:
    assert not [doc for doc in _base() if doc["kind"] == "Secret"], "a Secret among the deployed manifests"
    config = _named("ConfigMap", "governance-config")["data"]
    assert not [key for key in config if SECRET_NAME.search(key)], "a secret in the ConfigMap"
    for path in KUBE.rglob("*.yaml"):
        for doc in _documents(path):
            if doc.get("kind") == "Secret":
                values = {**doc.get("stringData", {}), **doc.get("data", {})}
                assert values, path
                for key, value in values.items():
                    assert PLACEHOLDER in value, f"{path.name}: {key} holds something else than a placeholder"


def test_the_example_secret_holds_every_key_the_production_settings_require() -> None:
    (secret,) = _documents(KUBE / "examples" / "secret.example.yaml")
    assert secret["metadata"]["name"] == "governance-secrets"
    config = _named("ConfigMap", "governance-config")["data"]
    required = {"SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "AUDIT_HMAC_KEY", "DATABASE_URL", "REDIS_URL"}
    assert required <= set(secret["stringData"])
    assert config["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    assert config["ALLOWED_HOSTS"]
    production = (ROOT / "config" / "settings" / "production.py").read_text()
    for name in re.findall(r'env\.\w+\("([A-Z_]+)"\)', production):  # those without a default
        assert name in secret["stringData"] or name in config, f"{name}: required, but nowhere"


def test_web_serves_on_8000_with_probes_on_the_health_endpoints() -> None:
    deployment = _named("Deployment", "governance-web")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (web,) = deployment["spec"]["template"]["spec"]["containers"]
    assert web["args"] == COMMANDS["governance-web"]
    ports = {p["name"]: p["containerPort"] for p in web["ports"]}
    assert ports == {"http": 8000}
    assert web["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert web["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert web["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}


def test_each_worker_is_probed_through_the_broker() -> None:
    deployment = _named("Deployment", "governance-worker")
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    assert worker["args"] == COMMANDS["governance-worker"]
    probe = " ".join(worker["livenessProbe"]["exec"]["command"])
    assert "inspect ping" in probe and "celery@$HOSTNAME" in probe
    # Longer than the tasks' hard time limit (CELERY_TASK_TIME_LIMIT, 90 s): warm shutdown finishes them.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 90


def test_each_worker_serves_its_metrics_on_a_named_port_only_prometheus_reaches() -> None:
    """Web and worker pods share no metrics files: a worker serves what it observes itself
    (observability/exporter.py), and Prometheus, only Prometheus, may reach that port."""
    template = _named("Deployment", "governance-worker")["spec"]["template"]
    (worker,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports == {"metrics": 9810}
    assert {"name": "WORKER_METRICS_PORT", "value": "9810"} in worker["env"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9810"
    allow = _named("NetworkPolicy", "governance-worker-metrics")
    assert _selects(allow["spec"]["podSelector"]["matchLabels"], template["metadata"]["labels"])
    (rule,) = allow["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["metrics"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def test_beat_is_one_pod_that_is_never_two() -> None:
    deployment = _named("Deployment", "governance-beat")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (beat,) = deployment["spec"]["template"]["spec"]["containers"]
    assert beat["args"] == COMMANDS["governance-beat"]
    # No autoscaler may add a second one, and no budget may block drains of the single one.
    for doc in _base():
        if doc["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
            target = doc["spec"].get("scaleTargetRef", {}).get("name")
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert target != "governance-beat"
            assert not _selects(doc["spec"].get("selector", {}).get("matchLabels", {"-": "-"}), labels)


def test_migrations_run_once_in_a_job_and_every_workload_waits_for_them() -> None:
    job = _named("Job", "governance-migrate")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (migrate,) = pod["containers"]
    assert migrate["args"] == JOB_COMMAND
    for name in COMMANDS:
        template = _named("Deployment", name)["spec"]["template"]["spec"]
        (wait,) = template["initContainers"]
        assert "manage.py migrate --check" in " ".join(wait["command"])
        assert wait["image"] == template["containers"][0]["image"]


@pytest.mark.parametrize("name", ["governance-web", "governance-worker"])
def test_web_and_workers_have_a_disruption_budget_selecting_them(name: str) -> None:
    budget = _named("PodDisruptionBudget", name)
    deployment = _named("Deployment", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert _selects(budget["spec"]["selector"]["matchLabels"], labels)
    budget_spec = budget["spec"]
    if "minAvailable" in budget_spec:
        assert budget_spec["minAvailable"] < deployment["spec"]["replicas"], "the budget would block every drain"
    else:
        assert budget_spec["maxUnavailable"] >= 1


def test_every_deployment_selects_its_own_pods_only() -> None:
    deployments = [doc for doc in _base() if doc["kind"] == "Deployment"]
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        chosen = [
            d["metadata"]["name"]
            for d in deployments
            if _selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert chosen == [deployment["metadata"]["name"]]


def test_the_service_ingress_and_network_policy_reach_the_web_port() -> None:
    web = _named("Deployment", "governance-web")["spec"]["template"]
    service = _named("Service", "governance-web")
    assert _selects(service["spec"]["selector"], web["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    ingress = _named("Ingress", "governance-web")
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "governance-web", "port": {"name": port["name"]}}
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [rule["host"]] and tls["secretName"]
    allow = _named("NetworkPolicy", "governance-web-ingress")
    assert _selects(allow["spec"]["podSelector"]["matchLabels"], web["metadata"]["labels"])
    assert [p["port"] for p in allow["spec"]["ingress"][0]["ports"]] == [8000]
    deny = _named("NetworkPolicy", "governance-deny-ingress")
    assert deny["spec"]["ingress"] == [] and deny["spec"]["policyTypes"] == ["Ingress"]
    for name in (*COMMANDS, "governance-migrate"):
        kind = "Job" if name == "governance-migrate" else "Deployment"
        labels = _named(kind, name)["spec"]["template"]["metadata"]["labels"]
        assert _selects(deny["spec"]["podSelector"]["matchLabels"], labels), f"{name} accepts any connection"


def test_the_example_overlay_refers_to_what_exists() -> None:
    overlay = KUBE / "overlays" / "example"
    kustomization = _documents(overlay / "kustomization.yaml")[0]
    assert [(overlay / r).resolve() for r in kustomization["resources"]] == [BASE.resolve()]
    (image,) = kustomization["images"]
    assert image["name"] == IMAGE and image["newTag"] != "latest"
    for patch in kustomization["patches"]:
        if "path" in patch:
            (doc,) = _documents(overlay / patch["path"])
            _named(doc["kind"], doc["metadata"]["name"])
        else:
            _named(patch["target"]["kind"], patch["target"]["name"])
