#!/bin/bash
# Usage: build-image.sh MODE  -- builds stand-in quay.io/libpod/testimage:20221018 in MODE's private storage
set -euo pipefail
MODE=$1; B=${CNET_BATS_DIR:-/var/tmp/cnet-bats}; D=$B/$MODE; NS=cnbats-$MODE
R=$B/rootfs
if [ ! -f $B/rootfs.tar ]; then
  rm -rf $R; mkdir -p $R/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/podman,var,dev,proc,sys}
  chmod 1777 $R/tmp
  cp /bin/busybox $R/bin/busybox
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox $R/bin/$a; done
  ln -s busybox $R/bin/busybox-extras      # alpine's busybox-extras (httpd); busybox runs argv0 'busybox*' as multiplexer
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' > $R/etc/passwd
  printf 'root:x:0:root\nnobody:x:65534:\n' > $R/etc/group
  echo 20221018 > $R/home/podman/testimage-id
  touch --date=@1600000000 $R/home/podman/testimage-id
  printf '#!/bin/sh\necho Confirmed: testimage pause invoked as $0\nwhile :; do\n    sleep 0.1\ndone\n' > $R/home/podman/pause
  chmod 755 $R/home/podman/pause
  tar -C $R -cf $B/rootfs.tar .
fi
TAR=$B/rootfs.tar
if [ "${MODE%-v}" != "$MODE" ]; then   # variant image: /bin/nc = nc/nc (busybox nc_bloaty-like -l -n -v)
  rm -rf $B/rootfs-v; mkdir $B/rootfs-v; tar -C $B/rootfs-v -xf $B/rootfs.tar
  rm -f $B/rootfs-v/bin/nc; cp $B/nc/nc $B/rootfs-v/bin/nc
  tar -C $B/rootfs-v -cf $B/rootfs-v.tar .; TAR=$B/rootfs-v.tar
fi
export CONTAINERS_CONF=$D/containers.conf CONTAINERS_STORAGE_CONF=$D/storage.conf
nsenter --net=/run/netns/$NS podman import \
  --change 'WORKDIR /home/podman' \
  --change 'CMD ["/bin/echo", "This container is intended for podman CI testing"]' \
  --change 'LABEL created_by=cnet-bats-standin' \
  $TAR quay.io/libpod/testimage:20221018
nsenter --net=/run/netns/$NS podman images
