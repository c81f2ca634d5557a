#!/usr/bin/env bash
# avideo-server against nginx: keep-alive GETs of one video under wrk, at
# -c10 and -c100, both servers in one run; prints requests/s and the ratio.
#
#   bench/server/run.sh [--duration SECONDS] [--rounds N] [--server PATH]
#
# The emulator runs with --time-scale 0 (no delays: this measures the HTTP
# path, not the overload model). nginx answers the same JSON, fetched from
# the emulator, from its config with one worker. Servers are pinned to
# core 0 and wrk (one thread) to core 1. Needs nginx (nginx-light), wrk,
# curl and python3 (for a free port); run from the repository root or
# anywhere with --server.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
duration=5
rounds=3
server_bin=${AVIDEO_SERVER:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --server) server_bin=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$server_bin" ]; then
  for candidate in "$root/build/src/server/avideo-server" "$root/build-server/src/server/avideo-server"; do
    if [ -x "$candidate" ]; then server_bin=$candidate; break; fi
  done
fi
[ -x "${server_bin:-}" ] || { echo "run.sh: no avideo-server binary; build it or pass --server" >&2; exit 2; }
for tool in nginx wrk curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is needed" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "run.sh: needs 2 cores (server and wrk on their own)" >&2
  exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/avideo-bench-server.XXXXXX")
server_pid=
nginx_pid=
cleanup() {
  # Only the processes this script started, by pid.
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the emulator, on a port it picks ---
mkfifo "$work/server.out"
taskset -c 0 "$server_bin" --port 0 --time-scale 0 >"$work/server.out" 2>&1 &
server_pid=$!
read -r line <"$work/server.out"
server_url=$(sed -n 's/^avideo-server listening on \(http:.*\)$/\1/p' <<<"$line")
[ -n "$server_url" ] || { echo "run.sh: avideo-server did not start: $line" >&2; exit 1; }
# Keep the fifo drained so the server never blocks on a full pipe.
cat "$work/server.out" >/dev/null &

id=$(curl -sf "$server_url/videos/?n=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')
path="/videos/$id"
body=$(curl -sf "$server_url$path")

# --- nginx with the same JSON in its config ---
nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
# Our data has no single quote or backslash, so it fits in a '...' string.
case "$body" in *\'*|*\\*) echo "run.sh: the JSON needs quoting for nginx" >&2; exit 1 ;; esac
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 5s;
  server {
    listen 127.0.0.1:$nginx_port;
    location = $path {
      default_type application/json;
      return 200 '$body';
    }
  }
}
EOF
taskset -c 0 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
nginx_url="http://127.0.0.1:$nginx_port"
for _ in $(seq 50); do curl -sf -o /dev/null "$nginx_url$path" && break; sleep 0.1; done
if [ "$(curl -sf "$nginx_url$path")" != "$body" ]; then
  echo "run.sh: nginx does not answer the same JSON" >&2
  exit 1
fi

# --- wrk, one thread on the other core ---
rps() { # url connections -> requests/s
  taskset -c 1 wrk -t1 -c"$2" -d1s "$1" >/dev/null # warm-up
  taskset -c 1 wrk -t1 -c"$2" -d"${duration}s" "$1" | awk '/^Requests\/sec:/ { print $2 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf 'avideo-server vs nginx, keep-alive GET %s (%d bytes), wrk -t1 -d%ss, median of %d rounds\n' \
  "$path" "${#body}" "$duration" "$rounds"
printf 'date %s, %s, %d cores, load average %s\n' "$(date -u +%Y-%m-%d)" "$(uname -srm)" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %14s %14s %7s\n' conns avideo-server nginx ratio
status=0
for c in 10 100; do
  : >"$work/a" ; : >"$work/n"
  # Rounds alternate the servers so that a noisy neighbour hits both alike.
  for _ in $(seq "$rounds"); do
    rps "$server_url$path" "$c" >>"$work/a"
    rps "$nginx_url$path" "$c" >>"$work/n"
  done
  a=$(median <"$work/a")
  n=$(median <"$work/n")
  ratio=$(awk -v a="$a" -v n="$n" 'BEGIN { printf "%.2f", a / n }')
  printf '%-6s %14.0f %14.0f %7s\n' "-c$c" "$a" "$n" "$ratio"
  awk -v r="$ratio" 'BEGIN { exit !(r >= 0.8) }' || status=1
done
[ "$status" -eq 0 ] && echo "target met: avideo-server >= 0.8 x nginx" || echo "target missed: avideo-server < 0.8 x nginx"
exit "$status"
