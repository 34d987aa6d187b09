# tests/tests/virtio_net.rs in L1, where /dev/vhost-net exists (VIRTIO_NET_TEST: the compiled
# test, shipped with --binary): the card through the VMM's real plug (identity, MAC, features),
# a frame from the TX queue out of a TAP through vhost-net alone, a reset and a second session.
# No VM: the test drives the transport as a guest driver would.
. ../lib.sh
ls -l /dev/vhost-net /dev/net/tun
"$VIRTIO_NET_TEST" --exact virtio_net_is_a_network_card_or_a_clear_refusal --nocapture \
    --test-threads 1 >/tmp/test.log 2>&1
status=$?
sed 's/^/  test| /' /tmp/test.log
check virtio_net_host_test 0 'test result: ok. 1 passed' sh -c "cat /tmp/test.log; exit $status"
