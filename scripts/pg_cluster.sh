#!/usr/bin/env bash
# A throwaway PostgreSQL server for keyward's tests, the one implementation
# (tests/common/pg.rs drives this script): trust auth for local and
# 127.0.0.1, superuser "keyward", no TLS, fsync and synchronous_commit on,
# max_connections 200, shared_buffers 32MB, listening on 127.0.0.1 only,
# log in DIR/server.log.
#
#   scripts/pg_cluster.sh install          # apt-get install the server if missing
#   scripts/pg_cluster.sh start DIR PORT   # initdb DIR (if new), start, wait;
#                                          # prints postgres://keyward@127.0.0.1:PORT
#   scripts/pg_cluster.sh stop DIR [MODE]  # pg_ctl stop -m MODE: fast (default) or
#                                          # immediate (a crash); no-op if not running
#   scripts/pg_cluster.sh bindir           # prints the server binaries' dir
#
# e.g.  KEYWARD_TEST_PG=$(scripts/pg_cluster.sh start "$dir" 55432)
#
# As root the server runs as the `postgres` user (initdb refuses root) and
# DIR is chowned to it; DIR's parents must be searchable by that user.
# The server binaries: $KEYWARD_PG_BIN, else /usr/lib/postgresql/<highest
# version>/bin, else the dir of pg_ctl on PATH.
set -euo pipefail

SUPERUSER=keyward
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
WAIT_SECS=30


usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 64
}


# Prints the dir of the server binaries, or nothing (status 1) if none.
find_bindir() {
  if [[ -n ${KEYWARD_PG_BIN:-} ]]; then
    [[ -x $KEYWARD_PG_BIN/initdb && -x $KEYWARD_PG_BIN/pg_ctl ]] ||
      die "KEYWARD_PG_BIN=$KEYWARD_PG_BIN has no initdb and pg_ctl"
    echo "$KEYWARD_PG_BIN"
    return 0
  fi
  local dir best=""
  # Highest version first (sort -V: 9.6 < 10 < 15 < 16).
  while IFS= read -r dir; do
    if [[ -x $dir/bin/initdb && -x $dir/bin/pg_ctl ]]; then
      best=$dir/bin
      break
    fi
  done < <(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort -Vr)
  if [[ -n $best ]]; then
    echo "$best"
    return 0
  fi
  local pg_ctl
  if pg_ctl=$(command -v pg_ctl 2>/dev/null); then
    dir=$(dirname "$(readlink -f "$pg_ctl")")
    if [[ -x $dir/initdb ]]; then
      echo "$dir"
      return 0
    fi
  fi
  return 1
}

bindir() {
  find_bindir || die "PostgreSQL server binaries not found: run '$0 install' (or ./scripts/test.sh, which installs postgresql)"
}

cmd_install() {
  local dir
  if dir=$(find_bindir); then
    echo "PostgreSQL server binaries: $dir"
    return 0
  fi
  command -v apt-get >/dev/null || die "no PostgreSQL server binaries and no apt-get to install them; set KEYWARD_PG_BIN"
  echo "installing the PostgreSQL server (apt-get)"
  local log
  log=$(mktemp)
  # Debian's postgresql-common would create and start a "main" cluster on
  # 5432 when the server package is installed; the tests make their own, so
  # it is installed first and told not to (as the official images do).
  apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  }
  local cc=/etc/postgresql-common/createcluster.conf
  if ! {
    as_root apt-get update -qq &&
      apt_install postgresql-common &&
      if [[ -f $cc ]]; then
        as_root sed -i -E 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' "$cc"
      fi &&
      { apt_install postgresql-15 || apt_install postgresql; }
  } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "apt-get could not install postgresql (postgresql-15 nor postgresql)"
  fi
  rm -f "$log"
  dir=$(find_bindir) || die "postgresql installed, but no server binaries found under /usr/lib/postgresql"
  echo "PostgreSQL server binaries: $dir"
}

# run_pg CMD ARGS...: runs a server binary as `postgres` when root, else as is.
run_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user to run PostgreSQL as (run '$0 install')"
    if command -v runuser >/dev/null; then
      runuser -u postgres -- "$@"
    else
      setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    fi
  else
    "$@"
  fi
}

