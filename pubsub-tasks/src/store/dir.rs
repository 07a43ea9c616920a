//! Results in a directory: for the embedded backend with a data dir, so
//! results, revocations and chord joins survive a restart of the process.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use pubsub_core::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{chord_members_gone, safe_name, ChordJoin, MemoryResultStore, ResultStore, DEFAULT_RESULT_TTL};
use crate::state::{now_ms, TaskRecord, WorkerStatus, WorkerTable};

/// A [`ResultStore`] in a directory of JSON files (one per record, chord
/// and revocation; each written to a temporary file, synced and renamed),
/// read back by [`open`](Self::open), with a [`MemoryResultStore`] in front
/// for reads and wake-ups. One process uses a directory at a time, as one
/// process uses an embedded data dir. Records older than `ttl` are dropped
/// when the store is opened.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use pubsub_tasks::{DirResultStore, ResultStore, TaskRecord, TaskState};
/// let dir = tempfile::tempdir().unwrap();
/// let store = DirResultStore::open(dir.path())?;
/// store.put(&TaskRecord::new("t1", "add", TaskState::Success)).await?;
/// drop(store);
/// let again = DirResultStore::open(dir.path())?;
/// assert_eq!(again.get("t1").await?.unwrap().state, TaskState::Success);
/// # Ok::<(), pubsub_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct DirResultStore {
    dir: PathBuf,
    memory: MemoryResultStore,
    /// Serialises record writes (two writes of one id share a `.tmp`
    /// file; a put-if-absent must not interleave with a put).
    records: Mutex<()>,
    /// Serialises chord joins (read, update, write).
    chords: Mutex<()>,
    /// Serialises heartbeat writes (read, update, write of `workers`).
    workers: Mutex<()>,
}

/// The file of the workers' heartbeats (no dot: no record's name has that form).
const WORKERS_FILE: &str = "workers";

/// A `.tmp` file younger than this may be another process's write under
/// way, and is left alone when the store is opened.
const TMP_GRACE: Duration = Duration::from_secs(60);

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::broker("embedded", format!("result store: {what} {}", path.display()), e)
}

impl DirResultStore {
    /// Opens (creating) the store in `dir`; results live for a day.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with_ttl(dir, DEFAULT_RESULT_TTL)
    }

    /// Opens (creating) the store in `dir`; results live for `ttl`.
    pub fn open_with_ttl(dir: impl Into<PathBuf>, ttl: Duration) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let memory = MemoryResultStore::with_ttl(ttl);
        let entries = std::fs::read_dir(&dir).map_err(|e| io("read", &dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                if age > TMP_GRACE {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if age > ttl && name != WORKERS_FILE {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if name.starts_with("t.") {
                let record: TaskRecord = read_json(&path)?;
                memory.insert(record);
            } else if name.starts_with("revoked.") {
                let id: String = read_json(&path)?;
                memory.mark_revoked(&id);
            }
        }
        Ok(DirResultStore {
            dir,
            memory,
            records: Mutex::new(()),
            chords: Mutex::new(()),
            workers: Mutex::new(()),
        })
    }

    /// The heartbeats as the file holds them now (another process may write it).
    fn read_workers(&self) -> Result<WorkerTable> {
        let path = self.dir.join(WORKERS_FILE);
        if !path.exists() {
            return Ok(WorkerTable::default());
        }
        read_json(&path)
    }

    fn update_workers(&self, change: impl FnOnce(&mut WorkerTable)) -> Result<()> {
        let _one_at_a_time = self.workers.lock();
        let mut table = self.read_workers()?;
        change(&mut table);
        write_json(&self.dir.join(WORKERS_FILE), &table)
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        self.dir.join(file_name(kind, id))
    }
}

/// The longest name [`safe_name`] may give before the file is named by a
/// digest instead: file systems allow 255 bytes, and `.tmp` is appended
/// while writing.
const MAX_PLAIN_NAME: usize = 200;

/// `id`'s file name: [`safe_name`], or `{kind}.h.{SHA-256 of the id}` when
/// that would be too long for a file system (a form `safe_name` never
/// gives). The files keep the id inside, which reads check.
fn file_name(kind: &str, id: &str) -> String {
    let name = safe_name(kind, id);
    if name.len() <= MAX_PLAIN_NAME {
        return name;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}.h.{hex}")
}

/// A chord's join state from `path`, checked to be `chord_id`'s.
fn read_chord(path: &Path, chord_id: &str) -> Result<ChordJoin> {
    let join: ChordJoin = read_json(path)?;
    match &join.id {
        Some(id) if id != chord_id => Err(collision(path)),
        _ => Ok(join),
    }
}

/// Two ids whose names (digests) are the same file.
fn collision(path: &Path) -> Error {
    Error::broker(
        "embedded",
        format!("result store: {} holds another chord's state", path.display()),
        std::io::Error::other("file name collision"),
    )
}

/// A chord's member ids, in order, with the chord's id to check what was read.
#[derive(Serialize, Deserialize)]
struct ChordMembers {
    id: String,
    members: Vec<String>,
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::codec(format!("result store file {}", path.display()), e))
}

