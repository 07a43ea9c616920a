//! The same workloads written directly against the client libraries (the
//! baseline of the SDK/raw ratio), and tokio channels (the baseline of the
//! embedded backend).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;

use crate::sdk::BATCH;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}{n}")
}

/// How long a receiving loop of a multi-consumer baseline waits before it
/// checks whether the others have received the rest.
const POLL: Duration = Duration::from_millis(100);

/// The messages received between all consumers. For a lossy (q0) run the
/// consumers also stop once publishing is done and [`IDLE`] passed without
/// a message, as the SDK's workload does.
#[derive(Default)]
struct Received {
    count: AtomicUsize,
    lossy: bool,
    published: std::sync::atomic::AtomicBool,
}

/// How long q0 consumers wait for more once everything was published.
const IDLE: Duration = Duration::from_secs(1);

impl Received {
    fn new(lossy: bool) -> Arc<Self> {
        Arc::new(Received {
            lossy,
            ..Default::default()
        })
    }

    /// Whether a consumer whose last message came at `last` can stop.
    fn done(&self, n: usize, last: Instant) -> bool {
        self.count() >= n || (self.lossy && self.published.load(Ordering::Acquire) && last.elapsed() >= IDLE)
    }

    fn add(&self, k: usize) {
        self.count.fetch_add(k, Ordering::AcqRel);
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn publishing_done(&self) {
        self.published.store(true, Ordering::Release);
    }
}

/// Marks publishing done and waits for every receiving task: the time
/// from `started` to the last message any got, and how many came.
async fn all_received(
    received: &Received,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Result<Instant, BoxError>>>,
) -> Result<(Duration, usize), BoxError> {
    received.publishing_done();
    let mut last = started;
    for t in tasks {
        last = last.max(t.await??);
    }
    Ok((last - started, received.count()))
}

/// NATS JetStream: publish `n` messages in pipelined batches of [`BATCH`]
/// (the PubAcks awaited per batch, as the SDK's `send_batch` does).
pub async fn nats_publish(url: &str, n: usize, size: usize) -> Result<Duration, BoxError> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let name = unique("RAW");
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![name.to_lowercase()],
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    nats_send(&js, &name.to_lowercase(), n, &payload).await?;
    let took = started.elapsed();
    js.delete_stream(&name).await?;
    Ok(took)
}

async fn nats_send(js: &jetstream::Context, subject: &str, n: usize, payload: &bytes::Bytes) -> Result<(), BoxError> {
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let mut acks = Vec::with_capacity(k);
        for _ in 0..k {
            acks.push(js.publish(subject.to_string(), payload.clone()).await?);
        }
        for a in acks {
            a.await?;
        }
        left -= k;
    }
    Ok(())
}

/// NATS JetStream end to end: `consumers` pulling from one durable
/// consumer ack each message while `n` are published.
pub async fn nats_end_to_end(
    url: &str,
    n: usize,
    size: usize,
    consumers: usize,
) -> Result<(Duration, usize), BoxError> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let name = unique("RAW");
    let subject = name.to_lowercase();
    let s = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await?;
    let consumer = s
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ..Default::default()
        })
        .await?;
    let received = Received::new(false);
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (consumer, received) = (consumer.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await?;
            let mut last = Instant::now();
            while !received.done(n, last) {
                let Ok(m) = tokio::time::timeout(POLL, messages.next()).await else {
                    continue;
                };
                m.ok_or("stream ended")??.ack().await?;
                received.add(1);
                last = Instant::now();
            }
            Ok::<Instant, BoxError>(last)
        }));
    }
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    nats_send(&js, &subject, n, &payload).await?;
    let outcome = all_received(&received, started, tasks).await?;
    js.delete_stream(&name).await?;
    Ok(outcome)
}

/// A task counting what a q0 subscription delivers until `n` came or it
/// went idle after publishing; gives the time of the last message.
fn count_q0<S>(mut messages: S, received: Arc<Received>, n: usize) -> tokio::task::JoinHandle<Result<Instant, BoxError>>
where
    S: futures::Stream + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut last = Instant::now();
        while !received.done(n, last) {
            if let Ok(m) = tokio::time::timeout(POLL, messages.next()).await {
                m.ok_or("subscription ended")?;
                received.add(1);
                last = Instant::now();
            }
        }
        Ok(last)
    })
}

