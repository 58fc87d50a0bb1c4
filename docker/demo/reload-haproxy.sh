#!/bin/sh
# Hitless reload: the master starts new workers with the new config, old ones finish their
# requests. Before HAProxy is up there is nothing to reload (ha.sh starts it on the file).
[ -s /tmp/haproxy.pid ] || exit 0
haproxy -c -q -f /tmp/haproxy.cfg || exit 1
kill -USR2 "$(cat /tmp/haproxy.pid)"
