#!/bin/sh
# The example's two [[service]]s, started the way a Packer or Vagrant user starts them without
# pipe's supervisor: the node app as user `app` in the background, nginx in the foreground.
# Installed as /usr/local/sbin/bench-services by both anchors: the Packer image's entrypoint, and
# run detached by the Vagrant machine's "services" provisioner.
set -eu
export NODE_ENV="${NODE_ENV:-development}" SERVER_NAME="${SERVER_NAME:-localhost}"
mkdir -p /var/log/bench
(cd /opt/app && exec runuser -u app -- node /opt/app/server.js) >>/var/log/bench/app.log 2>&1 &
exec nginx -g 'daemon off;'