/// NATS core (q0): one queue-group subscriber while `n` are published
/// (flushed once at the end, when the SDK's producer closes).
pub async fn nats_core_end_to_end(url: &str, n: usize, size: usize) -> Result<(Duration, usize), BoxError> {
    let client = async_nats::connect(url).await?;
    let subject = unique("raw.q0.");
    let subscriber = client.queue_subscribe(subject.clone(), "bench".into()).await?;
    client.flush().await?;
    let received = Received::new(true);
    let task = count_q0(subscriber, received.clone(), n);
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    for _ in 0..n {
        client.publish(subject.clone(), payload.clone()).await?;
    }
    client.flush().await?;
    all_received(&received, started, vec![task]).await
}

/// A redis client as a user writes it (`Client::open(url)`: redis-rs 1.x
/// leaves `TCP_NODELAY` off) or, with `nodelay`, with `TCP_NODELAY` set
/// through the connection info, as the SDK does.
fn redis_client(url: &str, nodelay: bool) -> Result<redis::Client, BoxError> {
    use redis::IntoConnectionInfo;
    if !nodelay {
        return Ok(redis::Client::open(url)?);
    }
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(redis::Client::open(info.set_tcp_settings(tcp))?)
}

/// Redis Pub/Sub (q0): one subscriber while `n` are published with
/// `PUBLISH` in pipelines of [`BATCH`].
pub async fn redis_pubsub_end_to_end(url: &str, n: usize, size: usize) -> Result<(Duration, usize), BoxError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let channel = unique("raw:q0:");
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    let messages = pubsub.into_on_message();
    let received = Received::new(true);
    let task = count_q0(messages, received.clone(), n);
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            pipe.cmd("PUBLISH").arg(&channel).arg(&payload).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
        left -= k;
    }
    all_received(&received, started, vec![task]).await
}

/// Redis Streams: `XADD` in pipelines of [`BATCH`] (`nodelay`: see [`redis_client`]).
pub async fn redis_publish(url: &str, n: usize, size: usize, nodelay: bool) -> Result<Duration, BoxError> {
    let client = redis_client(url, nodelay)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let key = unique("raw:");
    let payload = vec![b'x'; size];
    let started = Instant::now();
    redis_send(&mut conn, &key, n, &payload).await?;
    let took = started.elapsed();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
    Ok(took)
}

async fn redis_send(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    n: usize,
    payload: &[u8],
) -> Result<(), BoxError> {
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            pipe.cmd("XADD").arg(key).arg("*").arg("p").arg(payload);
        }
        let _: Vec<String> = pipe.query_async(conn).await?;
        left -= k;
    }
    Ok(())
}

/// Redis Streams end to end: `consumers` group consumers (`XREADGROUP` of
/// up to [`BATCH`], one `XACK` per batch) while `n` are published
/// (`nodelay`: see [`redis_client`]).
pub async fn redis_end_to_end(
    url: &str,
    n: usize,
    size: usize,
    consumers: usize,
    nodelay: bool,
) -> Result<(Duration, usize), BoxError> {
    let client = redis_client(url, nodelay)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let key = unique("raw:");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await?;
    let received = Received::new(false);
    let mut tasks = Vec::new();
    for i in 0..consumers {
        let mut reader = client.get_multiplexed_async_connection().await?;
        let (read_key, received) = (key.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let mut last = Instant::now();
            while !received.done(n, last) {
                let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg(format!("c{i}"))
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("BLOCK")
                    .arg(POLL.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&read_key)
                    .arg(">")
                    .query_async(&mut reader)
                    .await?;
                for k in reply.keys {
                    let ids: Vec<String> = k.ids.iter().map(|e| e.id.clone()).collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let _: i64 = redis::cmd("XACK")
                        .arg(&read_key)
                        .arg("g")
                        .arg(&ids)
                        .query_async(&mut reader)
                        .await?;
                    received.add(ids.len());
                    last = Instant::now();
                }
            }
            Ok::<Instant, BoxError>(last)
        }));
    }
    let payload = vec![b'x'; size];
    let started = Instant::now();
    redis_send(&mut conn, &key, n, &payload).await?;
    let outcome = all_received(&received, started, tasks).await?;
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
    Ok(outcome)
}

