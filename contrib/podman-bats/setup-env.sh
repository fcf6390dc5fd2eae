#!/bin/bash
# Usage: setup-env.sh MODE   (MODE = netavark | cnet)
# Creates $B/$MODE/{containers.conf,storage.conf}, netns cnbats-$MODE,
# and the stand-in test image in the private storage.
set -euo pipefail
MODE=$1
B=${CNET_BATS_DIR:-/var/tmp/cnet-bats}
D=$B/$MODE
NS=cnbats-$MODE
rm -rf $D; mkdir -p $D/tmp $D/networks $D/batstmp
ENGINE=""
SOCK=$B/cnetd.sock; [ "$MODE" = cnet-v ] && SOCK=$B/cnetd-v.sock
if [ "${MODE%-v}" = cnet ]; then
ENGINE="helper_binaries_dir = [\"$B/helpers\", \"/usr/lib/podman\", \"/usr/libexec/podman\"]
""conmon_env_vars = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\", \"CNET_SOCKET=$SOCK\"]"
fi
if [ "${MODE%-v}" = nvfilt ]; then
ENGINE="helper_binaries_dir = [\"$B/nv-helpers\", \"/usr/lib/podman\", \"/usr/libexec/podman\"]"
fi
cat > $D/containers.conf <<EOC
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$D/events.log"
tmp_dir = "$D/tmp"
runtime = "runc"
volume_path = "$D/volumes"
static_dir = "$D/storage/libpod"
$ENGINE
[network]
network_backend = "netavark"
network_config_dir = "$D/networks"
EOC
cat > $D/storage.conf <<EOC
[storage]
driver = "overlay"
graphroot = "$D/storage"
runroot = "$D/run"
EOC
ip netns del $NS 2>/dev/null || true
ip netns add $NS
ip netns exec $NS ip link set lo up
if [ "${MODE%-v}" != "$MODE" ]; then   # variant: give the namespace a non-loopback address for hostname -I
  ip netns exec $NS ip link add cnb0 type veth peer name cnb1
  ip netns exec $NS ip link set cnb1 up
  ip netns exec $NS ip addr add 198.51.100.1/24 dev cnb0
  ip netns exec $NS ip link set cnb0 up
fi
echo "netns $NS ready"
