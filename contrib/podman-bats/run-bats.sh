#!/bin/bash
# Usage: run-bats.sh MODE   (after setup-env.sh MODE && build-image.sh MODE; for cnet, cnetd must run)
# Runs each test of tests/500-networking.bats separately (bats -f), inside netns cnbats-MODE,
# with a 420 s timeout per test. Logs: $B/MODE.log (all), MODE-tests/NN.log, MODE-summary.txt
set -u
MODE=$1; B=${CNET_BATS_DIR:-/var/tmp/cnet-bats}; D=$B/$MODE; NS=cnbats-$MODE
export PODMAN=/usr/bin/podman PODMAN_TEST_IMAGE_TAG=20221018
export CONTAINERS_CONF=$D/containers.conf CONTAINERS_STORAGE_CONF=$D/storage.conf
export TMPDIR=$D/batstmp
T=$B/tests; [ "${MODE%-v}" != "$MODE" ] && T=$B/tests-v
[ "$MODE" = cnet ] && export CNET_SOCKET=$B/cnetd.sock
[ "$MODE" = cnet-v ] && export CNET_SOCKET=$B/cnetd-v.sock
rm -rf $B/$MODE-tests; mkdir -p $B/$MODE-tests
: > $B/$MODE.log; : > $B/$MODE-summary.txt
n=0
while IFS= read -r name <&9; do
  n=$((n+1)); nn=$(printf %02d $n)
  re="^$(printf '%s' "$name" | sed 's/[][\.*^$()+?{}|/]/\\&/g')\$"
  start=$(date +%s)
  cd $T
  timeout -k 10 420 nsenter --net=/run/netns/$NS bats --tap -f "$re" 500-networking.bats > $B/$MODE-tests/$nn.log 2>&1 </dev/null 9<&-
  rc=$?
  dur=$(( $(date +%s) - start ))
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then res=TIMEOUT
  elif grep -q '^ok .*# skip' $B/$MODE-tests/$nn.log; then res=SKIP
  elif grep -q '^ok ' $B/$MODE-tests/$nn.log; then res=PASS
  elif grep -q '^not ok ' $B/$MODE-tests/$nn.log; then res=FAIL
  else res="ERROR(rc=$rc)"; fi
  printf '%s\t%s\t%ss\t%s\n' "$nn" "$res" "$dur" "$name" | tee -a $B/$MODE-summary.txt
  { echo "=================== $nn $name => $res (${dur}s)"; cat $B/$MODE-tests/$nn.log; } >> $B/$MODE.log
done 9< $T/names.txt
