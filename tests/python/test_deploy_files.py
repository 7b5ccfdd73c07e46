"""deploy/, the Dockerfile and .dockerignore: every file parses, and the examples agree with
the relay (ports, probes, the health command, the config the ConfigMap carries, the alert
rules in both forms). Metric names against a live /metrics: tests/deploy_files.rs.
"""
import fnmatch
import json
import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from conftest import BIN, ROOT, clean_env, free_port

DEPLOY = os.path.join(ROOT, "deploy")
ADMIN_PORT = 8791


def deploy_files(*exts):
    for folder, _, names in os.walk(DEPLOY):
        for name in sorted(names):
            if name.endswith(exts):
                yield os.path.join(folder, name)


def load_yaml(rel):
    with open(os.path.join(DEPLOY, rel)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_json(rel):
    with open(os.path.join(DEPLOY, rel)) as f:
        return json.load(f)


def test_every_yaml_and_json_file_in_deploy_parses():
    yamls = list(deploy_files(".yaml", ".yml"))
    jsons = list(deploy_files(".json"))
    assert len(yamls) >= 7 and len(jsons) >= 2, (yamls, jsons)
    for path in yamls:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path
    for path in jsons:
        with open(path) as f:
            assert isinstance(json.load(f), dict), path


K8S_VERSION = "1.33.0"  # native sidecars are on by default from 1.29, GA in 1.33


@pytest.mark.parametrize("rel", ["kubernetes/relay-sidecar.yaml", "kubernetes/servicemonitor.yaml"])
def test_kubernetes_core_objects_validate_against_the_api_schema(rel):
    from kubernetes_validate import validate

    checked = 0
    for doc in load_yaml(rel):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema bundled; its fields are checked below
        validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 1


def kinds(rel):
    return {d["kind"]: d for d in load_yaml(rel)}


def test_kubernetes_relay_is_a_native_sidecar_probed_on_the_admin_port():
    docs = kinds("kubernetes/relay-sidecar.yaml")
    assert set(docs) >= {"ServiceAccount", "ConfigMap", "Deployment", "PodMonitor"}
    assert "eks.amazonaws.com/role-arn" in docs["ServiceAccount"]["metadata"]["annotations"]
    pod = docs["Deployment"]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ADMIN_PORT)
    (relay,) = pod["spec"]["initContainers"]
    assert relay["restartPolicy"] == "Always"
    env = {e["name"]: e["value"] for e in relay["env"]}
    assert env["BEDROCK_RELAY_LISTEN"].startswith("127.0.0.1:")
    assert env["BEDROCK_RELAY_ADMIN_LISTEN"].endswith(f":{ADMIN_PORT}")
    port = {p["name"]: p["containerPort"] for p in relay["ports"]}["admin"]
    assert port == ADMIN_PORT
    for probe, path in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        assert relay[probe]["httpGet"] == {"path": path, "port": "admin"}, probe
    assert relay["resources"]["requests"]["memory"] and relay["resources"]["limits"]["memory"]
    assert not re.search(r"RSS_[A-Z_]+", open(os.path.join(DEPLOY, "kubernetes/relay-sidecar.yaml")).read()), \
        "resource comment carries measured numbers"
    sc = relay["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532 and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    (app,) = pod["spec"]["containers"]
    app_env = {e["name"]: e["value"] for e in app["env"]}
    assert app_env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == f"http://{env['BEDROCK_RELAY_LISTEN']}"
    # The config file the relay is started with is in the ConfigMap, mounted where args say.
    mount = relay["volumeMounts"][0]["mountPath"]
    (name,) = docs["ConfigMap"]["data"]
    assert relay["args"] == ["serve", "--config", f"{mount}/{name}"]
    monitor = docs["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert monitor["podMetricsEndpoints"][0]["port"] == "admin"


def test_the_configmap_config_is_accepted_by_the_relay(tmp_path):
    (cm,) = [d for d in load_yaml("kubernetes/relay-sidecar.yaml") if d["kind"] == "ConfigMap"]
    (text,) = cm["data"].values()
    tomllib.loads(text)
    path = tmp_path / "relay.toml"
    path.write_text(text)
    out = subprocess.run([BIN, "serve", "--config", str(path), "--region", "us-east-1", "--check"],
                         env=clean_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_service_monitor_selects_the_admin_service():
    docs = kinds("kubernetes/servicemonitor.yaml")
    svc, sm = docs["Service"], docs["ServiceMonitor"]
    assert svc["spec"]["ports"][0]["targetPort"] == ADMIN_PORT
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        assert svc["metadata"]["labels"][k] == v
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]


def test_alert_rules_are_complete_and_identical_in_both_forms():
    (rules,) = load_yaml("prometheus/alerts.yml")
    (operator,) = load_yaml("kubernetes/prometheusrule.yaml")
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"] == rules
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert len(alerts) >= 8
    for r in alerts:
        assert re.fullmatch(r"BedrockRelay[A-Za-z]+", r["alert"]), r
        assert r["expr"].strip() and re.fullmatch(r"\d+[smh]", r["for"]), r
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r
        assert r["annotations"]["summary"], r
        assert r["expr"].count("(") == r["expr"].count(")"), r["expr"]


def test_compose_file_validates_against_the_compose_spec():
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                          os.path.join(DEPLOY, "compose/docker-compose.yml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_wires_app_relay_prometheus_and_grafana():
    (compose,) = load_yaml("compose/docker-compose.yml")
    services = compose["services"]
    assert set(services) >= {"relay", "app", "prometheus", "bedrock-sim", "grafana"}
    relay, app = services["relay"], services["app"]
    assert app["network_mode"] == "service:relay"
    assert app["depends_on"]["relay"]["condition"] == "service_healthy"
    assert app["environment"]["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == f"http://{relay['environment']['BEDROCK_RELAY_LISTEN']}"
    assert relay["healthcheck"]["test"][:2] == ["CMD", "/usr/local/bin/bedrock-relay"]
    assert relay["environment"]["BEDROCK_RELAY_UPSTREAM"].startswith("http://bedrock-sim:")
    compose_dir = os.path.join(DEPLOY, "compose")
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            src = volume.split(":")[0]
            assert os.path.exists(os.path.join(compose_dir, src)), f"{name}: {src}"
    (prom,) = load_yaml("compose/prometheus.yml")
    (job,) = prom["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"relay:{ADMIN_PORT}"]
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    with open(os.path.join(compose_dir, "app.py")) as f:
        compile(f.read(), "app.py", "exec")


def test_ecs_task_runs_the_relay_as_a_healthy_sidecar():
    task = load_json("ecs/task-definition.json")
    assert task["networkMode"] == "awsvpc"
    containers = {c["name"]: c for c in task["containerDefinitions"]}
    relay, app = containers["bedrock-relay"], containers["app"]
    assert relay["essential"] and relay["healthCheck"]["command"][1:] == ["/usr/local/bin/bedrock-relay", "health"]
    assert app["dependsOn"] == [{"containerName": "bedrock-relay", "condition": "HEALTHY"}]
    env = {e["name"]: e["value"] for e in relay["environment"]}
    app_env = {e["name"]: e["value"] for e in app["environment"]}
    assert app_env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == f"http://{env['BEDROCK_RELAY_LISTEN']}"
    assert relay["stopTimeout"] > 30, "longer than the drain timeout"


def test_systemd_unit_has_its_sections_and_hardening():
    sections, current = {}, None
    with open(os.path.join(DEPLOY, "systemd/bedrock-relay.service")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, sep, value = line.partition("=")
            assert sep and current is not None, line
            current.setdefault(key, []).append(value)
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    assert service["ExecStart"][0].startswith("/usr/local/bin/bedrock-relay serve")
    for key in ["NoNewPrivileges", "ProtectSystem", "DynamicUser", "CapabilityBoundingSet",
                "RestrictAddressFamilies", "SystemCallFilter", "MemoryDenyWriteExecute"]:
        assert key in service, key
    assert service["RestartPreventExitStatus"] == ["64"], "config errors (exit 64) are not retried"


def test_dockerfile_runs_non_root_with_a_health_check_the_binary_has():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    assert re.search(r"^FROM gcr\.io/distroless/static\S*", text, re.M)
    assert re.search(r"^USER 65532:65532$", text, re.M)
    health = re.search(r'CMD \["/usr/local/bin/bedrock-relay", "health"\]', text)
    assert health, "HEALTHCHECK uses the binary's own probe"
    # Everything the build COPYs from the context survives .dockerignore.
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        patterns = [p.strip() for p in f if p.strip() and not p.startswith("#")]
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in src.split():
            ignored = False
            for p in patterns:
                neg = p.startswith("!")
                pat = p.lstrip("!").rstrip("/")
                if fnmatch.fnmatch(path.rstrip("/"), pat) or path.startswith(pat + "/"):
                    ignored = not neg
            assert not ignored, f"{path} is excluded by .dockerignore"
            assert os.path.exists(os.path.join(ROOT, path)), path


def test_health_subcommand_follows_the_admin_endpoint(relay, clean_sim):
    ok = subprocess.run([BIN, "health", "--url", relay.admin + "/readyz"], env=clean_env(),
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([BIN, "health", "--url", relay.admin + "/nope"], env=clean_env(),
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "404" in missing.stderr
    closed = subprocess.run([BIN, "health", "--url", f"http://127.0.0.1:{free_port()}/readyz"],
                            env=clean_env(), capture_output=True, text=True, timeout=30)
    assert closed.returncode == 1, closed.stderr
    # Without --url: the port of BEDROCK_RELAY_ADMIN_LISTEN (as in the relay's own container).
    port = relay.admin.rsplit(":", 1)[1]
    env = subprocess.run([BIN, "health"], env=clean_env(BEDROCK_RELAY_ADMIN_LISTEN=f"0.0.0.0:{port}"),
                         capture_output=True, text=True, timeout=30)
    assert env.returncode == 0, env.stderr
    # The compose example probes the simulator this way.
    sim = subprocess.run([BIN, "health", "--url", clean_sim.url + "/_sim/faults"], env=clean_env(),
                         capture_output=True, text=True, timeout=30)
    assert sim.returncode == 0, sim.stderr


@pytest.mark.parametrize("path", ["deploy/grafana/bedrock-relay-dashboard.json"])
def test_dashboard_panels_have_queries_and_unique_ids(path):
    with open(os.path.join(ROOT, path)) as f:
        dash = json.load(f)
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 12 and all(p["targets"] and p["targets"][0]["expr"] for p in graphs)
    for p in graphs:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
