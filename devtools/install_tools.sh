#!/usr/bin/env bash
# Installs the command-line tools the deploy validation needs into .tools/bin (gitignored).
# helm is compiled from its Go module (no prebuilt binary downloads on this workplace);
# an existing binary of the pinned version is reused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

mkdir -p "$BIN"

if [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short 2>/dev/null | grep -q "^${HELM_VERSION}"; then
  echo "helm ${HELM_VERSION} already at $BIN/helm"
else
  if ! command -v go >/dev/null 2>&1; then
    echo "go toolchain not found: needed to build helm" >&2
    exit 1
  fi
  echo "building helm ${HELM_VERSION} into $BIN (takes a few minutes)"
  # Version ldflags so `helm version` reports the pinned version instead of "v3.x-dirty".
  GOBIN="$BIN" CGO_ENABLED=0 go install \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  "$BIN/helm" version --short
fi
