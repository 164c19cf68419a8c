#!/usr/bin/env bash
# Offline validation of the packaging: Helm chart, Kubernetes manifests, Compose file,
# Dockerfile. No Docker engine or cluster is needed.
#
#   devtools/validate_deploy.sh            # all checks, then the pytest suite tests/deploy
#   devtools/validate_deploy.sh --no-tests # only the command-line checks
#   devtools/validate_deploy.sh --wheel    # also install the pinned deps and the wheel into a fresh venv as the
#                                          # image's builder stage does (needs the package index)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
HELM="$ROOT/.tools/bin/helm"
PROMTOOL="$ROOT/.tools/bin/promtool"
CHART="$ROOT/helm/xconv"
KUBE_VERSION=1.37.0
RUN_TESTS=1
WHEEL=0
for arg in "$@"; do
  case "$arg" in
    --no-tests) RUN_TESTS=0 ;;
    --wheel) WHEEL=1 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
step() { printf '\n== %s\n' "$*"; }

step "helm and promtool (devtools/install_tools.sh)"
bash "$ROOT/devtools/install_tools.sh"

step "helm lint --strict (default values and ci/*-values.yaml)"
"$HELM" lint --strict "$CHART"
for values in "$CHART"/ci/*-values.yaml; do
  case "$(basename "$values")" in fail-*) continue ;; esac
  "$HELM" lint --strict --quiet "$CHART" -f "$values"
done

step "helm template + Kubernetes schema validation (kubernetes-validate $KUBE_VERSION, CRD subsets)"
render() {  # name, extra helm args...
  local name="$1"; shift
  "$HELM" template xc "$CHART" --namespace conv --kube-version "$KUBE_VERSION" "$@" \
    >"$OUT/$name.yaml"
  "$PY" -m tests.deploy.manifests "$OUT/$name.yaml"
}
render default
for values in "$CHART"/ci/*-values.yaml; do
  name="$(basename "$values" .yaml)"
  case "$name" in
    fail-*)
      if "$HELM" template xc "$CHART" --kube-version "$KUBE_VERSION" -f "$values" \
          >/dev/null 2>"$OUT/$name.err"; then
        echo "FAIL: $name rendered but must be refused" >&2
        exit 1
      fi
      echo "refused as expected: $name: $(grep -o 'execution error.*' "$OUT/$name.err" | head -1)"
      ;;
    *) render "$name" -f "$values" ;;
  esac
done

step "alerting rules: promtool check rules + promtool test rules (synthetic series)"
"$PROMTOOL" check rules "$CHART/alerts/xconv-rules.yaml"
"$PROMTOOL" test rules "$CHART/tests/alerts/xconv-rules.test.yaml"

step "docker-compose.yml against the Compose specification"
"$ROOT/.venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

step "compose consumer config loads with xconv's settings loader"
XCONV_DEMO_PIXEL_TOKEN=validate "$PY" -c \
  'from consumer.settings import load_settings; s = load_settings("deploy/compose/config.toml"); print("ok --", s.kafka.bootstrap_servers, s.api.base_url)'

step "Dockerfile parses (Docker's parser)"
"$PY" -c 'import dockerfile; print("ok --", len(dockerfile.parse_file("Dockerfile")), "instructions")'

if [[ "$WHEEL" == 1 ]]; then
  step "pinned dependencies, then the wheel, into a fresh venv (the image's builder stage, without Docker)"
  "$PY" -m venv "$OUT/venv"
  "$PY" -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >"$OUT/requirements.txt"
  "$OUT/venv/bin/pip" install --quiet -c requirements/constraints.txt -r "$OUT/requirements.txt"
  "$PY" -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" >"$OUT/build-requirements.txt"
  "$PY" -m venv "$OUT/build"
  "$OUT/build/bin/pip" install --quiet -c requirements/constraints.txt -r "$OUT/build-requirements.txt"
  "$OUT/build/bin/pip" wheel --quiet --no-build-isolation --no-deps --wheel-dir "$OUT/wheels" .
  "$OUT/venv/bin/pip" install --quiet --no-deps "$OUT"/wheels/*.whl
  "$OUT/venv/bin/pip" check
  "$OUT/venv/bin/xconv" --version
fi

if [[ "$RUN_TESTS" == 1 ]]; then
  step "pytest tests/deploy"
  "$ROOT/.venv/bin/pytest" tests/deploy -q
fi
