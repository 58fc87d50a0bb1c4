#!/bin/sh
# Moves a floating IP address with shoal's primary selection (Keepalived's notify_master /
# notify_backup / notify_fault). Give it to all three hooks:
#
#   shoal agent --group lb --priority 150 --check haproxy=http:http://127.0.0.1:8404/health \
#     --on-primary '/path/floating-ip.sh 10.250.1.50/24 eth0' \
#     --on-backup  '/path/floating-ip.sh 10.250.1.50/24 eth0' \
#     --on-fault   '/path/floating-ip.sh 10.250.1.50/24 eth0'
#
# SHOAL_STATE (set by shoal) says what this node just became:
#   primary        add ADDRESS/PREFIX to INTERFACE, then announce it with one gratuitous ARP
#                  (arping -U), so that neighbours send to this node's MAC address at once;
#   backup, fault  remove the address (nothing to do if this node does not hold it).
# Both are idempotent: a repeated or out-of-order call leaves the right state.
# Needs root (CAP_NET_ADMIN) and iputils' arping. On a cloud, replace the two `ip` lines with the
# provider's CLI (e.g. `aws ec2 associate-address`).
set -u
if [ $# -ne 2 ]; then
    echo "usage: floating-ip.sh ADDRESS/PREFIX INTERFACE (run by shoal --on-primary/--on-backup/--on-fault)" >&2
    exit 64
fi
addr=$1
dev=$2
case "${SHOAL_STATE:-}" in
primary)
    ip addr replace "$addr" dev "$dev" || exit 1
    # arping -U -c 1 sends at once, then waits a second for replies that never come: let it
    # wait in the background, so that the hook returns now.
    arping -U -c 1 -I "$dev" "${addr%/*}" >/dev/null 2>&1 &
    echo "floating-ip: $addr added to $dev (primary of ${SHOAL_GROUP:-?}, was '${SHOAL_PREVIOUS_PRIMARY:-}')"
    ;;
backup | fault)
    if ip -o addr show dev "$dev" | grep -q " ${addr} "; then
        ip addr del "$addr" dev "$dev" || exit 1
        echo "floating-ip: $addr removed from $dev ($SHOAL_STATE; primary is '${SHOAL_PRIMARY:-}')"
    fi
    ;;
*)
    echo "floating-ip.sh: SHOAL_STATE is '${SHOAL_STATE:-}'; expected primary, backup or fault (run it from shoal's --on-primary/--on-backup/--on-fault)" >&2
    exit 64
    ;;
esac
