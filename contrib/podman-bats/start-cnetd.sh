#!/bin/bash
# Usage: start-cnetd.sh MODE (cnet | cnet-v): fresh state, cnetd inside netns cnbats-MODE, pid in cnetd[-v].pid
B=${CNET_BATS_DIR:-/var/tmp/cnet-bats}; MODE=$1; SUF=""; [ "$MODE" = cnet-v ] && SUF=-v
rm -rf $B/state$SUF $B/cnetd$SUF.sock; mkdir -p $B/state$SUF
setsid nohup nsenter --net=/run/netns/cnbats-$MODE $B/bin/cnetd --socket $B/cnetd$SUF.sock --state-dir $B/state$SUF \
  --log-level info,cnetd=debug > $B/cnetd$SUF.log 2>&1 &
echo $! > $B/cnetd$SUF.pid
for i in $(seq 50); do [ -S $B/cnetd$SUF.sock ] && break; sleep 0.2; done
ls -la $B/cnetd$SUF.sock
