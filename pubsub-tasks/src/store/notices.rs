//! Waits for final records on one shared subscription per store (Redis
//! Pub/Sub, a NATS key-value watch), instead of one per wait.
//!
//! A background task (started by the first wait, ended when the last
//! clone of the store is dropped) listens, and wakes the waiters of a key
//! through its `watch`. A waiter registers, waits until the subscription
//! is live, and only then reads its record: a write in between is not
//! missed. When the subscription is lost, the task subscribes again and
//! wakes every waiter, which reads its record again. A notice that carries
//! the final record itself (a NATS watch entry) ends the wait without a
//! read.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pubsub_core::{Error, Result};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::TaskRecord;

/// What a notice of a key brings: the final record, or `None` (read it).
type Notice = Option<Arc<TaskRecord>>;

pub(crate) struct Notices<S> {
    /// What the listener subscribes with (a client, a bucket).
    pub(crate) source: S,
    /// Waiters by key: the last notice (the final record when it came
    /// with it, else `None`: read it), and how many waits share it.
    waiters: Mutex<HashMap<String, (watch::Sender<Notice>, usize)>>,
    /// `Some(Ok(()))` while subscribed; the error of the last attempt to
    /// subscribe; `None` before the first attempt and while subscribing again.
    connected: watch::Sender<Option<std::result::Result<(), String>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<S> Drop for Notices<S> {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// One waiter's registration; unregisters when dropped.
struct Registration<'a, S> {
    notices: &'a Notices<S>,
    key: String,
    rx: watch::Receiver<Notice>,
}

impl<S> Drop for Registration<'_, S> {
    fn drop(&mut self) {
        let mut waiters = self.notices.waiters.lock();
        if let Some(entry) = waiters.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiters.remove(&self.key);
            }
        }
    }
}

impl<S: Send + Sync + 'static> Notices<S> {
    pub(crate) fn new(source: S) -> Arc<Self> {
        Arc::new(Notices {
            source,
            waiters: Mutex::new(HashMap::new()),
            connected: watch::channel(None).0,
            task: Mutex::new(None),
        })
    }

    /// Starts `listen` (given a weak handle: it returns once the store is
    /// gone) unless it runs already.
    pub(crate) fn start<F, Fut>(self: &Arc<Self>, listen: F)
    where
        F: FnOnce(Weak<Self>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut task = self.task.lock();
        if task.is_none() {
            *task = Some(tokio::spawn(listen(Arc::downgrade(self))));
        }
    }

    /// For the listener: subscribed (every waiter reads again, for what was
    /// written while no subscription listened), or not.
    pub(crate) fn set_connected(&self, state: Option<std::result::Result<(), String>>) {
        let live = matches!(state, Some(Ok(())));
        self.connected.send_replace(state);
        if live {
            for (tx, _) in self.waiters.lock().values() {
                tx.send_replace(None);
            }
        }
    }

    /// For the listener: `key`'s record may be final now; `record` is it,
    /// when the notice carried it (final), so the waiters need not read it.
    pub(crate) fn notify(&self, key: &str, record: Option<TaskRecord>) {
        if let Some((tx, _)) = self.waiters.lock().get(key) {
            tx.send_replace(record.map(Arc::new));
        }
    }

    /// Whether anyone waits for `key`.
    pub(crate) fn waited(&self, key: &str) -> bool {
        self.waiters.lock().contains_key(key)
    }

    fn register(&self, key: String) -> Registration<'_, S> {
        let mut waiters = self.waiters.lock();
        let entry = waiters
            .entry(key.clone())
            .or_insert_with(|| (watch::channel(None).0, 0));
        entry.1 += 1;
        let rx = entry.0.subscribe();
        drop(waiters);
        Registration { notices: self, key, rx }
    }

    /// Waits until `deadline` for `read` to give a final record, reading
    /// once subscribed and again on each notice of `key`.
    pub(crate) async fn wait<F, Fut>(
        &self,
        backend: &'static str,
        key: String,
        deadline: Instant,
        read: F,
    ) -> Result<Option<TaskRecord>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<TaskRecord>>>,
    {
        let mut reg = self.register(key);
        let mut connected = self.connected.subscribe();
        loop {
            match &*connected.borrow_and_update() {
                Some(Ok(())) => break,
                Some(Err(e)) => {
                    return Err(Error::Connection {
                        backend,
                        message: format!("result store: subscribing to results: {e}"),
                        source: None,
                    })
                }
                None => {}
            }
            match tokio::time::timeout_at(deadline, connected.changed()).await {
                Err(_) => return Ok(None),
                Ok(Err(_)) => unreachable!("self holds the sender"),
                Ok(Ok(())) => {}
            }
        }
        loop {
            if let Some(r) = read().await?.filter(|r| r.state.is_ready()) {
                return Ok(Some(r));
            }
            // A notice of this key, or a new subscription: read again,
            // unless the notice brought the final record.
            match tokio::time::timeout_at(deadline, reg.rx.changed()).await {
                Err(_) => return Ok(None),
                Ok(Err(_)) => unreachable!("the registration keeps the sender"),
                Ok(Ok(())) => {}
            }
            if let Some(r) = reg.rx.borrow_and_update().as_deref().filter(|r| r.state.is_ready()) {
                return Ok(Some(r.clone()));
            }
        }
    }
}

/// The listener of a store's waits: subscribes with `subscribe` (given a
/// clone of the source), hands each notice to `on_notice`, and subscribes
/// again (backing off after a failed attempt, up to 2 s) when the stream
/// ends, until the store is gone.
pub(crate) async fn listen<S, F, Fut, St, E>(
    notices: Weak<Notices<S>>,
    subscribe: F,
    on_notice: impl Fn(&Notices<S>, St::Item),
) where
    S: Clone + Send + Sync + 'static,
    F: Fn(S) -> Fut,
    Fut: Future<Output = std::result::Result<St, E>>,
    St: futures::Stream,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    let mut backoff = std::time::Duration::from_millis(50);
    loop {
        let Some(source) = notices.upgrade().map(|n| n.source.clone()) else {
            return;
        };
        let subscribed = subscribe(source).await;
        let Some(n) = notices.upgrade() else { return };
        let stream = match subscribed {
            Ok(stream) => stream,
            Err(e) => {
                n.set_connected(Some(Err(e.to_string())));
                drop(n);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                continue;
            }
        };
        backoff = std::time::Duration::from_millis(50);
        n.set_connected(Some(Ok(())));
        drop(n);
        let mut stream = std::pin::pin!(stream);
        while let Some(notice) = stream.next().await {
            let Some(n) = notices.upgrade() else { return };
            on_notice(&n, notice);
        }
        // The subscription ended: waiters wait until it is back.
        match notices.upgrade() {
            Some(n) => n.set_connected(None),
            None => return,
        }
    }
}
