#!/usr/bin/env bash
# Installs the command-line tools the deploy validation needs into .tools/bin (gitignored).
# helm is compiled from its Go module (no prebuilt binary downloads on this workplace);
# an existing binary of the pinned version is reused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

mkdir -p "$BIN"

# helm's default Kubernetes version for `helm template` / `helm lint` comes from ldflags
# (as in helm's Makefile: client-go v0.37 -> Kubernetes 1.37); without them it is 1.20.
K8S_MINOR="${HELM_K8S_MINOR:-37}"
STAMP="$BIN/.helm-build"
WANT="helm ${HELM_VERSION} k8s 1.${K8S_MINOR}"

if [[ -x "$BIN/helm" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "reusing $WANT at $BIN/helm"
else
  if ! command -v go >/dev/null 2>&1; then
    echo "go toolchain not found: needed to build helm" >&2
    exit 1
  fi
  echo "building $WANT into $BIN (takes a few minutes)"
  LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    LDFLAGS+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${K8S_MINOR}"
  done
  GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -ldflags "$LDFLAGS" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  echo "$WANT" >"$STAMP"
fi
"$BIN/helm" version --short

# promtool (Prometheus's own rule checker and rule unit-test runner) for the chart's
# alerting rules. The Go module's v0.3XX.Y is Prometheus 3.XX.Y.
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
PROMTOOL_STAMP="$BIN/.promtool-build"
PROMTOOL_WANT="promtool ${PROMTOOL_VERSION}"
if [[ -x "$BIN/promtool" && -f "$PROMTOOL_STAMP" && "$(cat "$PROMTOOL_STAMP")" == "$PROMTOOL_WANT" ]]; then
  echo "reusing $PROMTOOL_WANT at $BIN/promtool"
else
  if ! command -v go >/dev/null 2>&1; then
    echo "go toolchain not found: needed to build promtool" >&2
    exit 1
  fi
  echo "building $PROMTOOL_WANT into $BIN (takes a few minutes)"
  GOBIN="$BIN" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@${PROMTOOL_VERSION}"
  echo "$PROMTOOL_WANT" >"$PROMTOOL_STAMP"
fi
"$BIN/promtool" --version | head -1