# As root: makes DIR reachable by the postgres user. Parents inside a temp
# dir (/tmp, $TMPDIR) that are not searchable, like a root mktemp -d (0700),
# get search permission for others (o+x, not read); elsewhere it refuses.
make_reachable() {
  local dir=$1 p
  run_pg test -x "$dir" && return 0
  local tmp
  tmp=$(readlink -f "${TMPDIR:-/tmp}")
  p=$(dirname "$dir")
  while [[ $p != / ]]; do
    if [[ $p == /tmp/* || $p == "$tmp"/* ]] && ! run_pg test -x "$p"; then
      chmod o+x "$p"
    fi
    p=$(dirname "$p")
  done
  run_pg test -x "$dir" ||
    die "the postgres user cannot reach $dir (a parent dir is not searchable by others): chmod o+x it, or use a DIR under /tmp"
}

# Whether the server with data dir $1 is running (pg_ctl status: 0 yes, 3 no).
is_running() {
  local rc=0
  run_pg "$BIN/pg_ctl" status -D "$1/data" >/dev/null 2>&1 || rc=$?
  [[ $rc -eq 0 ]]
}

write_settings() {
  local data=$1 port=$2 sock=$3
  cat >"$data/keyward.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '${sock//\'/\'\'}'
max_connections = 200
shared_buffers = 32MB
fsync = on
synchronous_commit = on
full_page_writes = on
ssl = off
logging_collector = off
log_line_prefix = '%m [%p] '
EOF
  cat >"$data/pg_hba.conf" <<'EOF'
# keyward test harness: trust, no TLS
local all         all                trust
host  all         all  127.0.0.1/32  trust
host  all         all  ::1/128       trust
local replication all                trust
host  replication all  127.0.0.1/32  trust
EOF
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$data/keyward.conf" "$data/pg_hba.conf"
  fi
  chmod 600 "$data/keyward.conf" "$data/pg_hba.conf"
}

cmd_start() {
  [[ $# -eq 2 ]] || usage
  local dir=$1 port=$2
  [[ $port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535 ]] || die "bad port: $port"
  BIN=$(bindir)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  local data=$dir/data log=$dir/server.log
  # The unix socket path must fit in sun_path (107 bytes).
  ((${#dir} + 18 <= 107)) || die "DIR is too long for a unix socket path: $dir"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$dir"
    chmod 755 "$dir"
    make_reachable "$dir"
  fi

  if [[ ! -s $data/PG_VERSION ]]; then
    # A half-made data dir (an earlier initdb that died) is made anew.
    [[ -e $data ]] && rm -rf "$data"
    local initdb_log
    initdb_log=$(mktemp)
    if ! run_pg "$BIN/initdb" -D "$data" -U "$SUPERUSER" --auth=trust --encoding=UTF8 --locale=C --no-sync >"$initdb_log" 2>&1; then
      cat "$initdb_log" >&2
      rm -f "$initdb_log"
      die "initdb into $data failed"
    fi
    rm -f "$initdb_log"
    printf "\n# keyward test harness\ninclude = 'keyward.conf'\n" >>"$data/postgresql.conf"
  fi
  # Rewritten every start: the port may differ from last time.
  if is_running "$dir"; then
    local running_port
    running_port=$(sed -n 4p "$data/postmaster.pid" 2>/dev/null || true)
    [[ $running_port == "$port" ]] || die "the server in $dir is running already, on port ${running_port:-?} (not $port): stop it first"
  else
    write_settings "$data" "$port" "$dir"
    if [[ $(id -u) -eq 0 ]]; then
      touch "$log"
      chown postgres: "$log"
    fi
    if ! run_pg "$BIN/pg_ctl" start -D "$data" -l "$log" -w -t "$WAIT_SECS" -s >/dev/null 2>&1; then
      echo "--- $log ---" >&2
      tail -n 50 "$log" >&2 || true
      die "PostgreSQL did not start in $dir on 127.0.0.1:$port"
    fi
  fi
  local i
  for ((i = 0; i < WAIT_SECS * 10; i++)); do
    if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -d postgres -t 2; then
      echo "postgres://$SUPERUSER@127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "--- $log ---" >&2
  tail -n 50 "$log" >&2 || true
  die "PostgreSQL in $dir does not accept connections on 127.0.0.1:$port after ${WAIT_SECS}s"
}

cmd_stop() {
  [[ $# -eq 1 || $# -eq 2 ]] || usage
  local dir=$1 mode=${2:-fast}
  [[ $mode == fast || $mode == immediate ]] || die "bad stop mode: $mode (fast or immediate)"
  if [[ ! -d $dir/data ]]; then
    echo "no PostgreSQL data dir in $dir: nothing to stop" >&2
    return 0
  fi
  BIN=$(bindir)
  if ! is_running "$dir"; then
    return 0
  fi
  if ! run_pg "$BIN/pg_ctl" stop -D "$dir/data" -m "$mode" -w -t "$WAIT_SECS" -s; then
    echo "pg_ctl stop -m $mode failed; trying -m immediate" >&2
    run_pg "$BIN/pg_ctl" stop -D "$dir/data" -m immediate -w -t "$WAIT_SECS" -s ||
      die "could not stop the PostgreSQL server in $dir"
  fi
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd=$1
  shift
  case $cmd in
  install) cmd_install "$@" ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  bindir) bindir ;;
  -h | --help | help) usage ;;
  *) usage ;;
  esac
}

main "$@"