/// tokio mpsc: one producer, `consumers` competing receivers (behind a
/// mutex, as a work queue), `n` messages of `size` bytes.
pub async fn mpsc_end_to_end(n: usize, size: usize, consumers: usize) -> Duration {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1000);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let received = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (rx, received) = (rx.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let mut rx = rx.lock().await;
                let mut buf = Vec::with_capacity(BATCH);
                if rx.recv_many(&mut buf, BATCH).await == 0 {
                    break;
                }
                drop(rx);
                if received.fetch_add(buf.len(), Ordering::AcqRel) + buf.len() >= n {
                    break;
                }
            }
        }));
    }
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    for _ in 0..n {
        if tx.send(payload.clone()).await.is_err() {
            break;
        }
    }
    drop(tx);
    for t in tasks {
        let _ = t.await;
    }
    started.elapsed()
}

/// tokio broadcast: every one of `subscribers` receivers gets all `n` messages.
pub async fn broadcast_fan_out(n: usize, size: usize, subscribers: usize) -> Duration {
    let (tx, _) = tokio::sync::broadcast::channel::<bytes::Bytes>(1024);
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let mut rx = tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < n {
                match rx.recv().await {
                    Ok(_) => got += 1,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => got += k as usize,
                    Err(_) => break,
                }
            }
        }));
    }
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    for _ in 0..n {
        let _ = tx.send(payload.clone());
        // Let receivers keep up rather than lag (a fair fan-out loses nothing).
        if tx.len() > 512 {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    started.elapsed()
}

/// Pulsar: send `n` messages in batches of [`BATCH`] handed over with
/// `send_non_blocking`, the receipts awaited per batch (as the SDK's
/// `send_batch` does).
pub async fn pulsar_publish(url: &str, n: usize, size: usize) -> Result<Duration, BoxError> {
    let client = pulsar::Pulsar::builder(url, pulsar::TokioExecutor).build().await?;
    let topic = format!("persistent://bench/raw/{}", unique("p"));
    let mut producer = client.producer().with_topic(&topic).build().await?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    pulsar_send(&mut producer, n, &payload).await?;
    Ok(started.elapsed())
}

async fn pulsar_send(
    producer: &mut pulsar::Producer<pulsar::TokioExecutor>,
    n: usize,
    payload: &[u8],
) -> Result<(), BoxError> {
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let mut receipts = Vec::with_capacity(k);
        for _ in 0..k {
            receipts.push(producer.send_non_blocking(payload.to_vec()).await?);
        }
        for r in receipts {
            r.await?;
        }
        left -= k;
    }
    Ok(())
}

/// Pulsar end to end: `consumers` of one Shared subscription ack each
/// message while `n` are published (to a non-persistent topic for q0).
pub async fn pulsar_end_to_end(
    url: &str,
    n: usize,
    size: usize,
    consumers: usize,
    q0: bool,
) -> Result<(Duration, usize), BoxError> {
    let client = pulsar::Pulsar::builder(url, pulsar::TokioExecutor).build().await?;
    let domain = if q0 { "non-persistent" } else { "persistent" };
    let topic = format!("{domain}://bench/raw/{}", unique("e"));
    let received = Received::new(q0);
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
            .consumer()
            .with_topic(&topic)
            .with_subscription("bench")
            .with_subscription_type(pulsar::SubType::Shared)
            .with_batch_size(1000)
            .build()
            .await?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = Instant::now();
            while !received.done(n, last) {
                let Ok(m) = tokio::time::timeout(POLL, consumer.next()).await else {
                    continue;
                };
                let m = m.ok_or("stream ended")??;
                consumer.ack(&m).await?;
                received.add(1);
                last = Instant::now();
            }
            Ok::<Instant, BoxError>(last)
        }));
    }
    let mut producer = client.producer().with_topic(&topic).build().await?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    pulsar_send(&mut producer, n, &payload).await?;
    all_received(&received, started, tasks).await
}

