//! Acks of one consumer group, coalesced: acks given while an `XACK` is
//! under way wait and go out together as the next `XACK key group id…`.
//! An application acking a batch of 100 messages at once sends two
//! commands instead of 100, which keeps the server's work per message
//! close to a hand-written batch ack. `Consumer::ack_all` hands its ids
//! over as one request, so they go out in one `XACK` (up to 1,000 ids).

use std::sync::Arc;

use crate::conn::Conn;
use pubsub_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{map_err, NAME};

/// Most ids in one `XACK`.
const MAX_IDS: usize = 1000;

type Request = (Vec<String>, oneshot::Sender<Result<()>>);

/// Hands acks to a task that sends them in as few `XACK`s as it can. The
/// task ends when the acker is dropped.
#[derive(Debug)]
pub(crate) struct GroupAcker {
    requests: mpsc::UnboundedSender<Request>,
}

impl GroupAcker {
    pub(crate) fn start(conn: Conn, stream: String, group: String) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_acks(conn, Arc::from(stream), Arc::from(group), rx));
        GroupAcker { requests }
    }

    /// Acks entry `id`; returns once the `XACK` carrying it was answered.
    pub(crate) async fn ack(&self, id: &str) -> Result<()> {
        self.ack_many(vec![id.to_string()]).await
    }

    /// Acks entries `ids` together; returns once the `XACK` (or, beyond
    /// 1,000 ids, the `XACK`s) carrying them was answered.
    pub(crate) async fn ack_many(&self, ids: Vec<String>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((ids, reply))
            .map_err(|_| Error::Closed("consumer"))?;
        answer.await.map_err(|_| Error::Closed("consumer"))?
    }
}

async fn send_acks(mut conn: Conn, stream: Arc<str>, group: Arc<str>, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut batch: Vec<Request> = Vec::new();
    while let Some(first) = requests.recv().await {
        let mut ids = first.0.len();
        batch.push(first);
        while ids < MAX_IDS {
            match requests.try_recv() {
                Ok(r) => {
                    ids += r.0.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let all: Vec<&String> = batch.iter().flat_map(|(ids, _)| ids).collect();
        let mut result = Ok(());
        for chunk in all.chunks(MAX_IDS) {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(&*stream).arg(&*group).arg(chunk);
            let r: std::result::Result<i64, _> = cmd.query_async(&mut conn).await;
            if let Err(e) = r {
                result = Err(map_err("ack", e));
                break;
            }
        }
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(same_error(e)),
            });
        }
    }
}

/// `e` again, for each waiter of a failed `XACK` (errors are not `Clone`).
fn same_error(e: &Error) -> Error {
    match e {
        Error::Connection { message, .. } => Error::Connection {
            backend: NAME,
            message: message.clone(),
            source: None,
        },
        Error::Broker { message, .. } => Error::broker_msg(NAME, message),
        other => Error::broker_msg(NAME, other),
    }
}
