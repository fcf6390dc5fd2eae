#!/bin/bash
# Usage: prepare.sh PODMAN_GIT_DIR [CNET_BIN_DIR]
# Fills $CNET_BATS_DIR (default /var/tmp/cnet-bats): Podman v4.3.1's
# test/system (from a git clone of containers/podman, tag v4.3.1) with
# private-config.patch (tests/) and also variant.patch (tests-v/), copies of
# cnetd and cnet-netavark (from CNET_BIN_DIR, default target/debug), the
# helper directories, and the stand-in nc for the variant image.
set -euo pipefail
SRC=$1
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${2:-$HERE/../../target/debug}
B=${CNET_BATS_DIR:-/var/tmp/cnet-bats}
mkdir -p $B/bin $B/helpers $B/nv-helpers $B/nc $B/tests $B/tests-v
cp $BIN/cnetd $BIN/cnet-netavark $B/bin/
cp $B/bin/cnet-netavark $B/helpers/netavark          # a regular file: Podman takes no symlink to a directory
cp $HERE/netavark-quiet $B/nv-helpers/netavark
gcc -static -O2 -o $B/nc/nc $HERE/nc.c
for t in tests tests-v; do
  git -C "$SRC" archive v4.3.1 test/system | tar -x -C $B/$t --strip-components=2
  patch -s -d $B/$t -p3 < $HERE/private-config.patch
done
patch -s -d $B/tests-v -p3 < $HERE/variant.patch
grep -o '^@test "[^"]*"' $B/tests/500-networking.bats | sed 's/^@test "//; s/"$//' > $B/tests/names.txt
cp $B/tests/names.txt $B/tests-v/names.txt
for s in setup-env.sh build-image.sh start-cnetd.sh run-bats.sh; do cp $HERE/$s $B/; done
echo "ready in $B: cd $B && ./setup-env.sh MODE && ./build-image.sh MODE && [./start-cnetd.sh MODE] && ./run-bats.sh MODE"
