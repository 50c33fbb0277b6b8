#!/usr/bin/env bash
# Installs the Debian packages the project needs, if any are missing. Idempotent.
set -euo pipefail
packages=(
  iproute2   # ss: tests check what listens where
  chromium   # the viewer page is tested in headless Chromium (Playwright drives it)
  # The local cluster's node: runtime, CNI plugins, kube-proxy's tools, the image builders
  containerd runc containernetworking-plugins iptables conntrack
  buildah debootstrap debian-archive-keyring
  golang-go  # only if no `go` is on PATH (see below)
)
want=()
for p in "${packages[@]}"; do
  [ "$p" = golang-go ] && { command -v go >/dev/null && continue; }
  dpkg -s "$p" >/dev/null 2>&1 || want+=("$p")
done
[ ${#want[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${want[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}"
