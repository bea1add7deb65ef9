#!/usr/bin/env bash
# A Docker engine for the container tests, on a machine that has none running.
#
#   .ci/docker-engine.sh start   use the engine that answers, else install Debian's docker.io
#                                (and mmdebstrap, for `invoke build --local-base`) and start
#                                dockerd; prints "started" or "present"
#   .ci/docker-engine.sh stop    stop the dockerd that `start` started (none otherwise)
#
# The engine started here listens on its unix socket only (never TCP: -H is given, and the
# machine's daemon.json is not read, so no "hosts" entry can add one), creates no bridge,
# writes no iptables rules and forwards nothing: containers run with `--network host` and
# reach only what the host reaches, the emulators on 127.0.0.1 among them.
set -euo pipefail

run_dir="${BATCHSPOT_DOCKERD_DIR:-/tmp/batchspot-dockerd}"
socket="unix:///var/run/docker.sock"

answers() { docker -H "$socket" info >/dev/null 2>&1; }

start() {
    if answers; then
        echo "present"
        return
    fi
    if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker.io mmdebstrap >/dev/null
    fi
    mkdir -p "$run_dir"
    echo '{}' >"$run_dir/daemon.json"
    dockerd --config-file "$run_dir/daemon.json" -H "$socket" \
        --pidfile "$run_dir/dockerd.pid" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        >"$run_dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 120); do
        if answers; then
            echo "started"
            return
        fi
        sleep 0.5
    done
    echo "dockerd did not answer within 60 s; its log:" >&2
    tail -n 20 "$run_dir/dockerd.log" >&2
    exit 1
}

stop() {
    local pidfile="$run_dir/dockerd.pid"
    [ -f "$pidfile" ] || return 0
    local pid
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
