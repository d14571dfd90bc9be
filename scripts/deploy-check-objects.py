"""Rules the rendered deployment objects must keep (scripts/deploy-check.sh).

Each argument is a multi-document YAML file; every problem is printed with
its file and object, and the exit code is 1 if there is any.
"""
import re
import sys

import yaml

problems = []
USERINFO = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")
ENV_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# The chart's Downward API variables and the OTLP resource built from them.
POD_ENV = {
    "K8S_POD_NAME": "metadata.name",
    "K8S_NAMESPACE_NAME": "metadata.namespace",
    "K8S_NODE_NAME": "spec.nodeName",
}
# The alerts of helm/rolecall/files/prometheus-rules.yaml: a PrometheusRule
# carries them all.
SHIPPED_ALERTS = {
    r["alert"]
    for g in yaml.safe_load(open("helm/rolecall/files/prometheus-rules.yaml"))["groups"]
    for r in g["rules"]
}
OTEL_ATTRIBUTES = ("k8s.pod.name=$(K8S_POD_NAME)", "k8s.namespace.name=$(K8S_NAMESPACE_NAME)",
                   "k8s.node.name=$(K8S_NODE_NAME)", "service.instance.id=$(K8S_POD_NAME)")


def bad(where, msg):
    problems.append(f"{where}: {msg}")


