#!/usr/bin/env bash
# The chart and the end-to-end suite on kind: creates a kind cluster (hack/kind.sh down deletes
# it), builds both images with `docker build` (HAVEN_SKIP_BUILD=1: use the tags in
# HAVEN_OPERATOR_IMAGE / HAVEN_RECORDER_IMAGE as they are), loads them into the node, installs
# the chart, and runs `make e2e` against the cluster's kubeconfig.
# Needs docker, kind, helm and kubectl on PATH. Status: see README ("not tested here").
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-haven}
OPERATOR_IMAGE=${HAVEN_OPERATOR_IMAGE:-haven-operator:kind}
RECORDER_IMAGE=${HAVEN_RECORDER_IMAGE:-haven-recorder:kind}
KUBECONFIG_FILE=${KIND_KUBECONFIG:-$PWD/.kind-kubeconfig}

if [ "${1:-}" = down ]; then
  exec kind delete cluster --name "$CLUSTER"
fi

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 180s --config - <<'YAML'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
YAML
else
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
fi
export KUBECONFIG=$KUBECONFIG_FILE

if [ -z "${HAVEN_SKIP_BUILD:-}" ]; then
  docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
  docker build -f recorder/Dockerfile -t "$RECORDER_IMAGE" .
fi
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$RECORDER_IMAGE"

helm upgrade --install haven charts/haven-streams --namespace haven-system --create-namespace \
  --set image.operator.repository="${OPERATOR_IMAGE%:*}" --set image.operator.tag="${OPERATOR_IMAGE##*:}" \
  --set image.streamPod.repository="${RECORDER_IMAGE%:*}" --set image.streamPod.tag="${RECORDER_IMAGE##*:}" \
  --set image.pullPolicy=Never --wait --timeout 300s
helm test haven --namespace haven-system --logs

make e2e KUBECONFIG="$KUBECONFIG_FILE" \
  HAVEN_OPERATOR_IMAGE="$OPERATOR_IMAGE" HAVEN_RECORDER_IMAGE="$RECORDER_IMAGE"
