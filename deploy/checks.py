#!/usr/bin/env python3
"""Structural checks of the deployment files, called by deploy/check.sh.

Each subcommand prints what it found and exits non-zero on the first class of problem.
Run from the repository root:  python3 deploy/checks.py <command> [args]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DEPLOY = Path("deploy")
ALERTS = DEPLOY / "prometheus/rules/weft-alerts.yml"
PROMETHEUS_RULE = DEPLOY / "k8s/prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana/dashboards/weft.json"
COMPOSE = DEPLOY / "compose.yaml"

# Custom resources: no core Kubernetes schema to validate them against.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}

# The metric names of the design contract (DESIGN.md section 7 plus the fleet facts).
CONTRACT_METRICS = {
    "weft_webhooks_received_total",
    "weft_runs_started_total",
    "weft_runs_finished_total",
    "weft_run_duration_seconds",
    "weft_node_duration_seconds",
    "weft_external_requests_total",
    "weft_node_retries_total",
    "weft_tasks_in_flight",
    "weft_queue_messages",
    "weft_queue_consumers",
    "weft_dispatch_latency_seconds",
    "weft_dead_letters_total",
    "weft_http_requests_total",
    "weft_http_request_duration_seconds",
    "weft_build_info",
}
HISTOGRAMS = {"weft_run_duration_seconds", "weft_node_duration_seconds",
              "weft_dispatch_latency_seconds", "weft_http_request_duration_seconds"}
STANDARD_METRICS = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes",
                    "process_open_fds"}


class CheckError(Exception):
    pass


def fail(msg: str) -> None:
    raise CheckError(msg)


def load_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


# --- metric names ------------------------------------------------------------

def metric_names(expr: str) -> set[str]:
    # Drop label matchers and strings so label values are not taken for metrics.
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    return set(re.findall(r"\b((?:weft|process)_[a-z0-9_]+|up)\b", expr))


def check_metric_names(exprs: list[str], where: str) -> int:
    allowed = set(CONTRACT_METRICS) | STANDARD_METRICS
    for h in HISTOGRAMS:
        allowed |= {h + "_bucket", h + "_sum", h + "_count"}
    unknown = set()
    for e in exprs:
        unknown |= metric_names(e) - allowed
    if unknown:
        fail(f"{where} uses metrics outside the contract: {', '.join(sorted(unknown))}")
    return len(exprs)


# --- prometheus rules --------------------------------------------------------

def render_prometheus_rule() -> str:
    rules = ALERTS.read_text()
    body = rules[rules.index("groups:"):]
    indented = "".join("  " + line if line.strip() else line for line in body.splitlines(True))
    header = (
        "# GENERATED from deploy/prometheus/rules/weft-alerts.yml (the single source of the\n"
        "# alerting rules); deploy/check.sh fails when the two differ. Regenerate with:\n"
        "#   bash deploy/check.sh --regen-prometheusrule\n"
        "# kube-prometheus-stack only loads PrometheusRules carrying its release label by\n"
        "# default: add e.g. `release: kube-prometheus-stack` in an overlay.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: weft-alerts\n"
        "spec:\n"
    )
    return header + indented


def cmd_regen_prometheusrule() -> None:
    PROMETHEUS_RULE.write_text(render_prometheus_rule())
    print(f"wrote {PROMETHEUS_RULE}")


def cmd_alerts() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    exprs, names = [], []
    for group in rules["groups"]:
        for rule in group["rules"]:
            exprs.append(rule["expr"])
            names.append(rule.get("alert") or rule.get("record"))
            if "alert" in rule:
                sev = rule.get("labels", {}).get("severity")
                if sev not in {"critical", "warning", "info"}:
                    fail(f"alert {rule['alert']} has no severity label critical|warning|info")
                if "summary" not in rule.get("annotations", {}):
                    fail(f"alert {rule['alert']} has no summary annotation")
    check_metric_names(exprs, str(ALERTS))
    required = {
        "WeftRunFailureRatioHigh", "WeftDispatchLatencyHigh", "WeftTaskQueueGrowing",
        "WeftQueueWithoutConsumers", "WeftDeadLettersPresent", "WeftConnector5xxRatioHigh",
        "WeftTargetDown",
    }
    missing = required - set(names)
    if missing:
        fail(f"missing alerts: {', '.join(sorted(missing))}")
    generated = yaml.safe_load(PROMETHEUS_RULE.read_text())
    if generated.get("spec") != rules:
        fail(f"{PROMETHEUS_RULE} is out of date with {ALERTS}: run bash deploy/check.sh --regen-prometheusrule")
    print(f"{len(names)} alerts, metrics within the contract, {PROMETHEUS_RULE.name} in sync")


# --- grafana -----------------------------------------------------------------

def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def cmd_dashboard(promtool: str) -> None:
    try:
        dash = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        fail(f"{DASHBOARD} is not valid JSON: {e}")
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dash:
            fail(f"dashboard has no {key}")
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        fail("duplicate panel ids")
    rows = [p["title"] for p in panels if p["type"] == "row"]
    for wanted in ("Triggers", "Runs", "Nodes by connector", "Queues", "Workers", "Errors"):
        if wanted not in rows:
            fail(f"dashboard has no row '{wanted}' (rows: {rows})")
    for p in panels:
        g = p.get("gridPos", {})
        if not all(k in g for k in ("h", "w", "x", "y")) or g["x"] + g["w"] > 24:
            fail(f"panel '{p['title']}' has a bad gridPos {g}")
        if p["type"] != "row" and not p.get("targets"):
            fail(f"panel '{p['title']}' has no query")
    exprs = dashboard_exprs(dash)
    check_metric_names([e for _, e in exprs], str(DASHBOARD))
    # PromQL syntax: substitute the dashboard variables and let promtool parse every query.
    subst = {"$__rate_interval": "5m", "$namespace": "weft", "$connector": ".*"}
    rules = []
    for i, (title, expr) in enumerate(exprs):
        for k, v in subst.items():
            expr = expr.replace(k, v)
        if "$" in expr:
            fail(f"panel '{title}' uses an unknown variable: {expr}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        tmp = f.name
    res = subprocess.run([promtool, "check", "rules", tmp], capture_output=True, text=True)
    Path(tmp).unlink()
    if res.returncode != 0:
        fail("promtool rejects a dashboard query:\n" + res.stdout + res.stderr)
    print(f"valid JSON, {len(rows)} rows, {len(panels) - len(rows)} panels, "
          f"{len(exprs)} queries parsed by promtool, metrics within the contract")


# --- compose -----------------------------------------------------------------

def cmd_compose() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc.get("services") or {}
    required = ["postgres", "rabbitmq", "migrate", "gateway", "scheduler",
                "worker-1", "worker-2", "prometheus", "grafana"]
    missing = [s for s in required if s not in services]
    if missing:
        fail(f"compose.yaml lacks services: {', '.join(missing)}")
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            fail(f"{name}: depends_on must use conditions, not a list")
        for dep, spec in deps.items():
            if dep not in services:
                fail(f"{name} depends on unknown service {dep}")
            if spec.get("condition") not in conditions:
                fail(f"{name} -> {dep}: bad condition {spec.get('condition')}")
            if spec["condition"] == "service_healthy" and "healthcheck" not in services[dep]:
                fail(f"{name} waits for {dep} to be healthy but {dep} has no healthcheck")
        if name != "migrate" and "healthcheck" not in svc:
            fail(f"{name} has no healthcheck")
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("."):
                if not (COMPOSE.parent / src).exists():
                    fail(f"{name} mounts {src}, which does not exist")
    top_secrets = doc.get("secrets") or {}
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        granted = set()
        for ref in svc.get("secrets") or []:
            source = ref if isinstance(ref, str) else ref.get("source")
            if source not in top_secrets:
                fail(f"{name} uses the undefined secret {source}")
            target = source if isinstance(ref, str) else ref.get("target", source)
            granted.add(target if target.startswith("/") else f"/run/secrets/{target}")
        _check_file_settings(name, env, granted)
    gw = services["gateway"]["depends_on"]
    if gw.get("migrate", {}).get("condition") != "service_completed_successfully":
        fail("gateway must wait for migrate to complete successfully")
    if services["migrate"].get("command") != ["weft-gateway", "migrate"]:
        fail("migrate must run weft-gateway migrate")
    for name in ("migrate", "gateway", "scheduler", "worker-1", "worker-2"):
        build = services[name].get("build") or {}
        dockerfile = COMPOSE.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        if not dockerfile.resolve().is_file() or dockerfile.resolve() != Path("Dockerfile").resolve():
            fail(f"{name} is not built from the root Dockerfile ({dockerfile})")
    print(f"{len(services)} services: {', '.join(services)}; depends_on conditions and mounts valid")


def _check_file_settings(where: str, env: dict, files: set) -> None:
    """Each `*_FILE` setting names a file the container gets; none is set both ways."""
    for var, value in env.items():
        if not var.endswith("_FILE"):
            continue
        if value not in files:
            fail(f"{where}: {var}={value} is no secret file the container gets ({', '.join(sorted(files)) or 'none'})")
        if var.removesuffix("_FILE") in env:
            fail(f"{where}: sets both {var.removesuffix('_FILE')} and {var} (the service refuses to start)")


# --- dockerfile --------------------------------------------------------------

def cmd_dockerfile() -> None:
    text = Path("Dockerfile").read_text()
    needed = {
        "cargo-chef planner": r"cargo chef prepare",
        "cargo-chef dependency layer": r"cargo chef cook --release",
        "release build of all binaries": r"cargo build --release[^\n]*--bins",
        "non-root numeric USER": r"^USER [1-9][0-9]*(:[0-9]+)?\s*$",
    }
    for what, pattern in needed.items():
        if not re.search(pattern, text, re.M):
            fail(f"Dockerfile: no {what} ({pattern})")
    for b in ("weft-gateway", "weft-scheduler", "weft-worker"):
        if b not in text:
            fail(f"Dockerfile does not ship {b}")
    ignore = Path(".dockerignore").read_text().split()
    for entry in ("target/", ".git/", ".weft/"):
        if entry not in ignore:
            fail(f".dockerignore does not exclude {entry}")
    print("multi-stage cargo-chef build, non-root runtime with the three binaries")


# --- kubernetes --------------------------------------------------------------

def cmd_render_fallback(kdir: str) -> None:
    """Without a kustomize binary: concatenate the listed resources, set the namespace."""
    kdir_p = Path(kdir)
    k = yaml.safe_load((kdir_p / "kustomization.yaml").read_text())
    ns = k.get("namespace")
    docs = []
    for res in k["resources"]:
        for d in load_yaml_docs((kdir_p / res).read_text()):
            if ns and d["kind"] != "Namespace":
                d.setdefault("metadata", {})["namespace"] = ns
            docs.append(d)
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))


def cmd_split(rendered: str, core_out: str) -> None:
    docs = load_yaml_docs(Path(rendered).read_text())
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    crds = [d for d in docs if d["kind"] in CRD_KINDS]
    Path(core_out).write_text(yaml.safe_dump_all(core, sort_keys=False))
    for d in crds:
        print(f"{d['kind']}/{d['metadata']['name']}")


def _containers(podspec: dict) -> list[dict]:
    return podspec.get("initContainers", []) + podspec.get("containers", [])


def cmd_k8s_policy(rendered: str) -> None:
    docs = load_yaml_docs(Path(rendered).read_text())
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    for kind in ("Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service",
                 "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject",
                 "TriggerAuthentication", "ServiceMonitor", "NetworkPolicy"):
        if kind not in by_kind:
            fail(f"rendered manifests contain no {kind}")
    for name in ("weft-gateway", "weft-scheduler", "weft-worker"):
        if name not in by_kind["Deployment"]:
            fail(f"no Deployment {name}")

    cm_keys = {n: set((d.get("data") or {}).keys()) for n, d in by_kind["ConfigMap"].items()}
    secret_keys = {n: set((d.get("stringData") or {}).keys()) | set((d.get("data") or {}).keys())
                   for n, d in by_kind["Secret"].items()}
    workloads = list(by_kind["Deployment"].values()) + list(by_kind["Job"].values())
    pod_labels = {}
    for w in workloads:
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        pod_labels[name] = w["spec"]["template"]["metadata"]["labels"]
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot"):
            fail(f"{name}: pod securityContext.runAsNonRoot is not true")
        if w["kind"] == "Deployment" and pod.get("terminationGracePeriodSeconds", 30) <= 30:
            fail(f"{name}: terminationGracePeriodSeconds must exceed the 30s drain timeout")
        for c in _containers(pod):
            sc = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(f"{where}: readOnlyRootFilesystem must be true")
            if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
                fail(f"{where}: capabilities must drop ALL")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        fail(f"{where}: no resources.{part}.{r}")
            refs_cm = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
            if not refs_cm:
                fail(f"{where}: does not load the ConfigMap (envFrom)")
            for cm in refs_cm:
                if cm not in cm_keys:
                    fail(f"{where}: envFrom unknown ConfigMap {cm}")
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] not in secret_keys.get(ref["name"], set()):
                    fail(f"{where}: env {e['name']} refers to missing secret key {ref['name']}/{ref['key']}")
            secret_files = set()
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for m in c.get("volumeMounts", []):
                secret = (volumes.get(m["name"]) or {}).get("secret")
                if not secret:
                    continue
                keys = secret_keys.get(secret["secretName"])
                if keys is None:
                    fail(f"{where}: mounts the unknown Secret {secret['secretName']}")
                items = secret.get("items") or [{"key": k, "path": k} for k in sorted(keys)]
                for item in items:
                    if item["key"] not in keys:
                        fail(f"{where}: mounts missing secret key {secret['secretName']}/{item['key']}")
                    secret_files.add(f"{m['mountPath'].rstrip('/')}/{item['path']}")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            _check_file_settings(where, env, secret_files)
            uses_secret_env = any((e.get("valueFrom") or {}).get("secretKeyRef") for e in c.get("env", []))
            if not uses_secret_env and not any(v in secret_files for v in env.values()):
                fail(f"{where}: uses no key of the Secret")
            if w["kind"] == "Deployment":
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                if "metrics" not in ports:
                    fail(f"{where}: no port named metrics")
                for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                    hg = (c.get(probe) or {}).get("httpGet") or {}
                    if hg.get("path") != path or hg.get("port") not in ("metrics", ports["metrics"]):
                        fail(f"{where}: {probe} must be GET {path} on the metrics port")

    def selects(selector: dict, labels: dict) -> bool:
        for k, v in (selector.get("matchLabels") or {}).items():
            if labels.get(k) != v:
                return False
        for expr in selector.get("matchExpressions") or []:
            val = labels.get(expr["key"])
            if expr["operator"] == "In" and val not in expr["values"]:
                return False
            if expr["operator"] == "NotIn" and val in expr["values"]:
                return False
            if expr["operator"] == "Exists" and val is None:
                return False
        return True

    for name, svc in by_kind["Service"].items():
        sel = svc["spec"]["selector"]
        if not any(all(labels.get(k) == v for k, v in sel.items()) for labels in pod_labels.values()):
            fail(f"Service {name} selects no pod")
    for name, pdb in by_kind["PodDisruptionBudget"].items():
        if not any(selects(pdb["spec"]["selector"], lb) for lb in pod_labels.values()):
            fail(f"PodDisruptionBudget {name} selects no pod")
    for name in ("weft-gateway", "weft-scheduler", "weft-worker"):
        if not any(selects(p["spec"]["selector"], pod_labels[name]) for p in by_kind["PodDisruptionBudget"].values()):
            fail(f"no PodDisruptionBudget covers {name}")
    for name, hpa in by_kind["HorizontalPodAutoscaler"].items():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in by_kind["Deployment"]:
            fail(f"HPA {name} targets a missing workload {ref}")
    for name, so in by_kind["ScaledObject"].items():
        if so["spec"]["scaleTargetRef"]["name"] not in by_kind["Deployment"]:
            fail(f"ScaledObject {name} targets a missing Deployment")
        if not 1 <= so["spec"].get("minReplicaCount", 0) < so["spec"]["maxReplicaCount"]:
            fail(f"ScaledObject {name}: need 1 <= minReplicaCount < maxReplicaCount")
        for trig in so["spec"]["triggers"]:
            auth = (trig.get("authenticationRef") or {}).get("name")
            if auth not in by_kind["TriggerAuthentication"]:
                fail(f"ScaledObject {name}: unknown TriggerAuthentication {auth}")
            if trig["type"] == "rabbitmq" and not trig["metadata"].get("queueName", "").endswith(".tasks"):
                fail(f"ScaledObject {name}: rabbitmq trigger must watch the tasks queue")
    for name, ta in by_kind["TriggerAuthentication"].items():
        for ref in ta["spec"].get("secretTargetRef", []):
            if ref["key"] not in secret_keys.get(ref["name"], set()):
                fail(f"TriggerAuthentication {name}: missing secret key {ref['name']}/{ref['key']}")
    metric_services = {n for n, s in by_kind["Service"].items()
                       if any(p.get("name") == "metrics" for p in s["spec"]["ports"])}
    for name, sm in by_kind["ServiceMonitor"].items():
        chosen = {n for n in metric_services
                  if selects(sm["spec"]["selector"], by_kind["Service"][n]["metadata"].get("labels", {}))}
        if chosen != {"weft-gateway", "weft-scheduler", "weft-worker"}:
            fail(f"ServiceMonitor {name} selects {sorted(chosen)}, want the three services")
    netpols = by_kind["NetworkPolicy"].values()
    for name, labels in pod_labels.items():
        if not any(selects(np["spec"]["podSelector"], labels) and np["spec"]["podSelector"] for np in netpols):
            fail(f"no NetworkPolicy of its own for {name}")
    if not any(np["spec"]["podSelector"] == {} for np in netpols):
        fail("no default-deny NetworkPolicy")
    print(f"{len(docs)} resources: security contexts, probes, resources, Secret/ConfigMap keys, "
          f"selectors, autoscaler and monitor targets consistent")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    commands = {
        "alerts": cmd_alerts,
        "regen-prometheusrule": cmd_regen_prometheusrule,
        "dashboard": cmd_dashboard,
        "compose": cmd_compose,
        "dockerfile": cmd_dockerfile,
        "render-fallback": cmd_render_fallback,
        "split": cmd_split,
        "k8s-policy": cmd_k8s_policy,
    }
    if cmd not in commands:
        print(f"unknown command {cmd}; one of {', '.join(commands)}", file=sys.stderr)
        return 2
    try:
        commands[cmd](*args)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
