#!/bin/sh
# primal: the base layer. OS packages and runtimes that change rarely.
#
# Right after this script, pipe's precache step uploads package.json + package-lock.json into
# /opt/precache and runs `npm ci --omit=dev` there with the npm installed here, so
# /opt/precache/node_modules is part of this layer; the app layer (carnivore.sh) takes it from
# there and only adds what changed.
#
# Runs as root over docker exec (containers) or SSH (VMs, EC2). It must not rely on systemd:
# pipe runs the services itself (`nginx -g 'daemon off;'` as a [[service]]). Safe to run twice.
#
# Env: NGINX_WORKERS (a number or "auto", default 2).
set -eu

NGINX_WORKERS="${NGINX_WORKERS:-2}"
case "$NGINX_WORKERS" in
  auto | [1-9] | [1-9][0-9]) ;;
  *) echo "primal: NGINX_WORKERS must be a number (1-99) or auto, got '$NGINX_WORKERS'" >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive

# Package maintainer scripts start services right after install (invoke-rc.d, or
# deb-systemd-invoke on a systemd VM). Nothing may start here: in a container there is no init to
# stop it again, and on a VM pipe's own unit owns port 80. A policy-rc.d that answers 101 ("action
# forbidden") tells both to skip. Only add it when the box has none, and only for this run.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# added by provisioners/primal.sh for the duration of the install\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
  trap 'exit 1' INT TERM
fi

echo "primal: apt-get update"
apt-get update -qq

echo "primal: installing nginx, nodejs, npm, curl, ca-certificates"
apt-get install -y -qq --no-install-recommends \
  nginx nodejs npm curl ca-certificates >/dev/null

# The distribution's nginx.service would fight pipe's service for port 80 on a VM.
if command -v systemctl >/dev/null 2>&1 && [ -e /lib/systemd/system/nginx.service ]; then
  echo "primal: disabling the packaged nginx.service (pipe runs nginx as a service)"
  systemctl disable nginx.service >/dev/null 2>&1 || true
  if [ -d /run/systemd/system ]; then
    systemctl stop nginx.service >/dev/null 2>&1 || true
  fi
fi

# A `daemon` directive in the config would clash with `-g 'daemon off;'` ("directive is
# duplicate"), so there must be none. The app layer replaces this file from app/nginx/nginx.conf;
# until then the stock config, with our worker count, is what a bare base image runs.
echo "primal: nginx worker_processes $NGINX_WORKERS"
sed -i -e '/^[[:space:]]*daemon[[:space:]]/d' \
  -e "s/^[[:space:]]*worker_processes[[:space:]].*/worker_processes $NGINX_WORKERS;/" \
  /etc/nginx/nginx.conf
mkdir -p /var/log/nginx
nginx -t -q

echo "primal: node $(node --version), npm $(npm --version), $(nginx -v 2>&1 | sed 's/^nginx version: //')"

# Keep the layer small: package archives and indexes are not needed at runtime.
apt-get clean
rm -rf /var/lib/apt/lists/*

echo "primal: done"
