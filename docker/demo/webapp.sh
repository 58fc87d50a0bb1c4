#!/bin/sh
# The demo web app, supervised by shoal: answers every request with its own hostname.
mkdir -p /tmp/www && hostname > /tmp/www/index.html
exec busybox httpd -f -p 8000 -h /tmp/www
