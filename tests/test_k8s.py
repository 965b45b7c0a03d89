"""Kubernetes manifests (k8s/): every overlay renders, every object validates, the deployment contract holds.

Rendering needs `kubectl kustomize` (or a `kustomize` binary); validation uses kubernetes-validate, which
carries the Kubernetes OpenAPI schemas (no cluster, no network), in strict mode (unknown fields are errors),
for the oldest Kubernetes the manifests support (gRPC probes, autoscaling/v2, policy/v1: 1.29) and the newest
it knows. Without the tools these tests skip with the reason; under CI (CI=true) they fail instead.

Also here: the command the checkpoint Job runs (`python -m barkstream.services.cli checkpoint fetch`), offline.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPONENTS = sorted(p.parent.name for p in (K8S / "components").glob("*/kustomization.yaml"))
# Optional components rendered on top of an overlay here (as a user's own overlay would add them).
COMBINATIONS = {"gpu+tls": ("gpu", ["tls"]), "gpu+shared-gpu": ("gpu", ["shared-gpu"]),
                "cpu+ingress": ("cpu", ["ingress"])}
EMBEDDED = {"one-gpu"}  # layouts that serve every stage in the orchestrator's pod (`serve all`)
STAGES = {"semantic": 50061, "coarse": 50062, "fine": 50063, "codec": 50064}
ROLES = {**STAGES, "orchestrator": 50051}
OLDEST_KUBERNETES = "1.29.0"


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the Kubernetes checks must run in CI: {reason}")
    pytest.skip(reason)


def _kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    _unavailable("neither kubectl nor kustomize is installed")


def _validator():
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import latest_version
    except ImportError:
        _unavailable("kubernetes-validate is not installed (pip install -e '.[test]')")
    return kubernetes_validate, (OLDEST_KUBERNETES, latest_version())


def render(path: Path) -> list[dict]:
    proc = subprocess.run([*_kustomize_command(), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize {path.relative_to(ROOT)} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module", params=[*OVERLAYS, *COMBINATIONS])
def overlay(request, tmp_path_factory) -> tuple[str, list[dict]]:
    name = request.param
    if name not in COMBINATIONS:
        return name, render(K8S / "overlays" / name)
    return name, render_combined(tmp_path_factory.mktemp("k8s"), *COMBINATIONS[name])


def render_combined(tmp: Path, base: str, components: list[str]) -> list[dict]:
    """An overlay of the user's own: `base` with `components` on top."""
    root = tmp / "k8s"
    shutil.copytree(K8S, root)  # kustomize takes relative paths only
    combined = root / "overlays" / "combined"
    combined.mkdir()
    (combined / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [f"../{base}"],
        "components": [f"../../components/{c}" for c in components]}))
    return render(combined)


def uses(name: str, part: str) -> bool:
    """Whether the rendered configuration `name` (e.g. "gpu+tls") is or includes `part`."""
    return part in name.split("+")


def roles(objects: list[dict]) -> dict[str, int]:
    """The server roles this layout deploys (all five split, or the embedded server alone) and their ports."""
    deployments = by_kind(objects, "Deployment")
    return {role: port for role, port in ROLES.items() if role in deployments}


def served_role(name: str, role: str) -> str:
    """What `serve` runs in the Deployment named `role`: the embedded layouts' orchestrator pod serves everything."""
    return "all" if name in EMBEDDED else role


def gpu_resource(name: str) -> str:
    return "nvidia.com/gpu.shared" if uses(name, "shared-gpu") else "nvidia.com/gpu"


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def config_map(objects: list[dict]) -> dict:
    """The servers' settings ConfigMap (its name carries kustomize's hash suffix)."""
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("barkstream-config")]
    return cm


def config(objects: list[dict]) -> dict[str, str]:
    return config_map(objects)["data"]


def test_overlays_exist_and_every_component_is_rendered_here():
    assert {"gpu", "cpu", "one-gpu"} <= set(OVERLAYS), OVERLAYS
    used = {c for _, cs in COMBINATIONS.values() for c in cs}
    for overlay in OVERLAYS:
        used |= {Path(c).name for c in yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml")
                                                      .read_text()).get("components", [])}
    assert set(COMPONENTS) <= used, f"components no test renders: {set(COMPONENTS) - used}"


