"""deploy/kubernetes checked offline: core kinds against Kubernetes' own OpenAPI schemas
(kubernetes-validate, strict), KEDA's ScaledObject and TriggerAuthentication against the
schemas in tests/data/keda (written from KEDA's public CRDs, see its README), and what the
manifests promise each other: probes, requests, the accounts file's ${ENV} references all
provided by the Secret, the queue and the metric the scalers read.

Fast and offline: runs in `make test` too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploytools import DEPLOY, ROOT, exposition_names, promql_metrics

from mta.broker import amqp_urls
from mta.config import load_accounts, load_smpp_clients
from mta.registry import discover
from mta.topology import LANE_BULK, Topology

K8S = DEPLOY / "kubernetes"
KEDA = ROOT / "tests" / "data" / "keda"
#: The oldest Kubernetes these manifests promise to work on, and the newest known here.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
ROLES = {"worker", "reporter", "http", "smpp-server"}


def documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


def mta_metric_names() -> set[str]:
    """Every series name mta/metrics.py can expose (its collectors, rendered here)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics import MetricWrapperBase

    import mta.metrics as metrics

    registry = CollectorRegistry()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            registry.register(value)
    return exposition_names(generate_latest(registry).decode())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_kinds_validate_against_kubernetes_schemas(version: str) -> None:
    checked = 0
    for path, doc in documents():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
        checked += 1
    assert checked >= 8


def test_keda_objects_validate_against_the_crd_schemas() -> None:
    schemas = {
        name: json.loads((KEDA / f"{name.lower()}.schema.json").read_text())
        for name in ("ScaledObject", "TriggerAuthentication")
    }
    keda = [(p, d) for p, d in documents() if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for _, d in keda} == set(schemas)
    for path, doc in keda:
        schema = schemas[doc["kind"]]
        jsonschema.Draft202012Validator.check_schema(schema)
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
        assert not errors, f"{path.name}: {doc['metadata']['name']}: {errors[0].message}"


def test_keda_schema_refuses_what_keda_would_not_take() -> None:
    """The schema is not a rubber stamp: typical mistakes fail it."""
    schema = json.loads((KEDA / "scaledobject.schema.json").read_text())
    worker = by_kind("ScaledObject")["sms-mta-worker"]
    bad_docs = []
    for path, value in (
        (("spec", "triggers", 0, "metadata", "mode"), "Length"),  # not a mode
        (("spec", "triggers", 0, "metadata", "value"), 100),  # metadata values are strings
        (("spec", "minReplicas"), 1),  # the HPA's name, not KEDA's
    ):
        doc = json.loads(json.dumps(worker))
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        bad_docs.append(doc)
    doc = json.loads(json.dumps(worker))
    del doc["spec"]["triggers"][0]["metadata"]["queueName"]
    bad_docs.append(doc)
    for doc in bad_docs:
        assert not jsonschema.Draft202012Validator(schema).is_valid(doc), doc["spec"]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_deployments_run_each_role_with_probes_requests_and_no_root() -> None:
    deployments = by_kind("Deployment")
    assert {d["spec"]["template"]["spec"]["containers"][0]["args"][0]
            for d in deployments.values()} == ROLES
    secret = by_kind("Secret")["sms-mta"]
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # probes on /healthz and /readyz, at a port the container declares
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (name, probe)
        # the metrics server (which serves the probes of workers and reporters) listens there
        assert env["MTA_METRICS_LISTEN"].endswith(f":{ports['metrics']}"), name
        if container["args"][0] == "http":
            assert env["MTA_HTTP_LISTEN"].endswith(f":{ports['http']}")
        if container["args"][0] == "smpp-server":
            assert env["MTA_SMPP_LISTEN"].endswith(f":{ports['smpp']}")
        requests = container["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests), name
        assert "memory" in container["resources"]["limits"], name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        # SIGTERM grace: more than the MTA's own shutdown grace
        assert pod["terminationGracePeriodSeconds"] > float(env["MTA_SHUTDOWN_GRACE_S"])
        # accounts from the ConfigMap, secrets from the Secret
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        accounts_dir = str(Path(env["MTA_ACCOUNTS"]).parent)
        (volume,) = [n for n, p in mounts.items() if p == accounts_dir]
        assert volumes[volume]["configMap"]["name"] == "sms-mta-accounts"
        assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )


def test_accounts_file_reads_every_secret_from_the_secret(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    accounts = by_kind("ConfigMap")["sms-mta-accounts"]["data"]["accounts.toml"]
    secret = by_kind("Secret")["sms-mta"]["stringData"]
    references = set(re.findall(r"\$\{(\w+)\}", accounts))
    assert references, "secrets must be ${ENV} references"
    assert references <= set(secret), f"not in the Secret: {references - set(secret)}"
    for line in accounts.splitlines():  # no literal secret in the ConfigMap
        if re.match(r"\s*(api_key|password|secret_key|webhook_token|auth_token)\s*=", line):
            assert "${" in line, line
    path = tmp_path / "accounts.toml"
    path.write_text(accounts)
    for key, value in secret.items():
        monkeypatch.setenv(key, value)
    loaded = load_accounts(path, {n: c.meta for n, c in discover().items()})
    assert {a.name for a in loaded} == {"sim", "infobip-1"}
    assert [c.system_id for c in load_smpp_clients(path)] == ["acct-key-1"]


def test_scalers_read_the_bulk_queue_and_the_due_now_gauge() -> None:
    scaled = by_kind("ScaledObject")
    deployments = by_kind("Deployment")
    auths = by_kind("TriggerAuthentication")
    secret = by_kind("Secret")["sms-mta"]["stringData"]
    for obj in scaled.values():
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        for trigger in obj["spec"]["triggers"]:
            if "authenticationRef" in trigger:
                auth = auths[trigger["authenticationRef"]["name"]]
                for ref in auth["spec"]["secretTargetRef"]:
                    assert ref["key"] in secret
                    if ref["parameter"] == "host":  # KEDA's scaler takes one URL, no list
                        assert amqp_urls(secret[ref["key"]]) == [secret[ref["key"]]]
    worker = scaled["sms-mta-worker"]["spec"]
    assert worker["scaleTargetRef"]["name"] == "sms-mta-worker"
    (trigger,) = worker["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == Topology("mta").send_queue(LANE_BULK)
    reporter = scaled["sms-mta-reporter"]["spec"]
    assert reporter["scaleTargetRef"]["name"] == "sms-mta-reporter"
    (trigger,) = reporter["triggers"]
    assert trigger["type"] == "prometheus"
    metrics = promql_metrics(trigger["metadata"]["query"])
    assert metrics == {"mta_due_now_messages"}
    assert metrics <= mta_metric_names()
