#!/usr/bin/env bash
# The chart and the end-to-end suite on kind: creates a kind cluster (hack/kind.sh down deletes
# it), builds the operator and stream-pod images and the e2e suite's two (livekit-server, and
# the publisher / pump.fun stand-in) with `docker build` (HAVEN_SKIP_BUILD=1: use the tags in
# HAVEN_OPERATOR_IMAGE / HAVEN_RECORDER_IMAGE as they are), loads them into the node, and
# runs `make e2e` against the cluster's kubeconfig, which installs the chart (and `helm test`s
# it), runs the suite, and removes what it installed.
# Needs docker, kind, helm and kubectl on PATH. Status: see README ("not tested here").
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-haven}
OPERATOR_IMAGE=${HAVEN_OPERATOR_IMAGE:-haven-operator:kind}
RECORDER_IMAGE=${HAVEN_RECORDER_IMAGE:-haven-recorder:kind}
LIVEKIT_IMAGE=${HAVEN_LIVEKIT_IMAGE:-haven-livekit:kind}
TESTKIT_IMAGE=${HAVEN_TESTKIT_IMAGE:-haven-testkit:kind}
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
  PYTHONPATH=localcluster python3 -m haven_localcluster.vendor  # hls.js for the viewer page
  docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
  docker build -f recorder/Dockerfile -t "$RECORDER_IMAGE" .
fi
docker build -f localcluster/livekit.Dockerfile -t "$LIVEKIT_IMAGE" .
docker build -f localcluster/Dockerfile --build-arg BASE="$RECORDER_IMAGE" -t "$TESTKIT_IMAGE" .
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$RECORDER_IMAGE" "$LIVEKIT_IMAGE" \
  "$TESTKIT_IMAGE"

# kind's default StorageClass (standard, rancher's local-path) holds the recordings.
make e2e KUBECONFIG="$KUBECONFIG_FILE" E2E_ARGS="--image-pull-policy=Never" \
  HAVEN_OPERATOR_IMAGE="$OPERATOR_IMAGE" HAVEN_RECORDER_IMAGE="$RECORDER_IMAGE" \
  HAVEN_LIVEKIT_IMAGE="$LIVEKIT_IMAGE" HAVEN_TESTKIT_IMAGE="$TESTKIT_IMAGE"
