"""The gateway's Kubernetes objects: Deployment, Service, PDB, HPA, probes on its HTTP health endpoints,
its network policy, TLS to the orchestrator in components/tls, and the example Ingress."""

from __future__ import annotations

from .test_k8s import by_kind, config, overlay, pod_spec, uses  # noqa: F401 - overlay is a fixture

GATEWAY = {"app.kubernetes.io/name": "barkstream-gateway", "app.kubernetes.io/component": "gateway"}


def test_gateway_deployment_service_pdb_hpa(overlay):  # noqa: F811
    name, objects = overlay
    deployment = by_kind(objects, "Deployment")["gateway"]
    spec = pod_spec(deployment)
    (c,) = spec["containers"]
    assert c["args"] == ["serve", "gateway", "--http-port", "8080"]
    env = {e["name"]: e for e in c["env"]}
    assert env["BARKSTREAM_TARGET"]["value"] == "orchestrator:50051"
    assert env["BARKSTREAM_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "barkstream-auth"
    assert "nvidia.com/gpu" not in c["resources"]["limits"]  # no model, no accelerator
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/healthz"
    drain = float(config(objects)["BARKSTREAM_DRAIN_GRACE_S"])
    assert spec["terminationGracePeriodSeconds"] > drain + float(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert not any(v.get("persistentVolumeClaim") for v in spec["volumes"])  # no checkpoint
    service = by_kind(objects, "Service")["gateway"]
    assert service["spec"]["selector"] == GATEWAY and service["spec"]["ports"][0]["targetPort"] == "http"
    assert by_kind(objects, "PodDisruptionBudget")["gateway"]["spec"]["selector"]["matchLabels"] == GATEWAY
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway" and hpa["spec"]["minReplicas"] >= 2
    if uses(name, "tls"):
        assert env["BARKSTREAM_TARGET_CA_FILE"]["value"] == "/etc/barkstream/tls/ca.crt"
        assert "grpc" not in c["readinessProbe"] and "exec" not in c["readinessProbe"]
    else:
        assert "BARKSTREAM_TARGET_CA_FILE" not in env


def test_gateway_takes_only_http_and_scrapes(overlay):  # noqa: F811
    _, objects = overlay
    policy = by_kind(objects, "NetworkPolicy")["gateway-http-only"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "gateway"}
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http"}, {"port": "metrics"}]}]


def test_ingress_example_streams(overlay):  # noqa: F811
    name, objects = overlay
    ingresses = by_kind(objects, "Ingress")
    if not uses(name, "ingress"):
        assert not ingresses
        return
    annotations = ingresses["gateway"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    backend = ingresses["gateway"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "gateway", "port": {"name": "http"}}