def test_every_object_validates_against_the_kubernetes_schemas(overlay):
    name, objects = overlay
    kv, versions = _validator()
    assert objects, f"overlay {name} rendered nothing"
    errors = []
    for obj in objects:
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except (kv.ValidationError, kv.SchemaNotFoundError) as e:
                where = ".".join(str(p) for p in getattr(e, "path", []))
                errors.append(f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {where}: "
                              f"{getattr(e, 'message', e)}")
    assert not errors, "\n".join(errors)


def test_validation_is_strict():
    """A misspelled field must fail: the check above is a real schema check, not a YAML parse."""
    kv, versions = _validator()
    deployment = copy.deepcopy(by_kind(render(K8S / "base"), "Deployment")["coarse"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, versions[0], strict=True)


def test_each_stage_and_the_orchestrator_have_deployment_service_pdb_hpa(overlay):
    name, objects = overlay
    deployments, services = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    pdbs, hpas = by_kind(objects, "PodDisruptionBudget"), by_kind(objects, "HorizontalPodAutoscaler")
    if name in EMBEDDED:  # one pod on one GPU: no stage objects, and nothing to autoscale
        assert set(roles(objects)) == {"orchestrator"} and not set(STAGES) & (set(services) | set(pdbs))
        assert not {*STAGES, "orchestrator"} & set(hpas)
        assert pdbs["orchestrator"]["spec"]["maxUnavailable"] == 1
        return
    for role, port in ROLES.items():
        dep, svc = deployments[role], services[role]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), role
        assert svc["spec"]["ports"][0]["port"] == port and svc["spec"]["ports"][0]["targetPort"] == "grpc"
        # The stages are headless (DNS lists every pod: dns:/// + round_robin); the orchestrator is not.
        assert (svc["spec"].get("clusterIP") == "None") == (role in STAGES), role
        assert all(labels.get(k) == v for k, v in pdbs[role]["spec"]["selector"]["matchLabels"].items())
        hpa = hpas[role]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": role}
        assert hpa["maxReplicas"] > hpa["minReplicas"] >= 1
        (metric,) = hpa["metrics"]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "barkstream_streams_active"


def test_orchestrator_balances_streams_over_the_stage_pods(overlay):
    name, objects = overlay
    env = {e["name"]: e.get("value") for e in pod_spec(by_kind(objects, "Deployment")["orchestrator"])
           ["containers"][0]["env"]}
    if name in EMBEDDED:  # no targets: the embedded server calls its own stage services
        assert not [k for k in env if k.endswith("_TARGET")]
        return
    for stage, port in STAGES.items():
        assert env[f"BARKSTREAM_{stage.upper()}_TARGET"] == f"dns:///{stage}:{port}"