def check_file(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    if not deployments:
        bad(path, "no Deployment rendered")
    for kind in ("Secret",):
        for d in by_kind.get(kind, []):
            bad(f"{path} {kind}/{d['metadata']['name']}", "the chart must not render Secrets")
    for d in by_kind.get("ConfigMap", []):
        for k, v in (d.get("data") or {}).items():
            if USERINFO.search(v):
                bad(f"{path} ConfigMap/{d['metadata']['name']}", f"{k} holds a URL with a password")
    for name, d in deployments.items():
        w = f"{path} Deployment/{name}"
        pod = d["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            bad(w, "automountServiceAccountToken must be false")
        if not pod.get("serviceAccountName"):
            bad(w, "no serviceAccountName")
        for c in pod["containers"]:
            cw = f"{w} container {c['name']}"
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                bad(cw, "runAsNonRoot is not set")
            if sc.get("readOnlyRootFilesystem") is not True:
                bad(cw, "readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad(cw, "allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                bad(cw, "capabilities.drop is not [ALL]")
            seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
            if seccomp.get("type") != "RuntimeDefault":
                bad(cw, "seccompProfile is not RuntimeDefault")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        bad(cw, f"resources.{part}.{r} missing")
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                bad(cw, "livenessProbe is not GET /healthz")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                bad(cw, "readinessProbe is not GET /readyz")
            env = {e["name"]: e for e in c.get("env", [])}
            # $(VAR) expands only for a VAR defined earlier in the list.
            defined = set()
            for e in c.get("env", []):
                for ref in ENV_REF.findall(str(e.get("value", ""))):
                    if ref not in defined:
                        bad(cw, f"{e['name']} refers to $({ref}), which is not defined before it")
                defined.add(e["name"])
            if "helm.sh/chart" in d["metadata"].get("labels", {}):
                for name, field in POD_ENV.items():
                    got = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                    if got != field:
                        bad(cw, f"{name} is not the Downward API's {field}")
                attributes = str(env.get("OTEL_RESOURCE_ATTRIBUTES", {}).get("value", "")).split(",")
                if not all(a in attributes for a in OTEL_ATTRIBUTES):
                    bad(cw, "OTEL_RESOURCE_ATTRIBUTES lacks the pod's k8s.* attributes or service.instance.id")
            for e in env.values():
                if e["name"].startswith("ROLECALL_SECRET_") and "value" in e:
                    bad(cw, f"{e['name']} has an inline value")
                if "value" in e and USERINFO.search(str(e["value"])):
                    bad(cw, f"{e['name']} holds a URL with a password")
            if c["name"] == "worker":
                grace = int(env.get("ROLECALL__WORKER__SHUTDOWN_GRACE_S", {}).get("value", 25))
                tgps = pod.get("terminationGracePeriodSeconds", 30)
                if tgps <= grace:
                    bad(cw, f"terminationGracePeriodSeconds {tgps} does not exceed the drain ({grace} s)")
            if c["name"] == "scheduler" and d["spec"].get("replicas", 1) < 2:
                bad(w, "the scheduler needs two replicas (leader lease)")
            if (c["name"] == "scheduler" and "helm.sh/chart" in d["metadata"].get("labels", {})
                    and not pod.get("affinity", {}).get("podAntiAffinity")
                    and not pod.get("topologySpreadConstraints")):
                bad(w, "the scheduler's replicas are not spread over nodes (podAntiAffinity)")
    # The most pods a Deployment runs: its autoscaler's maximum, else replicas.
    most = {name: d["spec"].get("replicas", 1) for name, d in deployments.items()}
    for so in by_kind.get("ScaledObject", []):
        most[so["spec"]["scaleTargetRef"]["name"]] = so["spec"]["maxReplicaCount"]
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        most[h["spec"]["scaleTargetRef"]["name"]] = h["spec"]["maxReplicas"]
    pdb_selectors = [p["spec"]["selector"]["matchLabels"] for p in by_kind.get("PodDisruptionBudget", [])]
    for name, d in deployments.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        selected = any(all(labels.get(k) == v for k, v in s.items()) for s in pdb_selectors)
        if most.get(name, 1) >= 2 and not selected:
            bad(f"{path} Deployment/{name}", "no PodDisruptionBudget selects it")
        if most.get(name, 1) < 2 and selected:
            # minAvailable: 1 over a single pod blocks every node drain.
            bad(f"{path} Deployment/{name}", "a PodDisruptionBudget selects it though it runs one pod at most")
    for so in by_kind.get("ScaledObject", []):
        w = f"{path} ScaledObject/{so['metadata']['name']}"
        spec = so["spec"]
        if so["apiVersion"] != "keda.sh/v1alpha1":
            bad(w, "apiVersion is not keda.sh/v1alpha1")
        if spec["scaleTargetRef"]["name"] not in deployments:
            bad(w, "scaleTargetRef names no rendered Deployment")
        if not 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]:
            bad(w, "minReplicaCount/maxReplicaCount out of order")
        for t in spec["triggers"]:
            md = t["metadata"]
            if (t["type"] != "rabbitmq" or md.get("mode") != "QueueLength" or not md.get("queueName")
                    or md.get("excludeUnacknowledged") != "false" or md.get("protocol") != "http"):
                bad(w, "triggers must be rabbitmq QueueLength (ready + unacked) with a queueName")
            if not t.get("authenticationRef", {}).get("name"):
                bad(w, "trigger without authenticationRef")
    for sm in by_kind.get("ServiceMonitor", []):
        w = f"{path} ServiceMonitor/{sm['metadata']['name']}"
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            bad(w, "apiVersion is not monitoring.coreos.com/v1")
        if not any(e.get("port") == "ops" and e.get("path") == "/metrics" for e in sm["spec"]["endpoints"]):
            bad(w, "no endpoint on port ops, path /metrics")
    for pr in by_kind.get("PrometheusRule", []):
        w = f"{path} PrometheusRule/{pr['metadata']['name']}"
        if pr["apiVersion"] != "monitoring.coreos.com/v1":
            bad(w, "apiVersion is not monitoring.coreos.com/v1")
        alerts = {r.get("alert") for g in pr["spec"]["groups"] for r in g["rules"]}
        if not SHIPPED_ALERTS <= alerts:
            bad(w, f"lacks the shipped alerts {sorted(SHIPPED_ALERTS - alerts)}")
    if path.endswith("full.yaml") and len(by_kind.get("PrometheusRule", [])) != 1:
        bad(path, "the full example renders no PrometheusRule")
    # The full example's caps: ceil(8 x 0.5 / 16) = 1 and ceil(50 x 2 / 32) = 4.
    if path.endswith("full.yaml"):
        caps = {so["metadata"]["name"]: so["spec"]["maxReplicaCount"] for so in by_kind.get("ScaledObject", [])}
        caps.update({h["metadata"]["name"]: h["spec"]["maxReplicas"] for h in by_kind.get("HorizontalPodAutoscaler", [])})
        if caps != {"rolecall-worker-lever": 1, "rolecall-worker-okta": 4}:
            bad(path, f"replica caps {caps}, expected lever 1 (KEDA) and okta 4 (HPA)")
        for name in ("rolecall-worker-lever", "rolecall-worker-okta"):
            if "replicas" in deployments.get(name, {}).get("spec", {}):
                bad(f"{path} Deployment/{name}", "an autoscaled Deployment must not set replicas")


for p in sys.argv[1:]:
    check_file(p)
for p in problems:
    print(p, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"deploy-check-objects: {len(sys.argv) - 1} files keep the rules")
