#!/bin/sh
# carnivore: the app layer, baked on every deploy on top of primal.
#
# The app has been uploaded to /opt/app (a `file` provisioner, honouring app/.pipeignore, so no
# node_modules came from the developer's machine). This script adopts the base layer's precached
# node_modules, lets npm add only what changed, renders the nginx templates, and creates the
# `app` user the node service runs as. pipe runs nginx and node as [[service]]s; nothing is
# started here, systemd is not needed, and nothing secret is written to disk. Safe to run twice.
#
# Env: NODE_ENV, SERVER_NAME, NGINX_WORKERS.
set -eu

NODE_ENV="${NODE_ENV:-production}"
SERVER_NAME="${SERVER_NAME:-localhost}"
NGINX_WORKERS="${NGINX_WORKERS:-2}"
APP_DIR=/opt/app
PRECACHE_DIR=/opt/precache

# These end up in sed replacements and nginx syntax: refuse anything that could break either.
case "$NGINX_WORKERS" in
  auto | [1-9] | [1-9][0-9]) ;;
  *) echo "carnivore: NGINX_WORKERS must be a number (1-99) or auto, got '$NGINX_WORKERS'" >&2; exit 2 ;;
esac
case "$SERVER_NAME" in
  '' | *[!A-Za-z0-9.*_~\ -]*)
    echo "carnivore: SERVER_NAME may hold only letters, digits, '.', '-', '_', '*', '~' and spaces, got '$SERVER_NAME'" >&2
    exit 2 ;;
esac

if [ ! -f "$APP_DIR/server.js" ] || [ ! -f "$APP_DIR/package.json" ]; then
  echo "carnivore: $APP_DIR has no server.js/package.json: upload app/ there first" >&2
  exit 1
fi

echo "carnivore: app user"
if ! id app >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$APP_DIR" --no-create-home \
    --shell /usr/sbin/nologin app
fi

# Move, as the article does: the app layer keeps one copy, and a second run finds the modules
# already in place. npm then only fetches what the lock file gained since the base was built.
adopted=no
if [ -d "$PRECACHE_DIR/node_modules" ] && [ ! -e "$APP_DIR/node_modules" ]; then
  echo "carnivore: adopting precached node_modules from $PRECACHE_DIR"
  mv "$PRECACHE_DIR/node_modules" "$APP_DIR/node_modules"
  adopted=yes
fi

# npm takes seconds even with nothing to do, so it is skipped when node_modules was made from
# the app's very package.json and package-lock.json: just adopted from a precache of the same
# manifests (the common case of an app edit), or installed by an earlier run of this script
# (`pipe provision`, `pipe up --watch`), which leaves a copy of the manifests in node_modules.
stamp="$APP_DIR/node_modules/.carnivore-manifests"
manifests() { cat "$1/package.json" "$1/package-lock.json" 2>/dev/null; }
if [ "$adopted" = yes ] &&
  cmp -s "$APP_DIR/package.json" "$PRECACHE_DIR/package.json" &&
  cmp -s "$APP_DIR/package-lock.json" "$PRECACHE_DIR/package-lock.json"; then
  current=yes
elif [ -f "$stamp" ] && manifests "$APP_DIR" | cmp -s - "$stamp"; then
  current=yes
else
  current=no
fi
if [ "$current" = yes ]; then
  echo "carnivore: node_modules matches package.json and package-lock.json: no npm install"
else
  echo "carnivore: npm install --omit=dev (NODE_ENV=$NODE_ENV)"
  npm install --prefix "$APP_DIR" --omit=dev --prefer-offline \
    --no-audit --no-fund --no-update-notifier --loglevel=warn
fi
if [ -d "$APP_DIR/node_modules" ]; then manifests "$APP_DIR" >"$stamp"; fi

# The code stays root-owned: the service user can read and run it, not rewrite it.
chmod -R u+rwX,go+rX,go-w "$APP_DIR"

echo "carnivore: nginx config (workers $NGINX_WORKERS, server_name $SERVER_NAME)"
sed "s#{NGINX_WORKERS}#$NGINX_WORKERS#g" "$APP_DIR/nginx/nginx.conf" >/etc/nginx/nginx.conf.new
mv /etc/nginx/nginx.conf.new /etc/nginx/nginx.conf
mkdir -p /etc/nginx/sites-available /etc/nginx/sites-enabled
sed "s#{SERVER_NAME}#$SERVER_NAME#g" "$APP_DIR/nginx/site.conf" >/etc/nginx/sites-available/ponyfoo.conf
ln -sfn /etc/nginx/sites-available/ponyfoo.conf /etc/nginx/sites-enabled/ponyfoo.conf
rm -f /etc/nginx/sites-enabled/default
nginx -t -q

echo "carnivore: done ($(find "$APP_DIR/node_modules" -mindepth 1 -maxdepth 1 ! -name ".*" | wc -l) modules in $APP_DIR/node_modules)"