def test_only_the_orchestrator_reaches_the_stages_and_only_it_checks_tokens(overlay):
    _, objects = overlay
    policy = by_kind(objects, "NetworkPolicy")["stages-from-orchestrator"]
    (selector,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert sorted(selector["values"]) == sorted(STAGES)
    grpc_rule = policy["spec"]["ingress"][0]
    assert grpc_rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "orchestrator"
    assert grpc_rule["ports"] == [{"port": "grpc"}]
    for role in roles(objects):
        env = {e["name"]: e for e in pod_spec(by_kind(objects, "Deployment")[role])["containers"][0]["env"]}
        token = env.get("BARKSTREAM_AUTH_TOKEN")
        if role == "orchestrator":
            ref = token["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "barkstream-auth" and ref["optional"] is True
        else:
            assert token is None


def test_server_pods_are_probed_drained_limited_and_locked_down(overlay):
    name, objects = overlay
    cfg = config(objects)
    drain = float(cfg["BARKSTREAM_DRAIN_GRACE_S"])
    for role, port in roles(objects).items():
        spec = pod_spec(by_kind(objects, "Deployment")[role])
        (c,) = spec["containers"]
        assert c["args"][:2] == ["serve", served_role(name, role)] and c["ports"][0]["containerPort"] == port
        assert {"configMapRef": {"name": config_map(objects)["metadata"]["name"]}} in c["envFrom"], role
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if uses(name, "tls"):  # Kubernetes' gRPC probes speak plaintext only: the image's script speaks TLS
                assert "grpc" not in c[probe] and "/opt/barkstream/healthcheck.py" in c[probe]["exec"]["command"]
            else:
                assert c[probe]["grpc"]["port"] == port, (role, probe)
        startup = c["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "startup must cover model load"
        pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert spec["terminationGracePeriodSeconds"] > drain + float(pre_stop[1]) + 5, role
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["models"]["readOnly"] is True and cfg["BARKSTREAM_CHECKPOINT"].startswith(
            mounts["models"]["mountPath"] + "/")
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is True
        assert volumes["auth"]["secret"]["secretName"] == "barkstream-auth"
        assert volumes["tls"]["secret"]["secretName"] == "barkstream-tls"
        assert spec["initContainers"][0]["name"] == "wait-for-checkpoint"


def test_every_pod_runs_non_root_read_only_with_requests_and_limits(overlay):
    _, objects = overlay
    pods = [o for o in objects if o["kind"] in ("Deployment", "Job")]
    assert len(pods) >= len(roles(objects)) + 2  # the servers, the collector, the checkpoint Job
    for obj in pods:
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec.get("automountServiceAccountToken") is False
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{obj['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (where, kind)
            image = c["image"]
            assert ":" in image and not image.endswith(":latest"), (where, image)


def test_gpu_overlay_puts_the_model_stages_on_gpus(overlay):
    name, objects = overlay
    deployments = by_kind(objects, "Deployment")
    for dep_name, dep in deployments.items():
        spec = pod_spec(dep)
        resources = spec["containers"][0]["resources"]
        gpu = (uses(name, "gpu") and dep_name in STAGES) or (name in EMBEDDED and dep_name == "orchestrator")
        assert {k for k in resources["limits"] if k.startswith("nvidia.com/")} == ({gpu_resource(name)} if gpu
                                                                                 else set()), (name, dep_name)
        if gpu:
            assert str(resources["limits"][gpu_resource(name)]) == str(resources["requests"][gpu_resource(name)]) == "1"
            assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
            assert spec["nodeSelector"]
    if uses(name, "gpu") or name in EMBEDDED:
        assert config(objects)["BARKSTREAM_DEVICE"] == "cuda"
        assert all(deployments[s]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":gpu")
                   for s in roles(objects))


def test_tls_is_off_unless_the_tls_component_turns_on_tls_and_mutual_tls_to_the_stages(overlay):
    name, objects = overlay
    for role in roles(objects):
        (c,) = pod_spec(by_kind(objects, "Deployment")[role])["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        if not uses(name, "tls"):
            assert not [k for k in env if "TLS" in k], "the base and overlays serve plaintext (TLS needs a Secret)"
            continue
        assert env["BARKSTREAM_TLS_CERT_FILE"] == "/etc/barkstream/tls/tls.crt"
        assert env["BARKSTREAM_TLS_KEY_FILE"] == "/etc/barkstream/tls/tls.key"
        if role in STAGES:
            assert env["BARKSTREAM_TLS_CLIENT_CA_FILE"] == "/etc/barkstream/tls/ca.crt"
        else:
            assert env["BARKSTREAM_STAGE_TLS_CA_FILE"] == "/etc/barkstream/tls/ca.crt"
            assert env["BARKSTREAM_STAGE_TLS_CERT_FILE"] and env["BARKSTREAM_STAGE_TLS_KEY_FILE"]


def test_one_gpu_overlay_serves_every_stage_in_one_pod_on_one_gpu():
    objects = render(K8S / "overlays" / "one-gpu")
    # Besides the collector and the HTTP gateway (a client of the orchestrator: it stays in every layout).
    (dep,) = [d for name, d in by_kind(objects, "Deployment").items() if name not in ("otel-collector", "gateway")]
    spec = pod_spec(dep)
    (c,) = spec["containers"]
    assert dep["metadata"]["name"] == "orchestrator" and c["args"][:2] == ["serve", "all"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}  # no surge GPU needed
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["OTEL_SERVICE_NAME"] == "barkstream" and not [k for k in env if k.endswith("_TARGET")]
    assert by_kind(objects, "Service")["orchestrator"]["spec"]["ports"][0]["port"] == ROLES["orchestrator"]
    # The embedded server's three GPT engines preallocate their KV caches from the shared settings.
    assert int(config(objects)["BARKSTREAM_MAX_BATCH"]) <= 16


def test_shared_gpu_component_puts_stage_pods_on_gpu_slices_and_keeps_their_hpa_and_pdb(tmp_path):
    objects = render_combined(tmp_path, "gpu", ["shared-gpu"])
    deployments = by_kind(objects, "Deployment")
    pdbs, hpas = by_kind(objects, "PodDisruptionBudget"), by_kind(objects, "HorizontalPodAutoscaler")
    for stage in STAGES:
        resources = pod_spec(deployments[stage])["containers"][0]["resources"]
        assert resources["requests"]["nvidia.com/gpu.shared"] == resources["limits"]["nvidia.com/gpu.shared"] == 1
        assert "nvidia.com/gpu" not in resources["requests"] and "nvidia.com/gpu" not in resources["limits"]
        assert hpas[stage]["spec"]["scaleTargetRef"]["name"] == stage and pdbs[stage]["spec"]["maxUnavailable"] == 1
    assert "nvidia.com/gpu.shared" not in str(pod_spec(deployments["orchestrator"]))
    # The device plugin's configuration (applied by the cluster's administrator) advertises those slices.
    kv, versions = _validator()
    (plugin,) = [d for d in yaml.safe_load_all((K8S / "components" / "shared-gpu" / "device-plugin-config.yaml")
                                               .read_text()) if d]
    for version in versions:
        kv.validate(plugin, version, strict=True)
    sharing = yaml.safe_load(plugin["data"]["any"])["sharing"]["timeSlicing"]
    assert sharing["renameByDefault"] is True  # slices are nvidia.com/gpu.shared; whole-GPU pods stay off them
    (resource,) = sharing["resources"]
    assert resource["name"] == "nvidia.com/gpu" and resource["replicas"] >= len(STAGES)  # one GPU holds every stage


def test_checkpoint_job_fills_the_shared_volume_the_servers_read(overlay):
    _, objects = overlay
    (job,) = by_kind(objects, "Job").values()
    c = pod_spec(job)["containers"][0]
    assert c["command"] == ["python", "-m", "barkstream.services.cli", "checkpoint", "fetch"]
    assert c["args"][1] == config(objects)["BARKSTREAM_CHECKPOINT"]
    (pvc,) = by_kind(objects, "PersistentVolumeClaim").values()
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    claim = {v["name"]: v for v in pod_spec(job)["volumes"]}["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == pvc["metadata"]["name"]


def test_telemetry_goes_to_the_collector(overlay):
    _, objects = overlay
    endpoint = config(objects)["OTEL_EXPORTER_OTLP_ENDPOINT"]
    host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", endpoint).groups()
    service = by_kind(objects, "Service")[host]
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert host in by_kind(objects, "Deployment")
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("otel-collector")]
    collector = yaml.safe_load(cm["data"]["config.yaml"])
    assert set(collector["service"]["pipelines"]) >= {"traces", "metrics"}
    assert collector["exporters"]["prometheus"]["resource_to_telemetry_conversion"]["enabled"] is True


# --------------------------------------------------------------------------- the checkpoint Job's command


def test_checkpoint_fetch_downloads_verifies_and_marks_once(tmp_path, tiny_checkpoint_dir, monkeypatch, capsys):
    import huggingface_hub

    from barkstream.services.checkpoint.hub import COMPLETE_MARKER
    from barkstream.services.cli.main import main

    calls = []

    def fake_snapshot_download(repo_id, revision=None, local_dir=None, allow_patterns=None, **_):
        calls.append((repo_id, revision, allow_patterns))
        shutil.copytree(tiny_checkpoint_dir, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = tmp_path / "suno" / "bark-small"
    assert main(["checkpoint", "fetch", "suno/bark-small", str(out)]) == 0
    assert (out / COMPLETE_MARKER).is_file() and (out / "pytorch_model.bin").is_file()
    assert calls[0][0] == "suno/bark-small" and "config.json" in calls[0][2]
    assert main(["checkpoint", "fetch", str(out)]) == 0, "a second run (a re-applied Job) finds it complete"
    assert len(calls) == 1 and "already complete" in capsys.readouterr().out



def test_checkpoint_fetch_writes_no_marker_for_a_checkpoint_that_does_not_load(tmp_path, tiny_checkpoint_dir,
                                                                                monkeypatch):
    import huggingface_hub

    from barkstream.services.checkpoint.hub import COMPLETE_MARKER
    from barkstream.services.cli.main import main

    def incomplete_download(repo_id, revision=None, local_dir=None, allow_patterns=None, **_):
        shutil.copytree(tiny_checkpoint_dir, local_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("config.json"))
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", incomplete_download)
    assert main(["checkpoint", "fetch", str(tmp_path / "ck")]) == 1
    assert not (tmp_path / "ck" / COMPLETE_MARKER).exists()
