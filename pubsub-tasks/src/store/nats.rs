//! Results in a NATS JetStream key-value bucket (feature `nats`): one key
//! per task, history 1, the bucket's `max_age` as the results' expiry;
//! waiting watches the key; the chord join is a compare-and-set loop on
//! the key's revision (a worker joins the members it finished together in
//! one write, so its concurrent members do not contend with each other),
//! and a chord's member ids are one more key.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::notices::{self, Notices};
use super::{chord_members_gone, safe_name as key, ChordJoin, ResultStore, DEFAULT_RESULT_TTL};
use crate::state::{now_ms, TaskRecord, WorkerStatus, WorkerTable};
use async_nats::jetstream::kv::{self, Operation, Store};
use async_trait::async_trait;
use futures::StreamExt;
use pubsub_core::{Error, Result};

const NAME: &str = "nats";

/// The key of the workers' heartbeats (no dot: no record's key has that form).
const WORKERS_KEY: &str = "workers";

/// A [`ResultStore`] in a JetStream key-value bucket (default
/// `pubsub-tasks`), created if missing with `max_age` = the results' TTL
/// and the replicas of the SDK's streams
/// ([`pubsub_nats::default_stream_replicas`]: 3 on a cluster).
///
/// ```no_run
/// # async fn demo() -> pubsub_core::Result<()> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
/// let store = pubsub_tasks::NatsResultStore::open(client, "pubsub-tasks", std::time::Duration::from_secs(3600)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsResultStore {
    kv: Store,
    /// Every wait of this store and its clones shares one watch of `t.>`.
    notices: Arc<Notices<Store>>,
    /// The largest record the server takes (its `max_payload`, less room
    /// for the key-value subject and headers).
    max_record: usize,
}

impl std::fmt::Debug for NatsResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsResultStore")
            .field("bucket", &self.kv.name)
            .finish()
    }
}

/// Room left in a message for the key-value subject and headers.
const KV_OVERHEAD: usize = 1024;

fn failed(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::connection(NAME, format!("result store: {what}"), e)
}

impl NatsResultStore {
    /// Opens (creating if needed) the bucket `bucket` on `client`'s
    /// JetStream; results expire after `ttl` (the bucket's `max_age`).
    pub async fn open(client: async_nats::Client, bucket: &str, ttl: Duration) -> Result<Self> {
        use async_nats::jetstream::stream;
        // Replicated as the SDK's streams are: 3 on a cluster of 3 or more.
        let replicas = pubsub_nats::default_stream_replicas(&client.server_info());
        let max_record = (client.server_info().max_payload).saturating_sub(KV_OVERHEAD);
        let js = async_nats::jetstream::new(client);
        // The bucket's stream is made here, as async-nats' create_key_value
        // would make it, because that one first asks for the account's
        // info, whose answer async-nats 0.51 cannot read from nats-server
        // 2.9 (Debian 12's): "data did not match any variant".
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: ttl,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| failed("create the key-value bucket", e))?;
        let kv = js
            .get_key_value(bucket)
            .await
            .map_err(|e| failed("open the key-value bucket", e))?;
        Ok(NatsResultStore {
            notices: Notices::new(kv.clone()),
            kv,
            max_record,
        })
    }

    /// [`open`](Self::open) with the default bucket `pubsub-tasks` and a day's TTL.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| failed(&format!("connect to {}", pubsub_core::redact_url(url)), e))?;
        Self::open(client, "pubsub-tasks", DEFAULT_RESULT_TTL).await
    }

    /// Changes the heartbeat table by compare-and-set on its revision.
    async fn update_workers(&self, change: impl Fn(&mut WorkerTable)) -> Result<()> {
        loop {
            let (mut table, revision) = self.read::<WorkerTable>(WORKERS_KEY).await?.unwrap_or_default();
            change(&mut table);
            let value = serde_json::to_vec(&table).map_err(|e| Error::codec("worker heartbeats", e))?;
            let written = if revision == 0 {
                self.kv
                    .create(WORKERS_KEY, value.into())
                    .await
                    .map(drop)
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists)
            } else {
                self.kv
                    .update(WORKERS_KEY, value.into(), revision)
                    .await
                    .map(drop)
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision)
            };
            match written {
                Ok(()) => return Ok(()),
                Err(true) => continue,
                Err(false) => return Err(failed("worker heartbeat", std::io::Error::other("the write failed"))),
            }
        }
    }

    /// `record` as JSON, or `PayloadTooLarge` if the server would refuse it.
    fn encode(&self, record: &impl serde::Serialize) -> Result<Vec<u8>> {
        let value = serde_json::to_vec(record).map_err(|e| Error::codec("task record", e))?;
        if value.len() > self.max_record {
            return Err(Error::PayloadTooLarge {
                size: value.len(),
                max: self.max_record,
            });
        }
        Ok(value)
    }

    async fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>> {
        match self.kv.entry(key).await.map_err(|e| failed("get", e))? {
            Some(entry) if entry.operation == Operation::Put => {
                let value = serde_json::from_slice(&entry.value)
                    .map_err(|e| Error::codec("a task record in the key-value bucket is not JSON", e))?;
                Ok(Some((value, entry.revision)))
            }
            _ => Ok(None),
        }
    }
}

