#!/usr/bin/env bash
# callscope's collector tier on this machine's loopback, without Docker (Go 1.24+ and the Go
# module proxy needed the first time; docker-compose.yml's `pipeline` profile is the same with
# Docker):
#
#   apps --OTLP--> load balancers --by trace id--> samplers --kept traces--> Jaeger (Badger)
#                  (load_balancing exporter)       (tail_sampling)
#
#   deploy/pipeline.sh up       # build once, start everything, wait until it listens, print the ports
#   deploy/pipeline.sh status   # what runs, on which ports, and where the logs are
#   deploy/pipeline.sh down     # stop everything (the stored traces stay, in the state dir)
#
# Environment (all optional):
#   CALLSCOPE_PIPELINE_DIR        state: logs/, pids/, badger/ (default ~/.cache/callscope/pipeline)
#   CALLSCOPE_PIPELINE_PORT       first port of the block the tier listens on (default 24317, as
#                                 docker-compose.yml's: clear of deploy/jaeger.sh's 4317 / 16686)
#   CALLSCOPE_PIPELINE_QUERY      Jaeger's UI and query API (default 26686)
#   CALLSCOPE_PIPELINE_BALANCERS  how many load balancers (default 2)
#   CALLSCOPE_PIPELINE_SAMPLERS   how many samplers (default 2)
#   CALLSCOPE_KEEP_PERCENT        share of ordinary traces kept (default 10)
#   CALLSCOPE_KEEP_MISSED_BY      also keep every trace in which this handler label missed runs
#   CALLSCOPE_DECISION_WAIT       how long a sampler waits for a trace's spans (default 10s)
# Ports, from P = CALLSCOPE_PIPELINE_PORT: load balancer k (1, 2, ...) OTLP gRPC P+10(k-1), OTLP
# HTTP +1, Prometheus (the apps' metrics) +2, own telemetry +3; sampler k OTLP gRPC P+100+10(k-1),
# own telemetry +3; Jaeger OTLP gRPC P+200, HTTP +201, query gRPC +202, health +203, telemetry +204.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${CALLSCOPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callscope}"
state="${CALLSCOPE_PIPELINE_DIR:-$cache/pipeline}"
base=${CALLSCOPE_PIPELINE_PORT:-24317}
query=${CALLSCOPE_PIPELINE_QUERY:-26686}
balancers=${CALLSCOPE_PIPELINE_BALANCERS:-2}
samplers=${CALLSCOPE_PIPELINE_SAMPLERS:-2}

log() { echo "deploy/pipeline.sh: $*" >&2; }

for count in "$balancers" "$samplers"; do
    if ! [[ $count =~ ^[1-9]$ ]]; then
        log "CALLSCOPE_PIPELINE_BALANCERS and _SAMPLERS take 1 to 9, not '$count'"
        exit 2
    fi
done

balancer_port() { echo $((base + 10 * ($1 - 1) + $2)); }
sampler_port() { echo $((base + 100 + 10 * ($1 - 1) + $2)); }
jaeger_port() { echo $((base + 200 + $1)); }

alive() {
    kill -0 "$1" 2>/dev/null || return 1
    # An exited process that nothing has reaped yet (its parent, this script, is gone) is a
    # zombie: kill -0 still reaches it, but it does not run.
    local stat
    if stat="$(cat "/proc/$1/stat" 2>/dev/null)"; then
        stat="${stat##*) }"
        [[ ${stat%% *} != Z ]]
    fi
}

