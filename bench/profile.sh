#!/bin/bash
# bench/profile.sh SCENARIO-ARGS: profile the peerlisten stand-in server under load.
#   bench/profile.sh MODE VARIANT [SECONDS] [goload args...]
# e.g. bench/profile.sh perf mtls 5 -mode handshake -tls 1.3 -c 8 -cert CLIENT
#      bench/profile.sh callgrind tls 5 -mode keepalive -tls 1.3 -c 8
# Starts bench/servers/plcore.lua (VARIANT: plain|tls|mtls|tickets) pinned to
# core 1, drives it with goload on core 0 and prints the profile (perf: flat
# self-time report; callgrind: callgrind_annotate inclusive+exclusive).
# The words CLIENT / CA in the goload args expand to the bench client cert / CA.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
tool=$1 variant=$2 secs=${3:-5}
shift 3 || true
build="$here/.build"
export GOPATH="$build/go" GOCACHE="$build/go/cache" GO111MODULE=off GOFLAGS= CGO_ENABLED=0
mkdir -p "$build"
go build -o "$build/goload" "$here/goload/main.go"
tmp=$(mktemp -d /tmp/peerlisten-prof.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; sleep 0.2; rm -rf "$tmp"; }
trap cleanup EXIT
"$here/certs.sh" "$tmp/certs"
port=$(lua5.4 -e 'local s=require"socket".bind("127.0.0.1",0) local _,p=s:getsockname() s:close() print(p)')
args=()
for a in "$@"; do
  case $a in
    CLIENT) args+=(-cert "$tmp/certs/client.crt" -key "$tmp/certs/client.key");;
    CA) args+=("$tmp/certs/ca.crt");;
    *) args+=("$a");;
  esac
done
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_CPATH="$root/?.so;;"
# VARIANT cli-tls / cli-mtls / cli-plain profiles `bin/peerlisten serve` instead
server=(lua5.4 "$here/servers/plcore.lua" "$port" "$variant" "$tmp/certs")
case $variant in
  cli-*)
    v=${variant#cli-}; scheme=https; [ "$v" = plain ] && scheme=http
    server=(lua5.4 "$root/bin/peerlisten" serve --data-dir "$tmp/data" --listen-peer-urls "$scheme://127.0.0.1:$port")
    [ "$v" != plain ] && server+=(--peer-cert-file "$tmp/certs/server.crt" --peer-key-file "$tmp/certs/server.key")
    [ "$v" = mtls ] && server+=(--peer-trusted-ca-file "$tmp/certs/ca.crt" --peer-client-cert-auth)
    ;;
esac
case $tool in
  perf)
    taskset -c 1 "${server[@]}" >"$tmp/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    taskset -c 0 "$build/goload" -addr "127.0.0.1:$port" -ca "$tmp/certs/ca.crt" -d 0.5s "${args[@]}" >/dev/null
    perf record -q -F 2000 -g -o "$tmp/perf.data" -p "$pid" -- sleep "$secs" 2>/dev/null &
    rec=$!
    taskset -c 0 "$build/goload" -addr "127.0.0.1:$port" -ca "$tmp/certs/ca.crt" -d "${secs}s" "${args[@]}"
    wait $rec || true
    perf report -i "$tmp/perf.data" --no-children --percent-limit 0.7 --stdio -g none 2>/dev/null | grep -v '^$' | head -70
    ;;
  callgrind)
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "${server[@]}" >"$tmp/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    taskset -c 0 "$build/goload" -addr "127.0.0.1:$port" -ca "$tmp/certs/ca.crt" -d "${secs}s" "${args[@]}"
    kill "$pid"; wait "$pid" || true; pid=""
    [ -n "${CG_KEEP:-}" ] && cp "$tmp/cg.out" "$CG_KEEP"
    callgrind_annotate --inclusive=yes "$tmp/cg.out" 2>/dev/null | head -${CG_LINES:-45}
    callgrind_annotate "$tmp/cg.out" 2>/dev/null | sed -n '1,40p' | tail -25
    ;;
esac