/// Pulsar latency as the `pulsar` crate alone gives it: one message every
/// `1 / rate` s for `seconds`, each carrying its send time, received by a
/// consumer on the same topic; returns the sorted send-to-receive times.
/// The same workload as the SDK's latency row.
pub async fn pulsar_latency(url: &str, rate: u32, seconds: u32) -> Result<Vec<Duration>, BoxError> {
    let client = pulsar::Pulsar::builder(url, pulsar::TokioExecutor).build().await?;
    let topic = format!("persistent://bench/raw/{}", unique("lat"));
    let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
        .consumer()
        .with_topic(&topic)
        .with_subscription("latency")
        .build()
        .await?;
    let mut producer = client.producer().with_topic(&topic).build().await?;
    let total = (rate * seconds) as usize;
    let origin = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(total);
        while samples.len() < total {
            let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await else {
                break;
            };
            samples.push(crate::stats::since_stamp(origin, &m.payload.data));
            let _ = consumer.ack(&m).await;
        }
        samples
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    for _ in 0..total {
        tick.tick().await;
        producer
            .send_non_blocking(crate::stats::stamped_payload(origin))
            .await?
            .await?;
    }
    let mut samples = receiver.await?;
    samples.sort();
    Ok(samples)
}

/// A fresh Kafka topic of `partitions`, created through the admin API
/// (Tansu does not auto-create topics).
async fn kafka_topic(bootstrap: &str, partitions: i32) -> Result<String, BoxError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = kafka_config(bootstrap).create()?;
    let name = unique("raw-");
    let new = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &AdminOptions::new()).await? {
        r.map_err(|(t, code)| format!("create topic {t}: {code}"))?;
    }
    Ok(name)
}

/// Deletes the topics [`kafka_topic`] made (`raw-*`).
pub async fn kafka_delete_raw_topics(bootstrap: &str) -> Result<(), BoxError> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let lister: BaseConsumer = kafka_config(bootstrap).create()?;
    let metadata = tokio::task::spawn_blocking(move || lister.fetch_metadata(None, Duration::from_secs(10))).await??;
    let raw: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with("raw-"))
        .collect();
    if raw.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = kafka_config(bootstrap).create()?;
    let names: Vec<&str> = raw.iter().map(String::as_str).collect();
    admin.delete_topics(&names, &AdminOptions::new()).await?;
    Ok(())
}

fn kafka_config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("log_level", "3");
    c
}

/// The producer settings the SDK uses: for q1 acks=all and idempotent, for
/// q0 acks=0; linger 0 ms.
fn kafka_producer(bootstrap: &str, q0: bool) -> Result<rdkafka::producer::FutureProducer, BoxError> {
    let (acks, idempotent) = if q0 { ("0", "false") } else { ("all", "true") };
    Ok(kafka_config(bootstrap)
        .set("acks", acks)
        .set("enable.idempotence", idempotent)
        .set("linger.ms", "0")
        .set("compression.type", "none")
        .create()?)
}

/// A producer that already knows the topic's partitions and leaders, as
/// the SDK's does once `create_producer` returned: setup is not timed.
async fn kafka_producer_for(
    bootstrap: &str,
    topic: &str,
    q0: bool,
) -> Result<rdkafka::producer::FutureProducer, BoxError> {
    use rdkafka::producer::Producer as _;
    let producer = kafka_producer(bootstrap, q0)?;
    let (probe, topic) = (producer.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || probe.client().fetch_metadata(Some(&topic), Duration::from_secs(10))).await??;
    Ok(producer)
}

async fn kafka_send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    n: usize,
    payload: &[u8],
) -> Result<(), BoxError> {
    use rdkafka::producer::FutureRecord;
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let mut deliveries = Vec::with_capacity(k);
        for _ in 0..k {
            let record = FutureRecord::<(), [u8]>::to(topic).payload(payload);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for d in deliveries {
            d.await?.map_err(|(e, _)| e)?;
        }
        left -= k;
    }
    Ok(())
}

/// Kafka (rdkafka): publish `n` messages in batches of [`BATCH`], the
/// delivery reports awaited per batch, to a topic of 4 partitions (the
/// SDK's default).
pub async fn kafka_publish(bootstrap: &str, n: usize, size: usize) -> Result<Duration, BoxError> {
    let topic = kafka_topic(bootstrap, 4).await?;
    let producer = kafka_producer_for(bootstrap, &topic, false).await?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    kafka_send(&producer, &topic, n, &payload).await?;
    Ok(started.elapsed())
}