pid_of() {
    local file="$state/pids/$1"
    [[ -f $file ]] && alive "$(cat "$file")" && cat "$file"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME BINARY ARGS...: in its own session, so it outlives this script and a Ctrl-C in the
# terminal that ran `up`.
start() {
    local name=$1
    shift
    if pid_of "$name" >/dev/null; then
        log "$name already runs (pid $(pid_of "$name"))"
        return
    fi
    setsid "$@" >>"$state/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$state/pids/$name"
}

# free_or_ours NAME PORT: a port something else listens on would make NAME exit at start, and
# make wait_for below believe it listens.
free_or_ours() {
    if ! pid_of "$1" >/dev/null && listening "$2"; then
        log "127.0.0.1:$2, which $1 would listen on, is in use by another program;" \
            "stop it, or move the tier: CALLSCOPE_PIPELINE_PORT=... (and CALLSCOPE_PIPELINE_QUERY=...)"
        exit 1
    fi
}

# wait_for NAME PORT: until it accepts connections, or it exited (then its log's tail says why).
wait_for() {
    local name=$1 port=$2 deadline=$((SECONDS + 60))
    until listening "$port"; do
        if ! pid_of "$name" >/dev/null; then
            log "$name exited while starting; the end of $state/logs/$name.log:"
            tail -n 15 "$state/logs/$name.log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            log "$name is not listening on 127.0.0.1:$port after 60 s; see $state/logs/$name.log"
            exit 1
        fi
        sleep 0.2
    done
}

up() {
    local jaeger collector
    jaeger="$("$here/jaeger.sh" build)"
    collector="$("$here/jaeger.sh" build-collector)"
    mkdir -p "$state/logs" "$state/pids" "$state/badger"
    # OTEL_* in this shell are meant for apps; the collectors would read them for their own telemetry.
    for variable in $(compgen -e | grep '^OTEL_' || true); do unset "$variable"; done
    local k variable
    free_or_ours jaeger "$query"
    free_or_ours jaeger "$(jaeger_port 0)"
    for ((k = 1; k <= samplers; k++)); do free_or_ours "sampler-$k" "$(sampler_port "$k" 0)"; done
    for ((k = 1; k <= balancers; k++)); do free_or_ours "balancer-$k" "$(balancer_port "$k" 0)"; done

    start jaeger env CALLSCOPE_JAEGER_OTLP_GRPC="$(jaeger_port 0)" CALLSCOPE_JAEGER_OTLP_HTTP="$(jaeger_port 1)" \
        CALLSCOPE_JAEGER_QUERY="$query" CALLSCOPE_JAEGER_QUERY_GRPC="$(jaeger_port 2)" \
        CALLSCOPE_JAEGER_HEALTH="$(jaeger_port 3)" CALLSCOPE_TELEMETRY="$(jaeger_port 4)" \
        CALLSCOPE_BADGER_DIR="$state/badger" \
        "$jaeger" --config "$here/jaeger.yaml" --config "$here/pipeline/jaeger-badger.yaml"

    local endpoints=()
    for ((k = 1; k <= samplers; k++)); do
        start "sampler-$k" env CALLSCOPE_OTLP_GRPC="$(sampler_port "$k" 0)" CALLSCOPE_TELEMETRY="$(sampler_port "$k" 3)" \
            CALLSCOPE_JAEGER_OTLP="127.0.0.1:$(jaeger_port 0)" \
            "$collector" --config "$here/pipeline/sampler.yaml"
        endpoints+=("127.0.0.1:$(sampler_port "$k" 0)")
    done
    local list
    list="[$(IFS=,; echo "${endpoints[*]}")]"
    for ((k = 1; k <= balancers; k++)); do
        start "balancer-$k" env CALLSCOPE_OTLP_GRPC="$(balancer_port "$k" 0)" CALLSCOPE_OTLP_HTTP="$(balancer_port "$k" 1)" \
            CALLSCOPE_PROMETHEUS="$(balancer_port "$k" 2)" CALLSCOPE_TELEMETRY="$(balancer_port "$k" 3)" \
            CALLSCOPE_SAMPLERS="$list" \
            "$collector" --config "$here/pipeline/load-balancer.yaml"
    done

    wait_for jaeger "$query"
    for ((k = 1; k <= samplers; k++)); do wait_for "sampler-$k" "$(sampler_port "$k" 0)"; done
    for ((k = 1; k <= balancers; k++)); do wait_for "balancer-$k" "$(balancer_port "$k" 0)"; done
    if ! status; then
        log "not everything is running; the logs are in $state/logs/"
        exit 1
    fi
    echo
    echo "send:  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$(balancer_port 1 0) callscope demo"
    echo "find:  callscope tree --jaeger http://127.0.0.1:$query --service callscope-demo --errors"
    echo "stop:  deploy/pipeline.sh down"
}

status() {
    local k running=0
    row() {
        local name=$1 ports=$2 pid
        if pid="$(pid_of "$name")"; then
            printf '%-11s running (pid %s)  %s\n' "$name" "$pid" "$ports"
            running=$((running + 1))
        else
            printf '%-11s stopped           %s\n' "$name" "$ports"
        fi
    }
    for ((k = 1; k <= balancers; k++)); do
        row "balancer-$k" "OTLP gRPC 127.0.0.1:$(balancer_port "$k" 0), HTTP :$(balancer_port "$k" 1), app metrics http://127.0.0.1:$(balancer_port "$k" 2)/metrics, own :$(balancer_port "$k" 3)"
    done
    for ((k = 1; k <= samplers; k++)); do
        row "sampler-$k" "OTLP gRPC 127.0.0.1:$(sampler_port "$k" 0), own metrics http://127.0.0.1:$(sampler_port "$k" 3)/metrics"
    done
    row jaeger "UI and query API http://127.0.0.1:$query, OTLP gRPC :$(jaeger_port 0), own metrics :$(jaeger_port 4), Badger in $state/badger"
    echo "logs: $state/logs/"
    # 0 when all of it runs, 3 (LSB's "not running") otherwise.
    ((running == balancers + samplers + 1))
}

down() {
    local file name pid deadline
    # Front to back, so that what a layer still holds on the way out has somewhere to go.
    for file in "$state"/pids/balancer-* "$state"/pids/sampler-* "$state"/pids/jaeger; do
        [[ -f $file ]] || continue
        name="$(basename "$file")"
        if pid="$(pid_of "$name")"; then
            # TERM first: a collector sends what it holds, Jaeger closes Badger cleanly.
            kill -TERM "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 20))
            while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
            if alive "$pid"; then
                log "$name did not stop within 20 s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            log "stopped $name"
        fi
        rm -f "$file"
    done
}

case "${1:-}" in
    up) up ;;
    status) status || exit 3 ;;
    down) down ;;
    -h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
    *) log "use: up, status, down (--help says more)"; exit 2 ;;
esac
