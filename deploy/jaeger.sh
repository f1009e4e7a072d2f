#!/usr/bin/env bash
# Jaeger v2 without Docker: builds the same Jaeger the tests run from its Go module (Go 1.24+ and
# the Go module proxy needed), caches the binary outside the repository, and starts it.
#
#   deploy/jaeger.sh                   # build once, then run Jaeger on 127.0.0.1: OTLP 4317/4318, query API 16686
#   deploy/jaeger.sh build             # build only (if not cached); print the binary's path
#   deploy/jaeger.sh build-collector   # the OpenTelemetry Collector of deploy/otel-collector.yaml and deploy/pipeline.sh
#   deploy/jaeger.sh collector         # build it once, then run deploy/otel-collector.yaml on 127.0.0.1: OTLP 14317/14318,
#                                      # forwarding to the Jaeger above (deploy/otel-collector.loopback.yaml)
#
# The cache is ${CALLSCOPE_CACHE:-~/.cache/callscope}; the first build takes several minutes and
# fills Go's own module and build caches (a GB or two), later runs start in under a second. Other
# ports: set CALLSCOPE_JAEGER_OTLP_GRPC, _OTLP_HTTP, _QUERY, _QUERY_GRPC, _HEALTH (see jaeger.yaml).
set -euo pipefail

# Jaeger's Go module v1.76.0 is the commit tagged Jaeger v2.13.0 (docker-compose.yml pins that
# image; tests/integration/test_deploy.py keeps the two in step).
JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_VERSION=v1.76.0
JAEGER_RELEASE=2.13.0
# One collector release for every collector module, core and contrib (the stable core ones carry
# v1.x numbers), the one docker-compose.yml's collector image is pinned to.
COLLECTOR_VERSION=v0.161.0
COLLECTOR_STABLE_VERSION=v1.67.0
CONTRIB_MODULE=github.com/open-telemetry/opentelemetry-collector-contrib
# The loadbalancing exporter links AWS Cloud Map's SDK for its aws_cloud_map resolver (callscope
# uses the static one). The release it asks for is not on every Go module proxy; the Cloud Map
# API it calls is unchanged since this one, which is.
CLOUD_MAP_SDK=github.com/aws/aws-sdk-go-v2/service/servicediscovery
CLOUD_MAP_SDK_VERSION=v1.40.2

here="$(cd "$(dirname "$0")" && pwd)"
cache="${CALLSCOPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callscope}"

log() { echo "deploy/jaeger.sh: $*" >&2; }

need_go() {
    # Go's own installer puts it here, and not every shell has it on PATH.
    if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
        PATH="$PATH:/usr/local/go/bin"
    fi
    if ! command -v go >/dev/null 2>&1; then
        log "no Go toolchain on PATH; install Go 1.24 or newer (https://go.dev/dl/) and run this again"
        exit 127
    fi
}

