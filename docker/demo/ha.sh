#!/bin/sh
# The load balancer app, supervised by shoal: wait for shoal's first rendering of the config,
# then run HAProxy in master-worker mode (shoal's template command reloads it with SIGUSR2).
while [ ! -s /tmp/haproxy.cfg ]; do sleep 0.05; done
exec haproxy -W -db -f /tmp/haproxy.cfg
