# shellcheck shell=bash disable=SC2154  # sourced by nested-kvm.sh: modules is its
# Sourced by scripts/nested-kvm.sh on the host: the kernel's vhost-net (with tun) for L1, whose
# kernel has them where the host's may not. The test binary comes with --binary PATH and
# --arg VIRTIO_NET_TEST=PATH (tests/tests/virtio_net.rs passes its own).
modules="$modules vhost_net"
