#!/usr/bin/env bash
# Installs (if missing) and starts (if not running) the real brokers the
# tests talk to, each on its standard loopback port. Idempotent: a broker
# already answering on its port is left alone.
#
#   Redis      127.0.0.1:6379   Debian redis-server
#   NATS       127.0.0.1:4222   Debian nats-server, with JetStream (-js)
#   Mosquitto  127.0.0.1:1883   Debian mosquitto (+ mosquitto-clients for the interop test)
#
#   Kafka      127.0.0.1:9092   Tansu 0.6 from crates.io (`cargo install tansu
#                               --no-default-features --features libsql`,
#                               about 17 minutes on 2 cores, then cached in
#                               ~/.cargo/bin), with sqlite storage
#
# Pulsar (6650) is added by its adapter issue (#8).
# Runtime files (data, logs, pid files) go to target/brokers/.
#
# Exit status: non-zero if a broker could not be started. With CI=true that
# fails the run; elsewhere scripts/test.sh goes on and the broker tests
# report themselves as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="$PWD/target/brokers"
mkdir -p "$RUN_DIR"

log() { printf 'brokers: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_open "$1" && return 0
        sleep 0.1
    done
    return 1
}

APT_UPDATED=0
apt_install() { # package...
    if ! command -v apt-get >/dev/null; then
        log "apt-get not available; install $* by hand"
        return 1
    fi
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if [ "$APT_UPDATED" -eq 0 ]; then
        $sudo apt-get update -qq >/dev/null || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_binary() { # binary package
    command -v "$1" >/dev/null && return 0
    log "installing $2"
    apt_install "$2" && command -v "$1" >/dev/null
}

start_redis() {
    port_open 6379 && { log "redis already on 6379"; return 0; }
    ensure_binary redis-server redis-server || return 1
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" --pidfile "$RUN_DIR/redis.pid" || return 1
    wait_port 6379 10
}

start_nats() {
    port_open 4222 && { log "nats already on 4222"; return 0; }
    ensure_binary nats-server nats-server || return 1
    mkdir -p "$RUN_DIR/nats"
    nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$RUN_DIR/nats" -l "$RUN_DIR/nats.log" \
        >/dev/null 2>&1 &
    echo $! >"$RUN_DIR/nats.pid"
    wait_port 4222 10
}

start_mosquitto() {
    # The CLI clients are the independent peer of the MQTT interop test.
    ensure_binary mosquitto_pub mosquitto-clients || return 1
    ensure_binary mosquitto_passwd mosquitto || return 1
    port_open 1883 && { log "mosquitto already on 1883"; return 0; }
    cat >"$RUN_DIR/mosquitto.conf" <<CONF
listener 1883 127.0.0.1
allow_anonymous true
persistence true
persistence_location $RUN_DIR/
log_dest file $RUN_DIR/mosquitto.log
CONF
    mosquitto -d -c "$RUN_DIR/mosquitto.conf" || return 1
    wait_port 1883 10
}

TANSU_VERSION=0.6.0
start_kafka() {
    port_open 9092 && { log "kafka already on 9092"; return 0; }
    if ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
        log "installing tansu $TANSU_VERSION from crates.io (about 17 minutes the first time)"
        cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features --features libsql \
            >"$RUN_DIR/tansu-install.log" 2>&1 || return 1
    fi
    local tansu
    tansu=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
    mkdir -p "$RUN_DIR/tansu"
    # The sqlite path is relative to the working directory.
    (cd "$RUN_DIR/tansu" && nohup "$tansu" broker \
        --listener-url tcp://127.0.0.1:9092 \
        --advertised-listener-url tcp://127.0.0.1:9092 \
        --storage-engine sqlite://tansu.db >"$RUN_DIR/kafka.log" 2>&1 &
        echo $! >"$RUN_DIR/kafka.pid")
    wait_port 9092 20
}

# Independent clients for the interop tests, in a venv of our own.
ensure_python_tools() {
    local venv="$PWD/target/pyenv"
    "$venv/bin/python" -c "import confluent_kafka" 2>/dev/null && return 0
    log "making $venv with confluent-kafka"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q confluent-kafka
}

failed=()
if ensure_python_tools; then
    log "python tools ready"
else
    log "python tools could NOT be installed"
    failed+=("python-tools")
fi
for broker in redis nats mosquitto kafka; do
    if "start_$broker"; then
        log "$broker ready"
    else
        log "$broker could NOT be started (see $RUN_DIR/$broker.log)"
        failed+=("$broker")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    log "missing brokers: ${failed[*]}"
    exit 1
fi
