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
#   Pulsar     127.0.0.1:6650   pulsar-lite 0.2 from PyPI (in target/pyenv) on
#                               127.0.0.1:6651, behind tools/pulsar-lite-relay
#                               on 6650: the relay adds the MESSAGE-frame
#                               checksum the Rust `pulsar` crate requires and
#                               pulsar-lite omits (see the relay's docs).
#                               Metrics endpoint off. Needs protoc (Debian
#                               protobuf-compiler) to build the pulsar crate.
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

start_pulsar() {
    ensure_binary protoc protobuf-compiler || return 1
    local venv="$PWD/target/pyenv"
    # The broker binary ships inside the wheel; link it where TestBroker looks.
    local bin
    bin=$("$venv/bin/python" -c "from pulsar_lite.binary_finder import find_pulsar_lite_binary as f; print(f())") \
        || return 1
    ln -sf "$bin" "$venv/bin/pulsar-lite"
    log "building the pulsar-lite relay"
    cargo build -q -p pulsar-lite-relay >"$RUN_DIR/relay-build.log" 2>&1 || return 1
    port_open 6650 && { log "pulsar already on 6650"; return 0; }
    mkdir -p "$RUN_DIR/pulsar"
    printf '[metrics]\nenabled = false\n' >"$RUN_DIR/pulsar-lite.toml"
    if ! port_open 6651; then
        nohup "$venv/bin/pulsar-lite" --config "$RUN_DIR/pulsar-lite.toml" --addr 127.0.0.1:6651 \
            --db-path "$RUN_DIR/pulsar" --log-level warn >"$RUN_DIR/pulsar.log" 2>&1 &
        echo $! >"$RUN_DIR/pulsar.pid"
        wait_port 6651 20 || return 1
    fi
    nohup "$PWD/target/debug/pulsar-lite-relay" --listen 127.0.0.1:6650 --broker 127.0.0.1:6651 \
        >"$RUN_DIR/pulsar-relay.log" 2>&1 &
    echo $! >"$RUN_DIR/pulsar-relay.pid"
    wait_port 6650 10
}

# Independent clients for the interop tests (and the pulsar-lite broker),
# in a venv of our own.
ensure_python_tools() {
    local venv="$PWD/target/pyenv"
    "$venv/bin/python" -c "import confluent_kafka, pulsar, pulsar_lite" 2>/dev/null && return 0
    log "making $venv with confluent-kafka, pulsar-client and pulsar-lite"
    python3 -m venv "$venv" && "$venv/bin/pip" install -q confluent-kafka pulsar-client "pulsar-lite==0.2.0"
}

failed=()
if ensure_python_tools; then
    log "python tools ready"
else
    log "python tools could NOT be installed"
    failed+=("python-tools")
fi
for broker in redis nats mosquitto kafka pulsar; do
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