/// Kafka end to end: `consumers` members of one group (`StreamConsumer`),
/// each storing a message's offset after handling it (the usual
/// at-least-once loop, with auto-commit of stored offsets) while `n` are
/// published to a topic of 4 partitions (for q0 with acks=0).
pub async fn kafka_end_to_end(
    bootstrap: &str,
    n: usize,
    size: usize,
    consumers: usize,
    q0: bool,
) -> Result<(Duration, usize), BoxError> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let topic = kafka_topic(bootstrap, 4).await?;
    let group = unique("raw-group-");
    let received = Received::new(q0);
    let mut members = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let consumer: StreamConsumer = kafka_config(bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        consumer.subscribe(&[&topic])?;
        let consumer = Arc::new(consumer);
        members.push(consumer.clone());
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = Instant::now();
            while !received.done(n, last) {
                let Ok(m) = tokio::time::timeout(POLL, consumer.recv()).await else {
                    continue;
                };
                consumer.store_offset_from_message(&m?)?;
                received.add(1);
                last = Instant::now();
            }
            Ok::<Instant, BoxError>(last)
        }));
    }
    // The clock starts once the group has assigned all 4 partitions, as the
    // SDK's `create_consumer` returns only then: timing the joins too put
    // the raw 4-consumer row at a seventh of the SDK's.
    let joined = Instant::now();
    while members
        .iter()
        .map(|m| m.assignment().map_or(0, |a| a.count()))
        .sum::<usize>()
        < 4
    {
        if joined.elapsed() > Duration::from_secs(30) {
            return Err("the raw group did not assign all 4 partitions within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let producer = kafka_producer_for(bootstrap, &topic, q0).await?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    kafka_send(&producer, &topic, n, &payload).await?;
    let outcome = all_received(&received, started, tasks).await?;
    // Dropping a StreamConsumer can hang (an rdkafka issue): leave the group
    // and drop it off the runtime.
    for consumer in members {
        consumer.unsubscribe();
        tokio::task::spawn_blocking(move || drop(consumer));
    }
    Ok(outcome)
}

/// MQTT v5 (rumqttc): a connection whose event loop runs in its own task,
/// as rumqttc applications run it, counting the broker's PUBACKs and
/// acking (manual acks) every PUBLISH it delivers.
struct MqttConnection {
    client: rumqttc::v5::AsyncClient,
    acked: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    progress: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttConnection {
    async fn open(
        host: &str,
        port: u16,
        subscribe: Option<(String, rumqttc::v5::mqttbytes::QoS)>,
    ) -> Result<Self, BoxError> {
        use rumqttc::v5::{mqttbytes::v5::Packet, Event};
        let mut o = rumqttc::v5::MqttOptions::new(unique("raw-"), host, port);
        o.set_keep_alive(Duration::from_secs(10));
        o.set_manual_acks(true);
        o.set_max_packet_size(Some(268_435_455));
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        o.set_network_options(network);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(o, 1000);
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        if let Some((filter, qos)) = subscribe {
            client.subscribe(filter, qos).await?;
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                    break;
                }
            }
        }
        let (acked, received) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let progress = Arc::new(tokio::sync::Notify::new());
        let task = {
            let (acked, received, progress, acker) =
                (acked.clone(), received.clone(), progress.clone(), client.clone());
            tokio::spawn(async move {
                while let Ok(event) = eventloop.poll().await {
                    match event {
                        Event::Incoming(Packet::PubAck(_)) => {
                            acked.fetch_add(1, Ordering::AcqRel);
                            progress.notify_waiters();
                        }
                        Event::Incoming(Packet::Publish(p)) => {
                            if acker.ack(&p).await.is_err() {
                                break;
                            }
                            received.fetch_add(1, Ordering::AcqRel);
                            progress.notify_waiters();
                        }
                        _ => {}
                    }
                }
            })
        };
        Ok(MqttConnection {
            client,
            acked,
            received,
            progress,
            task,
        })
    }

    /// Waits until `counter` reaches `n`.
    async fn wait(&self, counter: &AtomicUsize, n: usize) {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if counter.load(Ordering::Acquire) >= n {
                return;
            }
            notified.await;
        }
    }

    /// Publishes `n` messages. q1: each PUBACK awaited before the next
    /// PUBLISH, the fastest way through rumqttc measured here (pipelining
    /// 100 stalls about 44 ms per batch against Mosquitto), and what the
    /// SDK's `send_batch` does. q0: one after the other, nothing to await.
    async fn send(&self, topic: &str, n: usize, size: usize, q0: bool) -> Result<(), BoxError> {
        use rumqttc::v5::mqttbytes::QoS;
        let payload = bytes::Bytes::from(vec![b'x'; size]);
        let qos = if q0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
        for sent in 1..=n {
            self.client
                .publish_bytes(topic.to_string(), qos, false, payload.clone())
                .await?;
            if !q0 {
                self.wait(&self.acked, sent).await;
            }
        }
        Ok(())
    }
}

