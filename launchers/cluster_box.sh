#!/usr/bin/env bash
# A cluster of N hosts (2-3) on this one machine, for trying the multi-host launchers and
# for the multi-host tests: each host a network namespace with its own sshd, its own host
# name (UTS namespace) and its own /etc/hosts naming every host (a private mount namespace),
# joined by veth links to a bridge in a namespace of its own. The file system is shared, as
# on a cluster with a shared home. Needs root, iproute2, util-linux and openssh-server.
#
#   launchers/cluster_box.sh up N        build N hosts (removes a stale box of the same name)
#   launchers/cluster_box.sh down        stop every process in the box, remove it
#   launchers/cluster_box.sh exec I CMD  run CMD on host I (its PATH finds the box's ssh)
#   launchers/cluster_box.sh shape RATE  limit every host's egress (e.g. 1gbit; off: no limit)
#   launchers/cluster_box.sh cut I       drop all of host I's traffic at the bridge (silently)
#   launchers/cluster_box.sh heal I      let it through again
#   launchers/cluster_box.sh kill I      kill every process on host I (sshd too: host lost)
#   launchers/cluster_box.sh hosts       print "name slots=1" lines, one per live host
#
# BOX (default tlbbox) names the namespaces ($BOX-h1.., $BOX-br) and the hosts ($BOX-h1..);
# BOX_DIR (default /tmp/$BOX; the box's own, `down` removes it) holds the keys, the ssh config, the hosts file, a HOME (so
# horovodrun's host cache is the box's own) and a bin/ssh wrapper that passes -F. Nothing
# is written to ~/.ssh or /etc/ssh, nothing is added to the root namespace, and addresses
# come from the RFC 2544 benchmarking range 198.18.0.0/15, clear of any real network.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
BOX=${BOX:-tlbbox}
BOX_DIR=${BOX_DIR:-/tmp/$BOX}
BRIDGE_NS=$BOX-br
SUBNET=198.18.0

die() { echo "cluster_box.sh: error: $*" >&2; exit 1; }
host_ns() { echo "$BOX-h$1"; }
box_hosts() { ip netns list 2>/dev/null | awk -v p="^$BOX-h[0-9]+$" '$1 ~ p {print $1}' | sort; }
sshd_pid() { cat "$BOX_DIR/h$1/sshd.pid" 2>/dev/null || die "host $1 is not up (no sshd)"; }

down() {
  local ns
  for ns in $(box_hosts) $(ip netns list 2>/dev/null | awk -v b="$BRIDGE_NS" '$1 == b {print $1}'); do
    # Every process whose network namespace is this one: sshd, sessions, ranks.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns delete "$ns" 2>/dev/null || true
  done
  rm -rf "$BOX_DIR"
}

up() {
  local n=$1 i
  [[ $n =~ ^[1-9]$ ]] || die "up N: N must be 1-9 hosts, not '$n'"
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, sshd on port 22)"
  command -v /usr/sbin/sshd >/dev/null || die "no sshd: apt-get install -y openssh-server"
  down  # a stale box of the same name (a killed run) goes first
  mkdir -p "$BOX_DIR/bin" "$BOX_DIR/home" /run/sshd
  ssh-keygen -q -t ed25519 -N "" -f "$BOX_DIR/id_ed25519"
  ssh-keygen -q -t ed25519 -N "" -f "$BOX_DIR/host_key"
  cp "$BOX_DIR/id_ed25519.pub" "$BOX_DIR/authorized_keys"
  {
    echo "127.0.0.1 localhost"
    for i in $(seq 1 "$n"); do echo "$SUBNET.$i $BOX-h$i"; done
  } > "$BOX_DIR/hosts.all"
  cat > "$BOX_DIR/ssh_config" <<EOF
Host *
  IdentityFile $BOX_DIR/id_ed25519
  UserKnownHostsFile $BOX_DIR/known_hosts
  StrictHostKeyChecking no
  BatchMode yes
  LogLevel ERROR
EOF
  printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$BOX_DIR/ssh_config" > "$BOX_DIR/bin/ssh"
  chmod +x "$BOX_DIR/bin/ssh"
  ip netns add "$BRIDGE_NS"
  ip -n "$BRIDGE_NS" link add br0 type bridge
  ip -n "$BRIDGE_NS" link set br0 up
  for i in $(seq 1 "$n"); do
    local ns dir
    ns=$(host_ns "$i"); dir=$BOX_DIR/h$i
    mkdir -p "$dir"
    cp "$BOX_DIR/hosts.all" "$dir/hosts"
    ip netns add "$ns"
    ip -n "$BRIDGE_NS" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$BRIDGE_NS" link set "p$i" master br0 up
    ip -n "$ns" addr add "$SUBNET.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    cat > "$dir/sshd_config" <<EOF
ListenAddress $SUBNET.$i
HostKey $BOX_DIR/host_key
PidFile none
AuthorizedKeysFile $BOX_DIR/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
PermitRootLogin prohibit-password
MaxStartups 100
MaxSessions 100
EOF
    # The host: its own name and /etc/hosts for sshd and every session it starts. (nsenter,
    # not `ip netns exec`, which mounts a sysfs of its own over /sys and so hides
    # /sys/fs/cgroup, which slurmd needs.)
    setsid unshare --uts --mount --propagation private nsenter --net="/run/netns/$ns" sh -c \
      "hostname $BOX-h$i && mount --bind $dir/hosts /etc/hosts &&
       exec /usr/sbin/sshd -D -e -f $dir/sshd_config" > "$dir/sshd.log" 2>&1 < /dev/null &
    echo $! > "$dir/sshd.pid"
  done
  # Ready when every host answers over ssh from host 1 (bounded: 50 tries, 0.2 s apart).
  for i in $(seq 1 "$n"); do
    local try
    for try in $(seq 1 50); do
      run_on 1 ssh "$BOX-h$i" true 2>/dev/null && break
      [ "$try" -lt 50 ] || die "host $i did not answer ssh in 10 s: $(tail -3 "$BOX_DIR/h$i/sshd.log")"
      sleep 0.2
    done
  done
  echo "cluster_box.sh: $n hosts up: $(seq -s ' ' -f "$BOX-h%g" 1 "$n") ($SUBNET.1-$n)" >&2
}

run_on() {
  local i=$1; shift
  nsenter --target "$(sshd_pid "$i")" --uts --mount --net --wd="$PWD" \
    env HOME="$BOX_DIR/home" PATH="$BOX_DIR/bin:$PATH" "$@"
}

case ${1:-} in
  up) up "${2:?up N}" ;;
  down) down ;;
  exec) [ $# -ge 3 ] || die "exec I CMD..."; shift; run_on "$@" ;;
  shape)
    rate=${2:?shape RATE (e.g. 1gbit) or off}
    for ns in $(box_hosts); do
      if [ "$rate" = off ]; then ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
      else ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$rate" burst 1mb latency 50ms
      fi
    done ;;
  cut) ip netns exec "$BRIDGE_NS" bridge link set dev "p${2:?cut I}" state 0 ;;
  heal) ip netns exec "$BRIDGE_NS" bridge link set dev "p${2:?heal I}" state 3 ;;
  kill) ip netns pids "$(host_ns "${2:?kill I}")" | xargs -r kill -9 ;;
  hosts) for ns in $(box_hosts); do
           i=${ns##*-h}; [ -n "$(ip netns pids "$ns")" ] && echo "$BOX-h$i slots=1"
         done ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
