#!/usr/bin/env bash
# Installs (if missing) and starts (if not running) the real brokers the
# tests talk to, each on its standard loopback port. Idempotent: a broker
# already answering on its port is left alone.
#
#   Redis      127.0.0.1:6379   Debian redis-server
#   NATS       127.0.0.1:4222   Debian nats-server, with JetStream (-js)
#   NATS       127.0.0.1:4231-4233  a 3-node NATS cluster with JetStream for
#   cluster                     NATS_CLUSTER_URL (cluster "pubsub", servers
#                               pubsub-n1..3, routes on 6231-6233, monitoring
#                               on 8231-8233); config and JetStream store of
#                               node N in target/brokers/nats-cluster/N; ready
#                               once a JetStream meta leader is elected
#   Mosquitto  127.0.0.1:1883   Debian mosquitto (+ mosquitto-clients for the interop test)
#   Redis      127.0.0.1:7000-7005  a Redis Cluster (3 masters, 3 replicas, node
#   Cluster                     timeout 2 s, AOF) for REDIS_CLUSTER_URL; data in
#                               target/brokers/redis-cluster/<port>
#
#   Kafka      127.0.0.1:9092   Apache Kafka 4.4 (KRaft, combined broker and
#                               controller on 9093), its jars fetched from
#                               Maven Central by scripts/kafka/pom.xml into
#                               target/kafka/libs (cached in ~/.m2), run on the
#                               machine's Java 17 with settings written here
#   Kafka      127.0.0.1:9191-9193  a 3-broker Apache Kafka 4.4 KRaft cluster
#   cluster                     (each node broker and controller, controllers
#                               on 9291-9293, same jars) for
#                               KAFKA_CLUSTER_SERVERS; internal topics with 3
#                               replicas; data of node N in
#                               target/brokers/kafka-cluster/N
#   Kafka #2   127.0.0.1:9094   noida-db 0.2.2 from PyPI (in target/pyenv), a
#                               second Kafka-protocol implementation that
#                               scripts/test.sh runs the Kafka suite against
#                               (0.2.3 needs glibc 2.39)
#   Tansu      127.0.0.1:9095   only with PUBSUB_TANSU=1: Tansu 0.6 from
#                               crates.io (`cargo install tansu
#                               --no-default-features --features libsql`, about
#                               20 minutes on 2 cores, then cached in
#                               ~/.cargo/bin), with sqlite storage
#
#   Pulsar     127.0.0.1:6652   Apache Pulsar 4.0.7 standalone (binary protocol;
#              127.0.0.1:8082   HTTP admin API), its jars fetched from Maven
#                               Central by scripts/pulsar/pom.xml into
#                               target/pulsar/libs; RocksDB metadata store, one
#                               bookie in process on 127.0.0.1:3191, no
#                               ZooKeeper, no stream storage, no functions
#                               worker; settings in scripts/pulsar/standalone.conf
#              127.0.0.1:6653   the same broker over TLS (pulsar+ssl://), client
#                               certificate required; the throw-away CA, server
#                               certificate (localhost, 127.0.0.1), client
#                               certificate and a second CA with its own client
#                               certificate are made once by the openssl CLI in
#                               target/brokers/tls/ (see make_test_certificates)
#   Pulsar #2  127.0.0.1:6650   pulsar-lite 0.2 from PyPI (in target/pyenv) on
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

