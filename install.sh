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
args=(--socket /run/cnet/cnetd.sock --state-dir /var/lib/cnet)
# With Docker installed, cnetd also answers Docker's network and IPAM plugin
# protocol: `docker network create -d cnet --ipam-driver cnet` (docs/docker.md).
docker=
if [ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null; then
  docker=1
  args+=(--docker-plugin-socket /run/docker/plugins/cnet.sock)
fi
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  install -m 0644 contrib/cnetd.service /etc/systemd/system/cnetd.service
  if [ -n "$docker" ]; then
    # Before dockerd, which looks for the plugin when it restores its networks.
    install -d /etc/systemd/system/cnetd.service.d
    printf '[Unit]\nBefore=docker.service\n[Service]\nExecStart=\nExecStart=/usr/local/bin/cnetd %s\n' \
      "${args[*]}" >/etc/systemd/system/cnetd.service.d/docker.conf
  fi
  systemctl daemon-reload
  systemctl enable --now cnetd
else
  if [ -S /run/cnet/cnetd.sock ] && cnet version >/dev/null 2>&1; then
    echo "cnetd is already running"
  else
    nohup /usr/local/bin/cnetd "${args[@]}" >>/var/log/cnet/cnetd.log 2>&1 &
  fi
fi
for _ in $(seq 1 100); do
  if cnet version >/dev/null 2>&1; then echo "cnetd is ready on /run/cnet/cnetd.sock"; exit 0; fi
  sleep 0.1
done
echo "cnetd did not start: see /var/log/cnet/cnetd.log or journalctl -u cnetd" >&2
exit 1