/// Writes `value` to `path` durably: a temporary file, synced, renamed.
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::codec("result store record", e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp"); // appended: the names hold dots, so not with_extension
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| io("write", path, e))
}

#[async_trait]
impl ResultStore for DirResultStore {
    async fn put(&self, record: &TaskRecord) -> Result<()> {
        let _one_at_a_time = self.records.lock();
        write_json(&self.path("t", &record.id), record)?;
        self.memory.insert(record.clone());
        drop(_one_at_a_time);
        self.memory.notify();
        Ok(())
    }

    async fn put_if_absent(&self, record: &TaskRecord) -> Result<bool> {
        let _one_at_a_time = self.records.lock();
        if self.memory.contains(&record.id) {
            return Ok(false);
        }
        write_json(&self.path("t", &record.id), record)?;
        self.memory.insert(record.clone());
        drop(_one_at_a_time);
        self.memory.notify();
        Ok(true)
    }

    async fn get(&self, id: &str) -> Result<Option<TaskRecord>> {
        self.memory.get(id).await
    }

    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Option<TaskRecord>> {
        self.memory.wait_ready(id, timeout).await
    }

    async fn forget(&self, id: &str) -> Result<()> {
        let _one_at_a_time = self.records.lock();
        let path = self.path("t", id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("delete", &path, e)),
        }
        self.memory.remove(id);
        Ok(())
    }

    async fn revoke(&self, id: &str) -> Result<()> {
        write_json(&self.path("revoked", id), &id)?;
        self.memory.revoke(id).await
    }

    async fn is_revoked(&self, id: &str) -> Result<bool> {
        self.memory.is_revoked(id).await
    }

    async fn chord_start(&self, chord_id: &str, members: &[String]) -> Result<()> {
        let list = ChordMembers {
            id: chord_id.to_string(),
            members: members.to_vec(),
        };
        write_json(&self.path("chordm", chord_id), &list)
    }

    async fn chord_join(
        &self,
        chord_id: &str,
        indices: &[usize],
        size: usize,
        lease: Duration,
    ) -> Result<Option<Vec<String>>> {
        let path = self.path("chord", chord_id);
        let _one_at_a_time = self.chords.lock();
        let mut join: ChordJoin = if path.exists() {
            read_chord(&path, chord_id)?
        } else {
            ChordJoin {
                id: Some(chord_id.to_string()),
                ..ChordJoin::default()
            }
        };
        let claim = join.join(indices, size, lease, now_ms());
        write_json(&path, &join)?;
        if !claim {
            return Ok(None);
        }
        let list_path = self.path("chordm", chord_id);
        if !list_path.exists() {
            return Err(chord_members_gone("embedded", chord_id));
        }
        let list: ChordMembers = read_json(&list_path)?;
        if list.id != chord_id {
            return Err(collision(&list_path));
        }
        Ok(Some(list.members))
    }

    async fn chord_sent(&self, chord_id: &str) -> Result<()> {
        let path = self.path("chord", chord_id);
        let _one_at_a_time = self.chords.lock();
        if path.exists() {
            let mut join = read_chord(&path, chord_id)?;
            join.sent();
            write_json(&path, &join)?;
        }
        Ok(())
    }

    async fn put_worker(&self, status: &WorkerStatus) -> Result<()> {
        self.update_workers(|t| t.put(status))
    }

    async fn remove_worker(&self, name: &str) -> Result<()> {
        self.update_workers(|t| t.remove(name))
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let mut all = self.read_workers()?.workers;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}
