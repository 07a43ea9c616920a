//! The MQTT [`PubSubBackend`] and its producer.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pubsub_core::UnackedLimit;
use pubsub_core::{
    ensure_open, validate_subscription_name, Capabilities, Consumer, ConsumerOptions, MessageId, OutgoingMessage,
    Producer, ProducerOptions, PubSubBackend, Qos, Result, Topic,
};

use crate::config::MqttConfig;
use crate::connection::NAME;
use crate::consumer::MqttConsumer;
use crate::mapping::{mqtt_topic, qos, to_properties};
use crate::publisher::Publisher;

/// An MQTT v5 broker as a pub/sub backend. See the crate docs for the mapping.
#[derive(Clone)]
pub struct MqttBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: MqttConfig,
    caps: Capabilities,
    closed: AtomicBool,
    /// Every producer and consumer made: closed with the backend.
    handles: pubsub_core::handles::Handles,
    pub(crate) publisher: Publisher,
    /// Client-id slots in use per subscription and topic (a consumer group
    /// key) in this process.
    slots: std::sync::Mutex<HashMap<String, BTreeSet<u32>>>,
}

impl fmt::Debug for MqttBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttBackend")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl MqttBackend {
    /// Connects the publishing connection (bounded by `config.timeout`), so
    /// an unreachable broker or refused credentials fail here.
    pub async fn connect(config: MqttConfig) -> Result<Self> {
        let publisher = Publisher::connect(&config).await?;
        let max_payload = publisher
            .max_packet
            .map_or(config.max_payload, |m| config.max_payload.min(m.saturating_sub(4096)));
        let caps = Capabilities {
            persistence: true,
            shared: true,
            nack: true,
            nack_delay: true,
            redelivery_count: true,
            redelivery_count_across_restarts: true,
            individual_acks: true,
            key_ordering: true,
            topic_ordering: true,
            max_payload: Some(max_payload),
            properties: true,
            keys: true,
            // Mosquitto's max_queued_messages: see the README's MQTT section.
            broker_may_drop_backlog: true,
            ..Capabilities::none(NAME)
        };
        Ok(MqttBackend {
            inner: Arc::new(Inner {
                config,
                caps,
                closed: AtomicBool::new(false),
                handles: Default::default(),
                publisher,
                slots: Default::default(),
            }),
        })
    }
}

impl Inner {
    pub(crate) fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "mqtt backend")
    }

    /// The lowest free slot, or `preferred` if it is free.
    pub(crate) fn take_slot(&self, group: &str, preferred: Option<u32>) -> u32 {
        let mut slots = self.slots.lock().expect("slots lock");
        let used = slots.entry(group.to_string()).or_default();
        let slot = preferred
            .filter(|p| !used.contains(p))
            .or_else(|| (0..).find(|s| !used.contains(s)))
            .expect("a free slot");
        used.insert(slot);
        slot
    }

    pub(crate) fn release_slot(&self, group: &str, slot: u32) {
        if let Some(used) = self.slots.lock().expect("slots lock").get_mut(group) {
            used.remove(&slot);
        }
    }
}

#[async_trait]
impl PubSubBackend for MqttBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn admin(&self) -> &dyn pubsub_core::Admin {
        self
    }

    async fn create_producer(&self, topic: &Topic, options: ProducerOptions) -> Result<Box<dyn Producer>> {
        self.inner.ensure_open()?;
        self.inner.caps.check_producer(topic, &options)?;
        let producer = MqttProducer {
            inner: self.inner.clone(),
            topic: topic.clone(),
            closed: AtomicBool::new(false),
        };
        self.inner.handles.producer(producer).await
    }

    async fn create_consumer(
        &self,
        topic: &Topic,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>> {
        self.inner.ensure_open()?;
        validate_subscription_name(subscription)?;
        self.inner.caps.check_consumer(topic, &options)?;
        let max_unacked = options.max_unacked;
        let consumer = MqttConsumer::start(self.inner.clone(), topic.clone(), subscription, options).await?;
        self.inner
            .handles
            .consumer(UnackedLimit::new(consumer, max_unacked))
            .await
    }

    /// Closes every producer and consumer made from it first, as their own
    /// `close` would (acks written, unacked messages given back), then the
    /// publishing connection.
    async fn close(&self) -> Result<()> {
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            let handles = self.inner.handles.close_all().await;
            self.inner.publisher.close().await;
            handles?;
        }
        Ok(())
    }
}

struct MqttProducer {
    inner: Arc<Inner>,
    topic: Topic,
    closed: AtomicBool,
}

impl fmt::Debug for MqttProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttProducer").field("topic", &self.topic).finish()
    }
}

impl MqttProducer {
    fn check(&self, message: &OutgoingMessage) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
        self.inner.ensure_open()?;
        self.inner.caps.check_message(message)?;
        crate::mapping::check_mqtt_strings(message)
    }
}

#[async_trait]
impl Producer for MqttProducer {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    async fn send(&self, message: OutgoingMessage) -> Result<MessageId> {
        self.check(&message)?;
        let props = to_properties(&message);
        // q2 runs only with allow_degraded_qos (checked at creation) and uses MQTT QoS 2.
        let q = qos(self.topic.qos());
        self.inner
            .publisher
            .publish(mqtt_topic(&self.topic), q, message.payload, props)
            .await?;
        Ok(MessageId::from_text(if self.topic.qos() == Qos::AtMostOnce {
            "q0"
        } else {
            "acked"
        }))
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        for m in &messages {
            self.check(m)?;
        }
        // All handed over first, then the confirmations awaited in order:
        // q0 has nothing to wait for from the broker but the writes; for
        // q1/q2 rumqttc keeps at most the broker's receive maximum (its
        // CONNACK; Mosquitto's max_inflight_messages, 20 by default) in
        // flight and sends the next as each PUBACK/PUBCOMP frees a place.
        // One at a time, a batch took a round trip per message.
        let publisher = &self.inner.publisher;
        let q = qos(self.topic.qos());
        let mut sent = Vec::with_capacity(messages.len());
        for m in messages {
            let props = to_properties(&m);
            sent.push(
                publisher
                    .hand_over(mqtt_topic(&self.topic), q, m.payload, props)
                    .await?,
            );
        }
        let id = if self.topic.qos() == Qos::AtMostOnce {
            "q0"
        } else {
            "acked"
        };
        let mut ids = Vec::with_capacity(sent.len());
        for s in sent {
            publisher.confirmed(s).await?;
            ids.push(MessageId::from_text(id));
        }
        Ok(ids)
    }

    async fn flush(&self) -> Result<()> {
        // A send returns once the broker acknowledged it; nothing is buffered.
        ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
        self.inner.ensure_open()
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}
