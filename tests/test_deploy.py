"""The deployment material, checked without a Docker engine or kubectl (neither runs here).

Dockerfile, compose stack, Kubernetes manifests (built by tests/kustomize.py and validated
against the Kubernetes JSON schemas of `kubernetes-validate`), Prometheus rules and the Grafana
dashboard: parsed, cross-referenced, and held against the running gateway's /metrics.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry, generate_latest

from gateway.app import METRICS
from gateway.config import settings_from_mapping
from gateway.metrics import CheckpointerMetrics, Metrics
from tests.conftest import Stack
from tests.kustomize import build, find, load_documents, pod_spec

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"
# Metrics that neither this gateway nor the other branches export: Prometheus' own `up`, and
# the Kafka exporter's (Strimzi) under-replication count.
EXTERNAL_METRICS = {"up", "kafka_server_replicamanager_underreplicatedpartitions"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "KafkaTopic", "ExternalSecret"}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|(^|_)KEY($|_)", re.IGNORECASE)


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def test_dockerfile_is_slim_pinned_non_root_with_a_health_check() -> None:
    instructions = dockerfile_instructions()
    args = {}
    for word, rest in instructions:
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    stages: list[list[tuple[str, str]]] = []
    for word, rest in instructions:
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    assert len(stages) >= 2, "a build stage and a slim runtime stage"
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage[0][1].split()[0])
        repository, _, tag = image.partition(":")
        assert repository == "python"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), f"base pinned to a release: {image}"
    final = stages[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the runtime stage switches to a user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) >= 1000
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in final)
    assert not any(word in ("ADD",) for word, _ in instructions), "COPY only, no remote ADD"
    assert any("requirements.lock" in rest for word, rest in instructions if word == "RUN")
    for word, rest in instructions:
        if word == "COPY" and "--from" not in rest:
            for source in shlex.split(rest)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: missing"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored
    assert ".blauweknop" in ignored, "the development PKI never goes into an image"


def test_lock_pins_every_runtime_dependency_within_pyproject() -> None:
    pins = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        if requirement.marker is not None and not requirement.marker.evaluate(
            {"sys_platform": "linux"}
        ):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but not in deploy/requirements.lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {spec}"
        if "binary" in requirement.extras:
            assert canonicalize_name(f"{name}-binary") in pins
    # The lock is the venv's closure: every package it installs is pinned.
    sys.path.insert(0, str(DEPLOY / "dev"))
    try:
        import lock  # type: ignore[import-not-found]

        closure = lock.closure()
    finally:
        sys.path.remove(str(DEPLOY / "dev"))
    assert set(closure) == set(pins), "regenerate: .venv/bin/python deploy/dev/lock.py"


# --- compose ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_stack_has_the_promised_services_and_every_reference_resolves(
    tmp_path: Path,
) -> None:
    stack = compose()
    services: dict[str, Any] = stack["services"]
    brokers = [
        s
        for s in services.values()
        if "kafka" in str(s.get("image", "")) and "KAFKA_NODE_ID" in s.get("environment", {})
    ]
    assert len(brokers) == 3
    ids = {b["environment"]["KAFKA_NODE_ID"] for b in brokers}
    assert ids == {"1", "2", "3"}
    for broker in brokers:
        env = broker["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(v.split("@")[0] for v in voters) == ["1", "2", "3"]
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    gateways = [n for n, s in services.items() if s.get("environment", {}).get("BLAUWEKNOP_PORT")]
    assert len(gateways) >= 2, "two gateway replicas"
    for name in ("postgres", "sandboxes", "prometheus", "grafana"):
        assert name in services

    result = subprocess.run(
        [str(DEPLOY / "dev" / "compose-secrets.sh")],
        env={**os.environ, "SECRETS_DIR": str(tmp_path / "secrets")},
        check=True,
        capture_output=True,
    )
    assert result.returncode == 0
    for name, secret in stack["secrets"].items():
        produced = tmp_path / "secrets" / Path(secret["file"]).name
        assert Path(secret["file"]).parent.name == ".secrets", f"{name}: only generated secrets"
        assert produced.is_file()
        assert len(produced.read_text()) >= 24, f"{name}: a random secret was made"
    assert "deploy/.secrets/" in (ROOT / ".gitignore").read_text()

    for name, service in services.items():
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} missing"
            else:
                assert source in stack["volumes"], f"{name}: volume {source} undeclared"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in services
        for secret in service.get("secrets", []):
            assert secret in stack["secrets"]
        for key, value in service.get("environment", {}).items():
            if SECRET_WORDS.search(key) and not key.endswith("_FILE"):
                pytest.fail(f"{name}: secret {key} in the environment; use a *_FILE secret")
            assert "password" not in str(value).lower() or str(value).startswith("/run/secrets")


def test_compose_gateway_configuration_loads_and_uses_the_shared_store() -> None:
    config = tomllib.loads((DEPLOY / "compose" / "gateway.toml").read_text())
    settings = settings_from_mapping(config)
    assert settings.store.postgres is not None
    url = urlsplit(settings.store.postgres.url)
    assert url.hostname in compose()["services"]
    assert url.password is None
    assert settings.store.postgres.password_file == Path("/run/secrets/postgres-password")


# --- Kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return build(DEPLOY / "k8s" / "overlays" / "production")


def test_every_built_in_resource_is_valid_against_the_kubernetes_schema(
    production: list[dict[str, Any]],
) -> None:
    kinds = {r["kind"] for r in production}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "KafkaTopic",
        "Namespace",
    } <= kinds
    for resource in production:
        if resource["kind"] in CRD_KINDS:
            assert resource["apiVersion"].split("/")[0] in (
                "monitoring.coreos.com",
                "kafka.strimzi.io",
                "external-secrets.io",
            )
            assert resource["metadata"]["name"]
            assert isinstance(resource["spec"], dict)
            continue
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_schema_validation_catches_a_mistake(production: list[dict[str, Any]]) -> None:
    """The schema check above can fail: a misspelt field is refused."""
    broken = json.loads(json.dumps(find(production, "Deployment", "blauweknop-gateway")))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_pods_run_least_privileged_with_probes_and_resources(
    production: list[dict[str, Any]],
) -> None:
    workloads = [r for r in production if pod_spec(r) is not None]
    assert {w["metadata"]["name"] for w in workloads} == {
        "blauweknop-gateway",
        "blauweknop-checkpointer",
    }
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec is not None
        assert spec["automountServiceAccountToken"] is False
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] >= 1000
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert "add" not in security["capabilities"]
            assert security.get("privileged", False) is False
            assert security["seccompProfile"]["type"] == "RuntimeDefault"
            assert container["image"].startswith("registry.internal/blauweknop/gateway:")
            assert not container["image"].endswith(":latest")
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"])
            assert "memory" in resources["limits"]
            for env in container.get("env", []):
                assert "valueFrom" not in env, "secrets are files, never environment variables"
                assert not SECRET_WORDS.search(env["name"]), env["name"]
            volumes = {v["name"] for v in spec["volumes"]}
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    gateway = find(production, "Deployment", "blauweknop-gateway")
    container = pod_spec(gateway)["containers"][0]  # type: ignore[index]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["spec"]["replicas"] == 3, "the production patch applied"
    assert gateway["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    checkpointer = find(production, "Deployment", "blauweknop-checkpointer")
    assert checkpointer["spec"]["replicas"] == 1
    assert checkpointer["spec"]["strategy"]["type"] == "Recreate", "never two signing at once"
    namespace = find(production, "Namespace", "blauweknop")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(
        r["metadata"].get("namespace") == "blauweknop"
        for r in production
        if r["kind"] != "Namespace"
    )


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_reference_between_resources_resolves(production: list[dict[str, Any]]) -> None:
    secrets = {r["metadata"]["name"] for r in production if r["kind"] == "Secret"} | {
        r["spec"]["target"]["name"] for r in production if r["kind"] == "ExternalSecret"
    }
    config_maps = {r["metadata"]["name"] for r in production if r["kind"] == "ConfigMap"}
    accounts = {r["metadata"]["name"] for r in production if r["kind"] == "ServiceAccount"}
    assert not any(r["kind"] == "Secret" for r in production), "no secret values in git"
    pods: dict[str, dict[str, str]] = {}
    for workload in production:
        spec = pod_spec(workload)
        if spec is None:
            continue
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(workload["spec"]["selector"]["matchLabels"], labels)
        pods[workload["metadata"]["name"]] = labels
        assert spec["serviceAccountName"] in accounts
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, volume
                assert volume["secret"]["defaultMode"] & 0o007 in (0, 4), "not world-writable"
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, volume
    services = [r for r in production if r["kind"] == "Service"]
    for service in services:
        matched = [n for n, labels in pods.items() if selects(service["spec"]["selector"], labels)]
        assert matched, f"Service {service['metadata']['name']} selects no pods"
        workload = find(production, "Deployment", matched[0])
        ports = {p["name"] for c in pod_spec(workload)["containers"] for p in c["ports"]}  # type: ignore[index]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    hpa = find(production, "HorizontalPodAutoscaler", "blauweknop-gateway")
    find(production, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find(production, "PodDisruptionBudget", "blauweknop-gateway")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pods["blauweknop-gateway"])
    monitors = [r for r in production if r["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {
        "blauweknop-gateway",
        "blauweknop-checkpointer",
    }
    for monitor in monitors:
        monitored = [
            s
            for s in services
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert [s["metadata"]["name"] for s in monitored] == [monitor["metadata"]["name"]], (
            "one Service each, named like the job the alerts name"
        )
        assert monitor["spec"]["endpoints"][0]["port"] in {
            p["name"] for p in monitored[0]["spec"]["ports"]
        }
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # The checkpointer's metrics port is the one its configuration serves on.
    checkpointer = pod_spec(find(production, "Deployment", "blauweknop-checkpointer"))
    assert checkpointer is not None
    config_map = find(production, "ConfigMap", "blauweknop-gateway-config")
    settings = settings_from_mapping(tomllib.loads(config_map["data"]["gateway.toml"]))
    container = checkpointer["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == {settings.checkpoints.metrics_port}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_network_policies_deny_by_default_and_allow_only_what_is_needed(
    production: list[dict[str, Any]],
) -> None:
    policies = [r for r in production if r["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    assert sorted(deny[0]["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny[0]["spec"]
    assert "egress" not in deny[0]["spec"]
    for name in ("blauweknop-gateway", "blauweknop-checkpointer"):
        labels = find(production, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        allowing = [
            p
            for p in policies
            if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert len(allowing) == 1, name
        for rule in allowing[0]["spec"].get("egress", []) + allowing[0]["spec"].get("ingress", []):
            assert rule.get("ports"), f"{name}: every rule names its ports"
            for peer in rule.get("to", []) + rule.get("from", []):
                assert peer, f"{name}: no rule allows everything"
    checkpointer = next(p for p in policies if p["metadata"]["name"] == "blauweknop-checkpointer")
    (scrape,) = checkpointer["spec"]["ingress"]
    assert scrape["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ], "the checkpointer receives only Prometheus' scrapes"
    assert [p["port"] for p in scrape["ports"]] == [9464]
    external = [
        port["port"]
        for p in policies
        for rule in p["spec"].get("egress", [])
        for peer in rule["to"]
        if "ipBlock" in peer
        for port in rule["ports"]
    ]
    assert set(external) == {443}, "only HTTPS leaves the cluster (organisations, DigiD, TSA)"


def test_production_configuration_loads_and_reads_secrets_only_from_mounted_files(
    production: list[dict[str, Any]],
) -> None:
    config_map = find(production, "ConfigMap", "blauweknop-gateway-config")
    config = tomllib.loads(config_map["data"]["gateway.toml"])
    settings = settings_from_mapping(config)
    assert settings.mode == "production"
    assert settings.store.postgres is not None
    assert settings.shutdown_drain_seconds + settings.shutdown_grace_seconds < 30
    text = config_map["data"]["gateway.toml"]
    files = [
        p
        for p in re.findall(r'"(/[^"]+)"', text) + re.findall(r"sslrootcert=([^&\"']+)", text)
        if p.startswith("/run/")
    ]
    # What each workload reads: the checkpointer its signing key, the TSA's CA and Kafka's
    # files; the gateway everything else, and never the checkpoint signing key.
    assert settings.checkpoints.key_file is not None
    assert settings.checkpoints.tsa_ca_file is not None
    assert settings.kafka is not None
    signing_key = str(settings.checkpoints.key_file)
    kafka_files = {
        str(f)
        for f in (settings.kafka.ca_file, settings.kafka.cert_file, settings.kafka.key_file)
        if f is not None
    }
    needs = {
        "blauweknop-gateway": set(files) - {signing_key},
        "blauweknop-checkpointer": {signing_key, str(settings.checkpoints.tsa_ca_file)}
        | kafka_files,
    }
    external = {
        r["spec"]["target"]["name"]: {d["secretKey"] for d in r["spec"]["data"]}
        for r in production
        if r["kind"] == "ExternalSecret"
    }
    for name, paths in needs.items():
        spec = pod_spec(find(production, "Deployment", name))
        assert spec is not None
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = [
            m for m in spec["containers"][0]["volumeMounts"] if "secret" in volumes[m["name"]]
        ]
        for path in paths:
            assert any(path.startswith(m["mountPath"] + "/") for m in mounts), (
                f"{name}: {path} not mounted"
            )
        for mount in mounts:
            for path in files:
                if path.startswith(mount["mountPath"] + "/"):
                    key = path.removeprefix(mount["mountPath"] + "/").split("&")[0]
                    secret = volumes[mount["name"]]["secret"]["secretName"]
                    assert key in external[secret], f"{name}: {path}: no such key"
        if name == "blauweknop-gateway":
            assert not any(signing_key.startswith(m["mountPath"] + "/") for m in mounts), (
                "the gateway never holds the checkpoint signing key"
            )


def test_kafka_topics_for_evidence(production: list[dict[str, Any]]) -> None:
    events = find(production, "KafkaTopic", "blauweknop.audit.v1")
    assert events["metadata"]["labels"]["strimzi.io/cluster"] == "blauweknop"
    spec = events["spec"]
    assert spec["partitions"] == 1, "one total order"
    assert spec["replicas"] == 3
    config = spec["config"]
    assert config["min.insync.replicas"] == 2
    assert "compact" not in str(config["cleanup.policy"])
    assert config["retention.ms"] == -1
    assert config["retention.bytes"] == -1
    assert config["unclean.leader.election.enable"] is False
    # Room for the largest document: more than one organisation's largest accepted answer.
    largest_answer = settings_from_mapping({}).organisations[0].settings.max_body_bytes
    assert config["max.message.bytes"] > largest_answer
    find(production, "KafkaTopic", "blauweknop.audit.checkpoints.v1")
    # deploy/compose's create-topics.sh makes the same topics with the same settings.
    script = (DEPLOY / "compose" / "create-topics.sh").read_text().replace("\\\n", " ")
    for command in re.findall(r"--create[^\n]+", script):
        words = shlex.split(command)
        topic = find(production, "KafkaTopic", words[words.index("--topic") + 1])["spec"]
        assert int(words[words.index("--partitions") + 1]) == topic["partitions"]
        assert int(words[words.index("--replication-factor") + 1]) == topic["replicas"]
        created = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--config")
        assert created == {k: str(v).lower() for k, v in topic["config"].items()}


def test_kustomize_checker_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nreplacements: []\n")
    with pytest.raises(ValueError, match="replacements"):
        build(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(FileNotFoundError):
        build(tmp_path)


# --- Prometheus and Grafana ---------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\b(blauweknop_[a-z0-9_]+|kafka_[a-z0-9_]+|up)\b", without_strings))


def balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "blauweknop.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_alert_rules_are_well_formed() -> None:
    data = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    assert set(data) == {"groups"}
    names = set()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", (ROOT / "docs" / "operations.md").read_text(), re.M)
    }
    for group in data["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            assert rule["alert"] not in names, "unique alert names"
            names.add(rule["alert"])
            assert balanced(rule["expr"]), rule["alert"]
            assert all(
                re.fullmatch(r"\d+[smhd]", w) for w in re.findall(r"\[([^\]:]+)", rule["expr"])
            )
            assert re.fullmatch(r"\d+[smhd]", rule["for"])
            assert rule["labels"]["severity"] in ("page", "warning")
            assert rule["annotations"]["summary"]
            if "runbook" in rule["annotations"]:
                path, _, anchor = rule["annotations"]["runbook"].partition("#")
                assert (ROOT / path).is_file()
                assert anchor in anchors, f"{rule['alert']}: no section #{anchor}"
    topics = {
        "error rate": "blauweknop_source_requests_total",
        "latency": "blauweknop_source_request_seconds_bucket",
        "breakers": "blauweknop_circuit_open",
        "backlog": "blauweknop_audit_outbox_backlog",
        "checkpoint age": "blauweknop_audit_checkpoint_last_timestamp_seconds",
        "certificate expiry": "blauweknop_signing_certificate_not_after_seconds",
        "TSA certificate expiry": "blauweknop_audit_tsa_certificate_not_after_seconds",
        "one relay": "blauweknop_audit_relay_leader",
    }
    used = set().union(*(metric_names(r["expr"]) for r in rules()))
    for topic, metric in topics.items():
        assert metric in used, f"no alert on {topic}"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yaml"]


def test_kubernetes_gets_the_same_alert_rules(production: list[dict[str, Any]]) -> None:
    rule = find(production, "PrometheusRule", "blauweknop")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    assert rule["spec"] == alerts, "regenerate: .venv/bin/python deploy/dev/prometheusrule.py"


def test_dashboard_is_well_formed_and_covers_the_promised_panels() -> None:
    path = DEPLOY / "grafana" / "dashboards" / "blauweknop.json"
    dashboard = json.loads(path.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            assert balanced(target["expr"]), target["expr"]
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    for metric in (
        "blauweknop_source_requests_total",
        "blauweknop_source_request_seconds_bucket",
        "blauweknop_circuit_open",
        "blauweknop_audit_outbox_backlog",
        "blauweknop_audit_checkpoint_last_timestamp_seconds",
        "blauweknop_signing_certificate_not_after_seconds",
        "blauweknop_audit_tsa_certificate_not_after_seconds",
        "blauweknop_audit_relay_leader",
    ):
        assert metric in used


def exported_names(exposition: str) -> set[str]:
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        if kind == "counter":
            names.add(name.removesuffix("_total") + "_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        else:
            names.add(name)
    return names


def label_names(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Every exposed sample name and the labels its metric defines (children or not)."""
    names: dict[str, set[str]] = {}
    for collector, exposed in registry._collector_to_names.items():  # no public accessor
        labels = set(getattr(collector, "_labelnames", ()))
        for name in exposed:
            names[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return names


def used_labels(expr: str) -> list[tuple[set[str], set[str]]]:
    """(metrics, labels) pairs an expression relies on: selectors, and by/on/without lists."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    metrics = metric_names(expr)
    pairs = []
    for name, selector in re.findall(r"\b([a-z_][a-z0-9_]*)\{([^}]*)\}", expr):
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector))
        pairs.append(({name}, labels))
    for group in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        pairs.append((metrics, {w.strip() for w in group.split(",") if w.strip()}))
    return pairs


async def test_dashboard_and_alerts_use_only_metrics_and_labels_the_code_defines(
    stack: Stack,
) -> None:
    """Every metric a panel or an alert names is exported by the gateway (scraped from a running
    one) or by the checkpointer (its CheckpointerMetrics), with the labels it selects on; and
    every exported metric is documented in docs/operations.md."""
    await stack.bundle("999990020")
    async with stack.session.get(f"{stack.url}/metrics") as response:
        gateway = exported_names(await response.text())
    checkpointer_metrics = CheckpointerMetrics()
    checkpointer = exported_names(generate_latest(checkpointer_metrics.registry).decode())
    assert not gateway & checkpointer, "one name, one meaning"
    exported = gateway | checkpointer
    exprs = dashboard_exprs() + [r["expr"] for r in rules()]
    used = set().union(*(metric_names(e) for e in exprs))
    unknown = used - exported - EXTERNAL_METRICS
    assert not unknown, f"dashboard or alerts use metrics nobody exports: {sorted(unknown)}"
    registries = stack.app[METRICS]
    labels = label_names(registries.registry) | label_names(registries.audit_registry)
    labels |= label_names(checkpointer_metrics.registry)
    labels |= {"up": {"job", "instance"}}
    for expr in exprs:
        for metrics, selected in used_labels(expr):
            known = set().union(*(labels.get(m, set()) for m in metrics)) | {"instance", "job"}
            if metrics <= EXTERNAL_METRICS - {"up"}:
                continue
            assert selected <= known, f"{expr}: labels {selected - known} not on {metrics}"
    documented = set(
        re.findall(r"`(blauweknop_[a-z0-9_]+)`", (ROOT / "docs" / "operations.md").read_text())
    )
    for name in exported - {n for n in exported if n.endswith("_created")}:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert name in documented or base in documented, f"{name} not in docs/operations.md"


def test_label_check_catches_a_label_the_metric_does_not_have() -> None:
    labels = label_names(Metrics().registry)
    ((_, selected),) = used_labels('max(blauweknop_circuit_open{organisatie="duo"})')
    assert not selected <= labels["blauweknop_circuit_open"], "a label it does not have"
    ((_, selected),) = used_labels("max by (org) (blauweknop_circuit_open)")
    assert selected <= labels["blauweknop_circuit_open"]


def test_alerts_name_only_scrape_jobs_that_exist(production: list[dict[str, Any]]) -> None:
    """`up{job=…}` in an alert matches a compose scrape job and a Kubernetes ServiceMonitor's
    Service (the Prometheus Operator names the job after the Service)."""
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    compose_jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    k8s_jobs = {r["metadata"]["name"] for r in production if r["kind"] == "ServiceMonitor"}
    named = {j for r in rules() for j in re.findall(r'job="([^"]+)"', r["expr"])}
    named |= {j for e in dashboard_exprs() for j in re.findall(r'job="([^"]+)"', e)}
    assert {"blauweknop-gateway", "blauweknop-checkpointer"} <= named
    assert named <= compose_jobs
    assert named <= k8s_jobs


def test_documents_are_valid_yaml() -> None:
    for path in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]:
        assert load_documents(path) is not None, path
