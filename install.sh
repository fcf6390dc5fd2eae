#!/usr/bin/env bash
# Quick start, step 1: install what cnet needs, build it, install the
# binaries to /usr/local/bin and start cnetd with its embedded store
# (/var/lib/cnet) on /run/cnet/cnetd.sock. Run as root.
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "run install.sh as root" >&2; exit 1; }
scripts/install-deps
scripts/build-release
install -m 0755 target/release/cnetd target/release/cnet /usr/local/bin/
install -d /opt/cni/bin && install -m 0755 target/release/cnet-cni /opt/cni/bin/
# Podman's network backend on cnet; Podman uses it once switched (docs/podman.md).
install -m 0755 target/release/cnet-netavark /usr/local/bin/
install -d /usr/local/libexec/cnet && ln -sf /usr/local/bin/cnet-netavark /usr/local/libexec/cnet/netavark
mkdir -p /run/cnet /var/lib/cnet /var/log/cnet
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  install -m 0644 contrib/cnetd.service /etc/systemd/system/cnetd.service
  systemctl daemon-reload
  systemctl enable --now cnetd
else
  if [ -S /run/cnet/cnetd.sock ] && cnet version >/dev/null 2>&1; then
    echo "cnetd is already running"
  else
    nohup /usr/local/bin/cnetd >>/var/log/cnet/cnetd.log 2>&1 &
  fi
fi
for _ in $(seq 1 100); do
  if cnet version >/dev/null 2>&1; then echo "cnetd is ready on /run/cnet/cnetd.sock"; exit 0; fi
  sleep 0.1
done
echo "cnetd did not start: see /var/log/cnet/cnetd.log or journalctl -u cnetd" >&2
exit 1
