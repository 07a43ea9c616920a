//! The shared publishing connection, and how a send learns that the broker
//! has the message.
//!
//! rumqttc's `publish` returns once the request is queued; the broker's
//! PUBACK (q1) or PUBCOMP (q2) arrives later as an event naming the packet
//! id. Sends are queued in order, and the event loop reports
//! `Outgoing::Publish(pkid)` in that order, so each send's waiter is
//! matched to its packet id there (a retransmission after a reconnect
//! reuses an id that is still in flight and is recognised as such). If the
//! broker comes back without our session, everything outstanding fails
//! with a retriable `Error::Connection`: never a confirmation for a message
//! that may be lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pubsub_core::{Error, Result};
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubCompReason, PubRecReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use rumqttc::Outgoing;
use tokio::sync::oneshot;

use crate::config::MqttConfig;
use crate::connection::{connect, Session, NAME};

type Waiter = oneshot::Sender<Result<()>>;

#[derive(Default)]
struct Pending {
    queued: VecDeque<(QoS, Waiter)>,
    in_flight: HashMap<u16, Waiter>,
}

impl Pending {
    fn fail_all(&mut self, why: &str) {
        let waiters = self
            .queued
            .drain(..)
            .map(|(_, w)| w)
            .chain(self.in_flight.drain().map(|(_, w)| w));
        for w in waiters {
            let _ = w.send(Err(Error::Connection {
                backend: NAME,
                message: why.to_string(),
                source: None,
            }));
        }
    }
}

pub(crate) struct Publisher {
    client: AsyncClient,
    pending: Arc<std::sync::Mutex<Pending>>,
    order: tokio::sync::Mutex<()>,
    timeout: Duration,
    task: tokio::task::JoinHandle<()>,
    /// The broker's maximum packet size, if it announced one.
    pub max_packet: Option<usize>,
}

impl Publisher {
    pub(crate) async fn connect(config: &MqttConfig) -> Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let session = Session {
            client_id: format!("{}-pub-{}", config.client_id_prefix, &id[..12]),
            persistent: true,
            manual_acks: false,
            receive_maximum: None,
        };
        let (client, eventloop, ack) = connect(config, &session).await?;
        let max_packet = ack
            .properties
            .as_ref()
            .and_then(|p| p.max_packet_size)
            .map(|m| m as usize);
        let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
        let task = tokio::spawn(drive(eventloop, pending.clone()));
        Ok(Publisher {
            client,
            pending,
            order: Default::default(),
            timeout: config.timeout,
            task,
            max_packet,
        })
    }

    /// Publishes and waits until the broker has the message as `qos` requires.
    pub(crate) async fn publish(
        &self,
        topic: String,
        qos: QoS,
        payload: Bytes,
        props: PublishProperties,
    ) -> Result<()> {
        let sent = self.hand_over(topic, qos, payload, props).await?;
        self.confirmed(sent).await
    }

    /// Queues the message in rumqttc; the receiver resolves when the broker
    /// has it as `qos` requires (q0: once written to the connection).
    pub(crate) async fn hand_over(
        &self,
        topic: String,
        qos: QoS,
        payload: Bytes,
        props: PublishProperties,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let (tx, rx) = oneshot::channel();
        // Queue order must equal request order: that is how ids are matched.
        let _turn = self.order.lock().await;
        self.pending.lock().expect("pending lock").queued.push_back((qos, tx));
        if let Err(e) = self
            .client
            .publish_with_properties(topic, qos, false, payload, props)
            .await
        {
            self.pending.lock().expect("pending lock").queued.pop_back();
            return Err(Error::connection(NAME, format!("publish: {e}"), e));
        }
        Ok(rx)
    }

    /// Waits (bounded by the timeout) for what [`hand_over`](Self::hand_over) returned.
    pub(crate) async fn confirmed(&self, sent: oneshot::Receiver<Result<()>>) -> Result<()> {
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Connection {
                backend: NAME,
                message: "publisher stopped".into(),
                source: None,
            }),
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    pub(crate) async fn close(&self) {
        let _ = self.client.disconnect().await;
        self.task.abort();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(mut eventloop: EventLoop, pending: Arc<std::sync::Mutex<Pending>>) {
    // connect() already consumed the first CONNACK.
    let mut backoff = Duration::from_millis(100);
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut p = pending.lock().expect("pending lock");
                if p.in_flight.contains_key(&pkid) {
                    continue; // a retransmission after reconnecting
                }
                if let Some((qos, waiter)) = p.queued.pop_front() {
                    if qos == QoS::AtMostOnce {
                        let _ = waiter.send(Ok(()));
                    } else {
                        p.in_flight.insert(pkid, waiter);
                    }
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let ok = matches!(ack.reason, PubAckReason::Success | PubAckReason::NoMatchingSubscribers);
                settle(&pending, ack.pkid, ok, format!("{:?}", ack.reason));
            }
            Ok(Event::Incoming(Packet::PubRec(rec))) => {
                if !matches!(rec.reason, PubRecReason::Success | PubRecReason::NoMatchingSubscribers) {
                    settle(&pending, rec.pkid, false, format!("{:?}", rec.reason));
                }
            }
            Ok(Event::Incoming(Packet::PubComp(comp))) => {
                settle(
                    &pending,
                    comp.pkid,
                    comp.reason == PubCompReason::Success,
                    format!("{:?}", comp.reason),
                );
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(100);
                if !ack.session_present {
                    pending
                        .lock()
                        .expect("pending lock")
                        .fail_all("the broker came back without this session; sends in flight are not confirmed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "mqtt publisher connection lost");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn settle(pending: &std::sync::Mutex<Pending>, pkid: u16, ok: bool, reason: String) {
    if let Some(w) = pending.lock().expect("pending lock").in_flight.remove(&pkid) {
        let _ = w.send(if ok {
            Ok(())
        } else {
            Err(Error::Broker {
                backend: NAME,
                message: format!("the broker refused the message: {reason}"),
                source: None,
            })
        });
    }
}