impl Drop for MqttConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// MQTT: publish `n` q1 messages on a connected client.
pub async fn mqtt_publish(host: &str, port: u16, n: usize, size: usize) -> Result<Duration, BoxError> {
    let topic = unique("raw/bench/");
    let publisher = MqttConnection::open(host, port, None).await?;
    let started = Instant::now();
    publisher.send(&topic, n, size, false).await?;
    Ok(started.elapsed())
}

/// MQTT end to end: `consumers` members of one shared subscription (q1:
/// QoS 1, acking each message; q0: QoS 0) while `n` are published.
pub async fn mqtt_end_to_end(
    host: &str,
    port: u16,
    n: usize,
    size: usize,
    consumers: usize,
    q0: bool,
) -> Result<(Duration, usize), BoxError> {
    use rumqttc::v5::mqttbytes::QoS;
    let topic = unique("raw/bench/");
    let qos = if q0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
    let mut subscribers = Vec::new();
    for _ in 0..consumers {
        let filter = format!("$share/bench/{topic}");
        subscribers.push(MqttConnection::open(host, port, Some((filter, qos))).await?);
    }
    let publisher = MqttConnection::open(host, port, None).await?;
    let started = Instant::now();
    publisher.send(&topic, n, size, q0).await?;
    // Each connection counts its own; 1 ms steps are far below a run.
    let received = || -> usize { subscribers.iter().map(|s| s.received.load(Ordering::Acquire)).sum() };
    let (mut seen, mut last) = (received(), Instant::now());
    while seen < n && !(q0 && last.elapsed() >= IDLE) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if received() > seen {
            (seen, last) = (received(), Instant::now());
        }
    }
    Ok((last - started, seen))
}

/// The Python `pulsar-client` (the official C++ client underneath) running
/// pubsub-bench/scripts/pulsar_client.py: `mode` "publish" or "e2e", the
/// same workload as [`pulsar_publish`] / [`pulsar_end_to_end`] (q1) on the
/// same broker. The interpreter is `PULSAR_PYTHON`, by default the one in
/// target/pyenv. Returns the script's time and how many messages arrived.
pub async fn pulsar_python(
    mode: &'static str,
    url: &str,
    n: usize,
    size: usize,
    consumers: usize,
) -> Result<(Duration, usize), BoxError> {
    let python = std::env::var("PULSAR_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pyenv/bin/python").to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pulsar_client.py");
    let topic = format!("persistent://bench/raw/{}", unique("py"));
    let args = [
        mode.to_string(),
        url.to_string(),
        topic,
        n.to_string(),
        size.to_string(),
        consumers.to_string(),
    ];
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new(&python).arg(script).args(args).output())
            .await??;
    if !output.status.success() {
        return Err(format!(
            "{script}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )
        .into());
    }
    // One line: {"seconds": 1.23, "received": 20000}
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    match (v["seconds"].as_f64(), v["received"].as_u64()) {
        (Some(s), Some(r)) if s > 0.0 && r as usize >= n => Ok((Duration::from_secs_f64(s), r as usize)),
        _ => Err(format!("{script}: unexpected output {v}").into()),
    }
}