# A Redis Cluster of 3 masters and 3 replicas on 127.0.0.1:7000-7005, for
# the cluster conformance run (REDIS_CLUSTER_URL). Node timeout 2 s, so a
# killed master's replica takes over within a few seconds. Idempotent: a
# cluster answering cluster_state:ok on 7000 is left alone; nodes already
# up are reused, and the slots are assigned only if no node has any.
REDIS_CLUSTER_PORTS=(7000 7001 7002 7003 7004 7005)
start_redis_cluster() {
    local p dir ok i
    if port_open 7000 && redis-cli -p 7000 cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
        log "redis cluster already on 7000-7005"
        return 0
    fi
    ensure_binary redis-server redis-server || return 1
    for p in "${REDIS_CLUSTER_PORTS[@]}"; do
        port_open "$p" && continue
        dir="$RUN_DIR/redis-cluster/$p"
        mkdir -p "$dir"
        redis-server --daemonize yes --bind 127.0.0.1 --port "$p" --cluster-enabled yes \
            --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 2000 \
            --appendonly yes --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" || return 1
    done
    for p in "${REDIS_CLUSTER_PORTS[@]}"; do wait_port "$p" 10 || return 1; done
    if redis-cli -p 7000 cluster info 2>/dev/null | grep -q 'cluster_slots_assigned:0'; then
        redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_CLUSTER_PORTS[@]}") \
            --cluster-replicas 1 --cluster-yes >"$RUN_DIR/redis-cluster/create.log" 2>&1 || return 1
    fi
    for ((i = 0; i < 300; i++)); do
        ok=1
        for p in "${REDIS_CLUSTER_PORTS[@]}"; do
            redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
        done
        [ "$ok" = 1 ] && return 0
        sleep 0.1
    done
    log "redis cluster: cluster_state is not ok on every node"
    return 1
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

