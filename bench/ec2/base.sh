#!/bin/sh
# The bench's base layer: a little of what a base does (a user, a folder, a config file, a few
# MB written), no network, so that the figures measure the bake, not a package mirror.
set -eu
id bench >/dev/null 2>&1 || useradd --system --user-group --no-create-home --shell /usr/sbin/nologin bench
install -d -o bench -g bench /opt/bench
head -c 8388608 /dev/urandom > /opt/bench/blob
printf 'layer=base\n' > /etc/bench.conf