/// Watches every task record of the bucket (one ordered consumer, not one
/// per wait: a consumer made per wait made each wait slower as the run
/// grew), watching again when the watch ends, until the store is gone.
async fn listen(notices: Weak<Notices<Store>>) {
    let subscribe = |kv: Store| async move {
        // The watch ends at its first error; `listen` watches again.
        let watch = kv.watch("t.>").await?;
        Ok::<_, kv::WatchError>(
            watch
                .take_while(|entry| std::future::ready(entry.is_ok()))
                .filter_map(|entry| std::future::ready(entry.ok())),
        )
    };
    notices::listen(notices, subscribe, |n, entry: kv::Entry| {
        if entry.operation == Operation::Put && n.waited(&entry.key) {
            // Only a final record ends a wait, and it comes with the
            // entry: the waiters need not read it again.
            match serde_json::from_slice::<TaskRecord>(&entry.value) {
                Ok(record) if record.state.is_ready() => n.notify(&entry.key, Some(record)),
                Ok(_) => {}
                Err(_) => n.notify(&entry.key, None), // the read will say what is wrong
            }
        }
    })
    .await
}

#[async_trait]
impl ResultStore for NatsResultStore {
    fn check(&self, record: &TaskRecord) -> Result<()> {
        self.encode(record).map(drop)
    }

    async fn put(&self, record: &TaskRecord) -> Result<()> {
        let value = self.encode(record)?;
        self.kv
            .put(key("t", &record.id), value.into())
            .await
            .map_err(|e| failed("put", e))?;
        Ok(())
    }

    async fn put_if_absent(&self, record: &TaskRecord) -> Result<bool> {
        let value = self.encode(record)?;
        match self.kv.create(key("t", &record.id), value.into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(failed("create", e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<TaskRecord>> {
        Ok(self.read(&key("t", id)).await?.map(|(r, _)| r))
    }

    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Option<TaskRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.notices.start(listen);
        self.notices.wait(NAME, key("t", id), deadline, || self.get(id)).await
    }

    async fn forget(&self, id: &str) -> Result<()> {
        self.kv.delete(key("t", id)).await.map_err(|e| failed("delete", e))
    }

    async fn revoke(&self, id: &str) -> Result<()> {
        self.kv
            .put(key("revoked", id), "1".into())
            .await
            .map_err(|e| failed("put", e))?;
        Ok(())
    }

    async fn is_revoked(&self, id: &str) -> Result<bool> {
        Ok(self.read::<u8>(&key("revoked", id)).await?.is_some())
    }

    async fn chord_start(&self, chord_id: &str, members: &[String]) -> Result<()> {
        let value = self.encode(&members)?;
        self.kv
            .put(key("chordm", chord_id), value.into())
            .await
            .map_err(|e| failed("put", e))?;
        Ok(())
    }

    async fn chord_join(
        &self,
        chord_id: &str,
        indices: &[usize],
        size: usize,
        lease: Duration,
    ) -> Result<Option<Vec<String>>> {
        let k = key("chord", chord_id);
        // Compare and set on the key's revision until this join lands.
        loop {
            let (mut join, revision) = self.read::<ChordJoin>(&k).await?.unwrap_or_default();
            let claim = join.join(indices, size, lease, now_ms());
            let value = serde_json::to_vec(&join).map_err(|e| Error::codec("chord join", e))?;
            let written = if revision == 0 {
                self.kv
                    .create(&k, value.into())
                    .await
                    .map(drop)
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists)
            } else {
                self.kv
                    .update(&k, value.into(), revision)
                    .await
                    .map(drop)
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision)
            };
            match written {
                Ok(()) if !claim => return Ok(None),
                Ok(()) => {
                    return match self.read::<Vec<String>>(&key("chordm", chord_id)).await? {
                        Some((members, _)) => Ok(Some(members)),
                        None => Err(chord_members_gone(NAME, chord_id)),
                    }
                }
                Err(true) => continue, // another join came first: read again
                Err(false) => return Err(failed("chord join", std::io::Error::other("the write failed"))),
            }
        }
    }

    async fn chord_sent(&self, chord_id: &str) -> Result<()> {
        let k = key("chord", chord_id);
        loop {
            let Some((mut join, revision)) = self.read::<ChordJoin>(&k).await? else {
                return Ok(());
            };
            join.sent();
            let value = serde_json::to_vec(&join).map_err(|e| Error::codec("chord join", e))?;
            match self.kv.update(&k, value.into(), revision).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(failed("chord sent", e)),
            }
        }
    }

    async fn put_worker(&self, status: &WorkerStatus) -> Result<()> {
        self.update_workers(|t| t.put(status)).await
    }

    async fn remove_worker(&self, name: &str) -> Result<()> {
        self.update_workers(|t| t.remove(name)).await
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let table: WorkerTable = self.read(WORKERS_KEY).await?.map(|(t, _)| t).unwrap_or_default();
        let mut all = table.workers;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}
