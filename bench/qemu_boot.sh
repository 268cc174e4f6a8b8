#!/usr/bin/env bash
# bench/qemu_boot.sh: how long a qemu machine takes from QEMU's start to an authenticated SSH
# session in pipe, against a bare boot of the same kernel, initrd and disk.
#
#   bench/qemu_boot.sh [RUNS]      # as root; builds the debian-12 qemu box if missing
#
# - bare: plain qemu-system-x86_64 with the same machine type, CPU, accelerator, memory, kernel
#   command line and an overlay on the same box disk; timed until sshd's banner is readable on
#   the forwarded port (sshd listening, nothing authenticated) and until the serial console
#   shows the login prompt.
# - pipe: `pipe up` of a Pipelinefile with no provisioners and no services (layers built
#   once, untimed); then, RUNS times, the machine folder is removed and `pipe up --json` boots
#   a fresh machine; `boot_to_ssh_secs` is pipe's own figure (QEMU start to a key-authenticated
#   session), and the wall time of the whole `pipe up` is shown too.
# The accelerator is whatever `accel = "auto"` picks here (PIPE_QEMU_ACCEL=tcg|kvm forces one).
set -euo pipefail
RUNS=${1:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PIPE=${PIPE:-$HERE/target/release/pipe}
[ -x "$PIPE" ] || PIPE=$HERE/target/debug/pipe
[ -x "$PIPE" ] || { echo "build pipe first (cargo build --release)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/pipe-bench-qemu.XXXXXX)
QPID=
cleanup() {
  [ -n "$QPID" ] && kill "$QPID" 2>/dev/null || true
  for d in "$WORK"/proj/.pipe/qemu/*/; do
    [ -f "$d/qemu.pid" ] && kill "$(cat "$d/qemu.pid")" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/proj/boxes"
cp "$HERE/boxes/debian-12.toml" "$WORK/proj/boxes/"
cat > "$WORK/proj/Pipelinefile.toml" <<EOF
[pipeline]
name = "bench-qemu-boot"

[box]
qemu = { box = "debian-12" }

[base]
provision = []

[app]
provision = []

[env.dev]
target = "qemu"
cpus = 2
memory = 1024
EOF
cd "$WORK/proj"
echo "# layers (untimed)"
"$PIPE" up --no-progress -q >/dev/null
REC=.pipe/qemu/pipe-bench-qemu-boot-dev/machine.json
ACCEL=$(sed -n 's/.*"accel": "\([a-z]*\)".*/\1/p' "$REC" | head -1)
LAYER=$(sed -n 's/.*"layer": "\(.*\)".*/\1/p' "$REC" | head -1)
BOX=$(ls -td "${XDG_CACHE_HOME:-$HOME/.cache}"/pipe/boxes/qemu/debian-12-*/ | head -1)
echo "# accel: $ACCEL   box: $BOX"

pipe_runs=()
wall_runs=()
for i in $(seq "$RUNS"); do
  kill "$(cat .pipe/qemu/pipe-bench-qemu-boot-dev/qemu.pid)" 2>/dev/null || true
  sleep 1
  rm -rf .pipe/qemu/pipe-bench-qemu-boot-dev
  t0=$(date +%s.%N)
  out=$("$PIPE" up --json --no-progress 2>/dev/null | tail -1)
  t1=$(date +%s.%N)
  pipe_runs+=("$(printf '%s' "$out" | sed -n 's/.*"boot_to_ssh_secs":\([0-9.]*\).*/\1/p')")
  wall_runs+=("$(echo "$t1 - $t0" | bc)")
done
kill "$(cat .pipe/qemu/pipe-bench-qemu-boot-dev/qemu.pid)" 2>/dev/null || true

if [ "$ACCEL" = kvm ]; then ACC=(-accel kvm -cpu host); else ACC=(-accel tcg,thread=multi -cpu max); fi
bare_ssh=()
bare_login=()
for i in $(seq "$RUNS"); do
  rm -f "$WORK/bare.qcow2" "$WORK/console.log"
  qemu-img create -q -f qcow2 -b "$LAYER" -F qcow2 "$WORK/bare.qcow2"
  PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  t0=$(date +%s.%N)
  qemu-system-x86_64 "${ACC[@]}" -machine q35 -nodefaults -no-user-config -display none \
    -smp 2 -m 1024 -kernel "$BOX/vmlinuz" -initrd "$BOX/initrd.img" \
    -append "console=ttyS0,115200 root=LABEL=pipe-root rw" \
    -drive "file=$WORK/bare.qcow2,if=virtio,format=qcow2" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-net-pci,netdev=n0 \
    -device virtio-rng-pci -serial "file:$WORK/console.log" &
  QPID=$!
  ssh_at=
  login_at=
  while [ -z "$ssh_at" ] || [ -z "$login_at" ]; do
    now=$(date +%s.%N)
    if [ -z "$ssh_at" ] && timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT; head -c 7 <&3" 2>/dev/null | grep -q SSH-2.0; then
      ssh_at=$(echo "$now - $t0" | bc)
    fi
    if [ -z "$login_at" ] && grep -q "login:" "$WORK/console.log" 2>/dev/null; then
      login_at=$(echo "$(date +%s.%N) - $t0" | bc)
    fi
    if [ "$(echo "$(date +%s.%N) - $t0 > 600" | bc)" = 1 ]; then echo "bare boot timed out" >&2; break; fi
    sleep 0.2
  done
  kill "$QPID" 2>/dev/null || true
  wait "$QPID" 2>/dev/null || true
  QPID=
  bare_ssh+=("$ssh_at")
  bare_login+=("$login_at")
done

avg() { printf '%s\n' "$@" | awk '{s+=$1; n++} END {if (n) printf "%.1f", s/n}'; }
echo
printf '%-44s %8s   %s\n' "measure ($ACCEL, $RUNS runs)" "mean s" "runs"
printf '%-44s %8s   %s\n' "bare qemu: start -> sshd banner" "$(avg "${bare_ssh[@]}")" "${bare_ssh[*]}"
printf '%-44s %8s   %s\n' "bare qemu: start -> console login prompt" "$(avg "${bare_login[@]}")" "${bare_login[*]}"
printf '%-44s %8s   %s\n' "pipe: QEMU start -> authenticated SSH" "$(avg "${pipe_runs[@]}")" "${pipe_runs[*]}"
printf '%-44s %8s   %s\n' "pipe up (overlay, boot, services, wall)" "$(avg "${wall_runs[@]}")" "${wall_runs[*]}"