# go_build NAME MODULE_DIR PACKAGE [LDFLAGS]: build PACKAGE inside the wrapper module at
# MODULE_DIR into $cache/NAME, atomically, so an interrupted build never leaves a half-written
# binary behind.
go_build() {
    local name=$1 dir=$2 package=$3 ldflags="-s -w ${4:-}"
    local started=$SECONDS
    # nice: the build is long and the machines are shared; it only takes idle CPU.
    (cd "$dir" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$cache/$name.part" "$package")
    mv -f "$cache/$name.part" "$cache/$name"
    log "built $cache/$name in $((SECONDS - started))s"
}

build_jaeger() {
    local binary="$cache/jaeger-$JAEGER_VERSION"
    if [[ ! -x $binary ]]; then
        need_go
        # A wrapper module of its own: Jaeger's go.mod has a replace directive, so `go install
        # module@version` is refused, and a module shared with other tools would let Go's version
        # selection move the collector modules Jaeger pins.
        local dir="$cache/src/jaeger-$JAEGER_VERSION"
        mkdir -p "$dir"
        if [[ ! -f $dir/resolved ]]; then
            rm -f "$dir/go.mod" "$dir/go.sum"
            (cd "$dir" && go mod init local/callscope-jaeger \
                && go get -tool "$JAEGER_MODULE/cmd/jaeger@$JAEGER_VERSION")
            touch "$dir/resolved"
        fi
        log "building Jaeger $JAEGER_RELEASE (Go module $JAEGER_VERSION; several minutes the first time)"
        # Jaeger's own builds stamp the release this way; without it the binary reports no version.
        go_build "jaeger-$JAEGER_VERSION" "$dir" "$JAEGER_MODULE/cmd/jaeger" \
            "-X $JAEGER_MODULE/internal/version.latestVersion=v$JAEGER_RELEASE"
    fi
    echo "$binary"
}

build_collector() {
    # Named after its source too: an edited main.go must not run as the old cached binary.
    local source_hash
    source_hash="$(cksum <"$here/otelcol/main.go" | cut -d' ' -f1)"
    local name="otelcol-$COLLECTOR_VERSION-$source_hash"
    local binary="$cache/$name"
    if [[ ! -x $binary ]]; then
        need_go
        local dir="$cache/src/otelcol-$COLLECTOR_VERSION"
        mkdir -p "$dir"
        local wanted=() module
        for module in component confmap/provider/envprovider confmap/provider/fileprovider \
            confmap/provider/yamlprovider exporter processor receiver; do
            wanted+=("go.opentelemetry.io/collector/$module@$COLLECTOR_STABLE_VERSION")
        done
        for module in otelcol service receiver/otlpreceiver processor/batchprocessor \
            processor/memorylimiterprocessor exporter/otlpexporter exporter/otlphttpexporter \
            exporter/debugexporter; do
            wanted+=("go.opentelemetry.io/collector/$module@$COLLECTOR_VERSION")
        done
        for module in exporter/loadbalancingexporter exporter/prometheusexporter \
            processor/tailsamplingprocessor; do
            wanted+=("$CONTRIB_MODULE/$module@$COLLECTOR_VERSION")
        done
        # The stamp holds the module list and the replacement, so that a change is resolved again.
        local stamp="${wanted[*]} $CLOUD_MAP_SDK@$CLOUD_MAP_SDK_VERSION"
        if [[ "$(cat "$dir/resolved" 2>/dev/null)" != "$stamp" ]]; then
            rm -f "$dir/go.mod" "$dir/go.sum" "$dir/resolved" "$dir/main.go"
            # Every module named with its version: tidy would otherwise take the newest release
            # of any module it has to add, mixing collector releases.
            (cd "$dir" && go mod init local/callscope-otelcol \
                && go mod edit -replace="$CLOUD_MAP_SDK=$CLOUD_MAP_SDK@$CLOUD_MAP_SDK_VERSION" \
                && go get "${wanted[@]}" && cp "$here/otelcol/main.go" . && go mod tidy)
            echo "$stamp" >"$dir/resolved"
        fi
        cp "$here/otelcol/main.go" "$dir/main.go"
        log "building the OpenTelemetry Collector $COLLECTOR_VERSION (a few minutes the first time)"
        go_build "$name" "$dir" . "-X main.version=$COLLECTOR_VERSION"
    fi
    echo "$binary"
}

# Jaeger and the collector are OpenTelemetry Collectors: OTEL_* meant for an app would configure
# their own telemetry too.
forget_app_otel_settings() {
    local name
    for name in $(compgen -e | grep '^OTEL_' || true); do unset "$name"; done
}

# Two test sessions (or a user and a test run) building at once would write the same files.
lock() {
    mkdir -p "$cache"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$cache/.build.lock"
        flock 9
    fi
}

case "${1:-run}" in
    build) lock && build_jaeger ;;
    build-collector) lock && build_collector ;;
    run)
        shift || true
        binary="$(lock && build_jaeger)"
        forget_app_otel_settings
        # The same configuration as the tests, by default on the ports docker-compose.yml publishes.
        export CALLSCOPE_JAEGER_OTLP_GRPC=${CALLSCOPE_JAEGER_OTLP_GRPC:-4317}
        export CALLSCOPE_JAEGER_OTLP_HTTP=${CALLSCOPE_JAEGER_OTLP_HTTP:-4318}
        export CALLSCOPE_JAEGER_QUERY=${CALLSCOPE_JAEGER_QUERY:-16686}
        export CALLSCOPE_JAEGER_QUERY_GRPC=${CALLSCOPE_JAEGER_QUERY_GRPC:-16685}
        export CALLSCOPE_JAEGER_HEALTH=${CALLSCOPE_JAEGER_HEALTH:-13133}
        log "Jaeger $JAEGER_RELEASE: OTLP on 127.0.0.1:$CALLSCOPE_JAEGER_OTLP_GRPC (gRPC) and" \
            ":$CALLSCOPE_JAEGER_OTLP_HTTP (HTTP), query API on http://127.0.0.1:$CALLSCOPE_JAEGER_QUERY; Ctrl-C stops it"
        exec "$binary" --config "$here/jaeger.yaml" "$@" ;;
    collector)
        shift || true
        binary="$(lock && build_collector)"
        forget_app_otel_settings
        export CALLSCOPE_COLLECTOR_OTLP_GRPC=${CALLSCOPE_COLLECTOR_OTLP_GRPC:-14317}
        export CALLSCOPE_COLLECTOR_OTLP_HTTP=${CALLSCOPE_COLLECTOR_OTLP_HTTP:-14318}
        export CALLSCOPE_JAEGER_OTLP_GRPC=${CALLSCOPE_JAEGER_OTLP_GRPC:-4317}
        log "Collector $COLLECTOR_VERSION: OTLP on 127.0.0.1:$CALLSCOPE_COLLECTOR_OTLP_GRPC (gRPC) and" \
            ":$CALLSCOPE_COLLECTOR_OTLP_HTTP (HTTP), to Jaeger at 127.0.0.1:$CALLSCOPE_JAEGER_OTLP_GRPC; Ctrl-C stops it"
        exec "$binary" --config "$here/otel-collector.yaml" --config "$here/otel-collector.loopback.yaml" "$@" ;;
    -h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
    *) log "unknown command '$1'; use: run (default), build, build-collector, collector, --help"; exit 2 ;;
esac