# A 3-node NATS cluster (JetStream replicated over the three): each node
# that is not answering is (re)started on its own config and store.
start_nats_cluster() {
    ensure_binary nats-server nats-server || return 1
    local n dir
    for n in 1 2 3; do
        port_open "423$n" && continue
        dir="$RUN_DIR/nats-cluster/$n"
        mkdir -p "$dir"
        cat >"$dir/nats.conf" <<CONF
server_name: pubsub-n$n
listen: 127.0.0.1:423$n
http: 127.0.0.1:823$n
jetstream { store_dir: "$dir" }
cluster {
  name: pubsub
  listen: 127.0.0.1:623$n
  routes: [nats-route://127.0.0.1:6231, nats-route://127.0.0.1:6232, nats-route://127.0.0.1:6233]
}
log_file: "$dir/nats.log"
pid_file: "$dir/nats.pid"
CONF
        nohup nats-server -c "$dir/nats.conf" >/dev/null 2>&1 &
    done
    for n in 1 2 3; do wait_port "423$n" 10 || return 1; done
    # Streams can be made once the nodes have elected a JetStream meta leader.
    local i
    for ((i = 0; i < 300; i++)); do
        curl -s "http://127.0.0.1:8231/jsz" 2>/dev/null | grep -q '"leader": *"pubsub-n' && return 0
        sleep 0.1
    done
    log "nats cluster: no JetStream meta leader within 30 s"
    return 1
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
# What a production Mosquitto needs too (README, MQTT notes): PUBACKs
# without Nagle's delay, and a queue per client that holds what a consumer
# may leave unacked (the stock limit of 1000 drops confirmed q1 messages).
set_tcp_nodelay true
max_queued_messages 100000
CONF
    mosquitto -d -c "$RUN_DIR/mosquitto.conf" || return 1
    wait_port 1883 10
}

# A Java broker from Maven Central: the runtime jars of scripts/NAME/pom.xml
# are copied into target/NAME/libs once, and again when the pom changes
# (the version is in the pom; the downloads are cached in ~/.m2).
fetch_maven() { # name (kafka | pulsar)
    local pom="scripts/$1/pom.xml" libs="$PWD/target/$1/libs"
    [ -f "$libs/.complete" ] && cmp -s "$pom" "$libs/.complete" && return 0
    ensure_binary java openjdk-17-jre-headless || return 1
    ensure_binary mvn maven || return 1
    log "fetching $1 from Maven Central into $libs"
    rm -rf "$libs"
    mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$libs" >"$RUN_DIR/$1-fetch.log" 2>&1 || return 1
    cp "$pom" "$libs/.complete"
}

KAFKA_LIBS="$PWD/target/kafka/libs"
fetch_kafka() { fetch_maven kafka; }

# The cluster id of every test broker: any fixed base64 UUID will do, since
# each broker has a data dir of its own.
KAFKA_CLUSTER_ID=I5rc0JjaSZCAw_Nof5vRlQ
start_kafka() {
    # TestBroker starts brokers of its own from these jars too.
    fetch_kafka || return 1
    port_open 9092 && { log "kafka already on 9092"; return 0; }
    local dir="$RUN_DIR/kafka"
    mkdir -p "$dir"
    cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://127.0.0.1:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Stock Kafka waits 3 s for more members before a new group's first
# assignment; the SDK copes with that (see the README), the suite need not wait.
group.initial.rebalance.delay.ms=0
PROPS
    local java_opts=(-Xms256m -Xmx1g -XX:+UseG1GC "-Dlog4j2.configurationFile=$PWD/scripts/kafka/log4j2.properties"
        "-Dkafka.logs.file=$RUN_DIR/kafka.log")
    if [ ! -f "$dir/data/meta.properties" ]; then
        java "${java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" \
            -c "$dir/server.properties" >"$RUN_DIR/kafka-format.log" 2>&1 || return 1
    fi
    nohup java "${java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
        >"$RUN_DIR/kafka.out" 2>&1 &
    echo $! >"$RUN_DIR/kafka.pid"
    wait_port 9092 60
}

# noida-db: a second Kafka-protocol implementation (PyPI, in target/pyenv).
# A 3-broker Kafka cluster in KRaft mode: each node that is not answering
# is (re)started; storage formatted once with the single node's cluster id.
start_kafka_cluster() {
    fetch_kafka || return 1
    local n dir voters="1@127.0.0.1:9291,2@127.0.0.1:9292,3@127.0.0.1:9293"
    for n in 1 2 3; do
        port_open "919$n" && continue
        dir="$RUN_DIR/kafka-cluster/$n"
        mkdir -p "$dir"
        cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:919$n,CONTROLLER://127.0.0.1:929$n
advertised.listeners=PLAINTEXT://127.0.0.1:919$n
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# With acks=all (the adapter's q1) a send returns once 2 of 3 replicas have it.
min.insync.replicas=2
group.initial.rebalance.delay.ms=0
PROPS
        local java_opts=(-Xms128m -Xmx512m -XX:+UseSerialGC
            "-Dlog4j2.configurationFile=$PWD/scripts/kafka/log4j2.properties" "-Dkafka.logs.file=$dir/kafka.log")
        if [ ! -f "$dir/data/meta.properties" ]; then
            java "${java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" \
                -c "$dir/server.properties" >"$dir/format.log" 2>&1 || return 1
        fi
        nohup java "${java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
            >"$dir/kafka.out" 2>&1 &
        echo $! >"$dir/kafka.pid"
    done
    for n in 1 2 3; do wait_port "919$n" 90 || return 1; done
}

start_kafka_noida() {
    port_open 9094 && { log "noida-db already on 9094"; return 0; }
    mkdir -p "$RUN_DIR/noida"
    nohup "$PWD/target/pyenv/bin/noida-db" start --only kafka --kafka-port 9094 --data-dir "$RUN_DIR/noida" \
        >"$RUN_DIR/kafka_noida.log" 2>&1 &
    echo $! >"$RUN_DIR/kafka_noida.pid"
    wait_port 9094 20
}

# Tansu, only with PUBSUB_TANSU=1 (a 20-minute build the first time).
TANSU_VERSION=0.6.0
start_kafka_tansu() {
    port_open 9095 && { log "tansu already on 9095"; return 0; }
    if ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
        log "installing tansu $TANSU_VERSION from crates.io (about 20 minutes the first time)"
        cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features --features libsql \
            >"$RUN_DIR/tansu-install.log" 2>&1 || return 1
    fi
    local tansu
    tansu=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
    mkdir -p "$RUN_DIR/tansu"
    # The sqlite path is relative to the working directory.
    (cd "$RUN_DIR/tansu" && nohup "$tansu" broker \
        --listener-url tcp://127.0.0.1:9095 \
        --advertised-listener-url tcp://127.0.0.1:9095 \
        --storage-engine sqlite://tansu.db >"$RUN_DIR/kafka_tansu.log" 2>&1 &
        echo $! >"$RUN_DIR/kafka_tansu.pid")
    wait_port 9095 20
}

# Apache Pulsar 4.0.7 standalone from Maven Central (235 MB of jars).
PULSAR_LIBS="$PWD/target/pulsar/libs"
fetch_pulsar() { fetch_maven pulsar; }

# Serving means more than an open port: the standalone opens 6652 before it
# has made the cluster, the public tenant and public/default. The TLS port
# 6653 opens with 6652.
pulsar_apache_ready() {
    port_open 6652 && port_open 6653 && curl -sf --max-time 2 http://127.0.0.1:8082/admin/v2/namespaces/public 2>/dev/null |
        grep -q '"public/default"'
}

# A fresh standalone takes seconds for its first tenant, namespace and
# topic (bundle ownership, the namespace's system topic, a cold JVM): made
# here once, with a generous timeout, so the tests' first requests are not
# the ones that pay for it.
warm_pulsar_apache() {
    local api=http://127.0.0.1:8082/admin/v2 put=(curl -s -o /dev/null --max-time 60 -X PUT -H 'Content-Type: application/json')
    "${put[@]}" -d '{"adminRoles":[],"allowedClusters":["standalone"]}' "$api/tenants/pubsub-warmup"
    "${put[@]}" "$api/namespaces/pubsub-warmup/warmup"
    "${put[@]}" "$api/persistent/pubsub-warmup/warmup/t"
    curl -sf -o /dev/null --max-time 60 "$api/persistent/pubsub-warmup/warmup/t/stats" ||
        log "apache pulsar: the warm-up topic has no stats yet (the tests may meet a cold broker)"
}

# Throw-away certificates for the brokers' TLS listeners (Apache Pulsar's
# 6653), made once with the openssl CLI into target/brokers/tls/ (delete the
# directory to make new ones; they last ten years):
#   ca.pem, ca.key                  the CA the servers and client certificates come from
#   server.pem, server.key          server certificate for localhost and 127.0.0.1 (PKCS#8 key)
#   client.pem, client.key          client certificate (CN pubsub-client) from ca.pem (PKCS#8 key)
#   other-ca.pem, other-ca.key      a second CA, unknown to the brokers
#   other-client.pem, other-client.key  a client certificate from other-ca.pem
TLS_DIR="$RUN_DIR/tls"
make_test_certificates() {
    [ -s "$TLS_DIR/other-client.pem" ] && return 0
    ensure_binary openssl openssl || return 1
    local tmp="$TLS_DIR.tmp"
    rm -rf "$tmp" && mkdir -p "$tmp" || return 1
    local ca_ext=(-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign")
    cert_ca() { # name subject
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "$2" "${ca_ext[@]}" \
            -keyout "$tmp/$1.key" -out "$tmp/$1.pem" 2>/dev/null
    }
    cert_leaf() { # name ca subject extensions
        openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$tmp/$1.key" -out "$tmp/$1.csr" 2>/dev/null &&
            printf 'basicConstraints=CA:FALSE\n%s\n' "$4" >"$tmp/$1.ext" &&
            openssl x509 -req -sha256 -days 3650 -in "$tmp/$1.csr" -CA "$tmp/$2.pem" -CAkey "$tmp/$2.key" \
                -CAcreateserial -extfile "$tmp/$1.ext" -out "$tmp/$1.pem" 2>/dev/null &&
            # PKCS#8 (BEGIN PRIVATE KEY), what Pulsar and native-tls read.
            openssl pkcs8 -topk8 -nocrypt -in "$tmp/$1.key" -out "$tmp/$1.key.p8" &&
            mv "$tmp/$1.key.p8" "$tmp/$1.key" && rm -f "$tmp/$1.csr" "$tmp/$1.ext"
    }
    cert_ca ca "/CN=pubsub test CA" &&
        cert_ca other-ca "/CN=pubsub other test CA" &&
        cert_leaf server ca "/CN=localhost" \
            $'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth' &&
        cert_leaf client ca "/CN=pubsub-client" "extendedKeyUsage=clientAuth" &&
        cert_leaf other-client other-ca "/CN=pubsub-other-client" "extendedKeyUsage=clientAuth" || {
        log "could not make the test certificates in $tmp"
        return 1
    }
    rm -f "$tmp"/*.srl
    chmod 600 "$tmp"/*.key
    rm -rf "$TLS_DIR" && mv "$tmp" "$TLS_DIR"
    log "made test certificates in $TLS_DIR"
}

start_pulsar_apache() {
    pulsar_apache_ready && { log "apache pulsar already on 6652 and 6653"; return 0; }
    if port_open 6652 && ! port_open 6653; then
        log "apache pulsar on 6652 has no TLS listener on 6653 (started before it had one, or still starting):" \
            "stop it (kill \$(cat $RUN_DIR/pulsar-apache.pid)) and run this again"
        return 1
    fi
    ensure_binary curl curl || return 1
    fetch_pulsar || return 1
    make_test_certificates || return 1
    local dir="$RUN_DIR/pulsar-apache" conf="$RUN_DIR/pulsar-apache/standalone.conf"
    # Fresh data and log on every start: on the data of a standalone that
    # did not stop cleanly, the bookie's stale registration flapped (deleted
    # and created thousands of times a second, a 340 MB log) and every write
    # failed with "Not enough non-faulty bookies". Nothing the tests need
    # outlives a run.
    rm -rf "$dir/metadata" "$dir/bookkeeper"
    : >"$RUN_DIR/pulsar-apache.log"
    mkdir -p "$dir"
    # scripts/pulsar/standalone.conf with the TLS listener's files (absolute
    # paths, which depend on where the checkout is) appended.
    {
        cat "$PWD/scripts/pulsar/standalone.conf"
        printf '\n# Appended by scripts/brokers.sh: the TLS listener (6653) files.\n'
        printf 'tlsCertificateFilePath=%s\n' "$TLS_DIR/server.pem"
        printf 'tlsKeyFilePath=%s\n' "$TLS_DIR/server.key"
        printf 'tlsTrustCertsFilePath=%s\n' "$TLS_DIR/ca.pem"
    } >"$conf"
    # The JVM options are bin/pulsar's (the --add-opens Java 17 needs for
    # Netty, BookKeeper and the OS metrics), with small heaps for a 2-core
    # test machine: about 0.5-0.7 GB resident.
    local java_opts=(-Xms256m -Xmx512m -XX:MaxDirectMemorySize=512m -XX:+UseG1GC
        --add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.util.zip=ALL-UNNAMED
        --add-opens java.base/sun.net=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED
        --add-opens java.base/jdk.internal.misc=ALL-UNNAMED --add-opens java.management/sun.management=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        -Dio.netty.tryReflectionSetAccessible=true
        "-Dlog4j2.configurationFile=$PWD/scripts/pulsar/log4j2.properties"
        "-Dpulsar.log.file=$RUN_DIR/pulsar-apache.log")
    # Started in its data dir: the standalone resolves ./data, ./offloaders
    # and the like against the working directory.
    (cd "$dir" || exit 1
        nohup java "${java_opts[@]}" -cp "$PULSAR_LIBS/*" org.apache.pulsar.PulsarStandaloneStarter \
        -c "$conf" --no-functions-worker --no-stream-storage \
        --bookkeeper-port 3191 --metadata-dir "$dir/metadata" --bookkeeper-dir "$dir/bookkeeper" \
        >"$RUN_DIR/pulsar-apache.out" 2>&1 &
        echo $! >"$RUN_DIR/pulsar-apache.pid")
    local i pid
    pid=$(cat "$RUN_DIR/pulsar-apache.pid")
    for ((i = 0; i < 1800; i++)); do # 3 minutes; about 3 s on a 2-core machine
        pulsar_apache_ready && { warm_pulsar_apache; return 0; }
        kill -0 "$pid" 2>/dev/null || { log "apache pulsar exited (see $RUN_DIR/pulsar-apache.log)"; return 1; }
        sleep 0.1
    done
    return 1
}

# pulsar-lite: a second Pulsar-protocol implementation, behind its relay.
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
    "$venv/bin/python" -c "import confluent_kafka, pulsar, pulsar_lite, redis" 2>/dev/null && [ -x "$venv/bin/noida-db" ] &&
        return 0
    log "making $venv with confluent-kafka, pulsar-client, pulsar-lite, noida-db and redis-py"
    python3 -m venv "$venv" &&
        "$venv/bin/pip" install -q confluent-kafka pulsar-client "pulsar-lite==0.2.0" "noida-db==0.2.2" redis
}

failed=()
if ensure_python_tools; then
    log "python tools ready"
else
    log "python tools could NOT be installed"
    failed+=("python-tools")
fi
brokers=(redis redis_cluster nats nats_cluster mosquitto kafka kafka_cluster kafka_noida pulsar_apache pulsar)
[ "${PUBSUB_TANSU:-}" = "1" ] && brokers+=(kafka_tansu)
for broker in "${brokers[@]}"; do
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
