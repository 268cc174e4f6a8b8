#!/bin/sh
# Build-time trust for the anchors, the same work pipe's `[build]` defaults do: install the host's
# extra CA certificates (uploaded to /opt/bench-build/certs) while provisioning, remove them before
# the image is committed. Node ignores the system store: provisioners get NODE_EXTRA_CA_CERTS
# pointing at /opt/bench-build/bundle.pem (see env.sh, written by bench/up.sh).
#
#   build-trust.sh install | remove
set -eu
dir=/usr/local/share/ca-certificates/bench-build
case "${1:-}" in
  install)
    mkdir -p "$dir"
    : >/opt/bench-build/bundle.pem
    for crt in /opt/bench-build/certs/*.crt; do
      [ -e "$crt" ] || continue
      cp "$crt" "$dir/"
      cat "$crt" >>/opt/bench-build/bundle.pem
      echo >>/opt/bench-build/bundle.pem
    done
    update-ca-certificates >/dev/null 2>&1
    ;;
  remove)
    rm -rf "$dir" /opt/bench-build
    update-ca-certificates --fresh >/dev/null 2>&1
    ;;
  *) echo "usage: build-trust.sh install|remove" >&2; exit 2 ;;
esac
