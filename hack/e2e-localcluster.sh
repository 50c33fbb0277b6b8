#!/usr/bin/env bash
# The e2e suite against the local cluster started on its own, exactly as against any cluster:
# `haven-localcluster up` in a state directory of its own, `make e2e` given only its kubeconfig
# and the images built here (kubectl and helm from its bin/), then `down --purge`. Needs root,
# as `make up` does. Arguments go to pytest (E2E_ARGS), e.g. hack/e2e-localcluster.sh -x -v.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${HAVEN_E2E_STATE_DIR:-${TMPDIR:-/tmp}/haven-e2e-localcluster}
lc() { .venv/bin/haven-localcluster --state-dir "$STATE" "$@"; }
ref() { lc images "$1" | awk -v name="$1" '$1 == name {print $NF}'; }

trap 'lc down --purge' EXIT
lc up
PATH=$STATE/bin:$PATH make --no-print-directory e2e KUBECONFIG="$STATE/kubeconfig" \
  HAVEN_OPERATOR_IMAGE="$(ref operator)" HAVEN_RECORDER_IMAGE="$(ref recorder)" \
  HAVEN_LIVEKIT_IMAGE="$(ref livekit)" HAVEN_TESTKIT_IMAGE="$(ref testkit)" E2E_ARGS="$*"
