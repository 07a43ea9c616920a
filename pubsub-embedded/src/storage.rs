//! Files of a persistent topic: segment logs, their indexes, and one state
//! file per subscription.
//!
//! ```text
//! {data_dir}/topics/{qos}.{tenant}.{namespace}.{queue}/
//!     00000000000000000000.log   frames (see `record`), appended
//!     00000000000000000000.idx   (offset:u64le, position:u64le) per record
//!     subs/{subscription}.sub    cursor and acks, replaced atomically
//! ```
//!
//! Recovery reads every segment. A record that fails its CRC or length
//! check in the *last* segment is a torn write of a send that never
//! returned: the file is cut there (and a warning logged). The same in a
//! sealed segment, or a sealed index that disagrees with its log, is
//! corruption: opening fails with an error naming the file and position.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pubsub_core::{Error, Qos, Result, SubscriptionType, Topic};

use crate::log::AckSet;
use crate::record::{decode_frame, encode_frame, DecodeError, Record};

const BACKEND: &str = "embedded";

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::broker(BACKEND, format!("{what}: {e}"), e)
}

/// The directory name of a topic: `{qos}.{tenant}.{namespace}.{queue}`
/// (injective, since segments cannot contain `.`).
pub(crate) fn topic_dir_name(topic: &Topic) -> String {
    format!("{}.{}", topic.qos(), topic.joined("."))
}

pub(crate) fn parse_topic_dir_name(name: &str) -> Option<Topic> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let qos: Qos = parts[0].parse().ok()?;
    Topic::new(qos, parts[1], parts[2], parts[3]).ok()
}

/// What recovery found in a topic directory.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub records: Vec<Record>,
    pub next_offset: u64,
    pub subscriptions: Vec<(String, SubscriptionState)>,
    pub store: TopicStore,
}

/// The persisted part of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscriptionState {
    pub kind: SubscriptionType,
    pub cursor: u64,
    pub acks: AckSet,
}

struct Segment {
    base: u64,
    /// Offset after its last record.
    end: u64,
}

/// The open, appendable files of one topic.
pub(crate) struct TopicStore {
    dir: PathBuf,
    segment_bytes: u64,
    sealed: Vec<Segment>,
    active_base: u64,
    active: Arc<File>,
    active_len: u64,
    index: File,
    scratch: Vec<u8>,
    index_scratch: Vec<u8>,
}

impl std::fmt::Debug for TopicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicStore")
            .field("dir", &self.dir)
            .field("active_base", &self.active_base)
            .finish()
    }
}

fn segment_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| io_err(path.display(), e))
}

/// fsyncs a directory so that a created, renamed or removed entry survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(format!("fsync {}", dir.display()), e))
}

impl TopicStore {
    /// Opens (creating if needed) the directory of `topic` and recovers it.
    pub(crate) fn open(dir: PathBuf, segment_bytes: u64) -> Result<Recovered> {
        let fresh = !dir.exists();
        fs::create_dir_all(dir.join("subs")).map_err(|e| io_err(dir.display(), e))?;
        if fresh {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut bases: Vec<u64> = fs::read_dir(&dir)
            .map_err(|e| io_err(dir.display(), e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let mut records = Vec::new();
        let mut sealed = Vec::new();
        let mut next_offset = bases[0];
        let last = bases.len() - 1;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(&dir, base, "log");
            if base != next_offset {
                return Err(Error::broker_msg(
                    BACKEND,
                    format!(
                        "segment {} starts at offset {base} but {next_offset} was expected",
                        path.display()
                    ),
                ));
            }
            let positions = recover_segment(&path, base, i == last, &mut records)?;
            next_offset = base + positions.len() as u64;
            let idx_path = segment_path(&dir, base, "idx");
            if i == last {
                rewrite_index(&idx_path, base, &positions)?;
            } else {
                check_index(&idx_path, base, &positions)?;
                sealed.push(Segment { base, end: next_offset });
            }
        }
        let active_base = bases[last];
        let active_path = segment_path(&dir, active_base, "log");
        let active = open_append(&active_path)?;
        let active_len = active.metadata().map_err(|e| io_err(active_path.display(), e))?.len();
        let index = open_append(&segment_path(&dir, active_base, "idx"))?;
        let subscriptions = read_subscriptions(&dir.join("subs"))?;
        let store = TopicStore {
            dir,
            segment_bytes,
            sealed,
            active_base,
            active: Arc::new(active),
            active_len,
            index,
            scratch: Vec::new(),
            index_scratch: Vec::new(),
        };
        Ok(Recovered {
            records,
            next_offset,
            subscriptions,
            store,
        })
    }

    /// Writes records (to the OS, not yet fsynced). Seals the active segment
    /// first if it is full.
    pub(crate) fn append(&mut self, records: &[Arc<Record>]) -> Result<()> {
        let Some(first) = records.first() else { return Ok(()) };
        if self.active_len >= self.segment_bytes {
            self.roll(first.offset)?;
        }
        self.scratch.clear();
        self.index_scratch.clear();
        for r in records {
            let position = self.active_len + self.scratch.len() as u64;
            encode_frame(r, &mut self.scratch);
            self.index_scratch.extend_from_slice(&r.offset.to_le_bytes());
            self.index_scratch.extend_from_slice(&position.to_le_bytes());
        }
        (&*self.active)
            .write_all(&self.scratch)
            .map_err(|e| io_err("append to segment", e))?;
        self.active_len += self.scratch.len() as u64;
        self.index
            .write_all(&self.index_scratch)
            .map_err(|e| io_err("append to index", e))?;
        Ok(())
    }

    /// The active segment file, to fsync outside the topic lock.
    pub(crate) fn active_file(&self) -> Arc<File> {
        self.active.clone()
    }

    fn roll(&mut self, next_offset: u64) -> Result<()> {
        self.active.sync_data().map_err(|e| io_err("fsync sealed segment", e))?;
        self.index.sync_data().map_err(|e| io_err("fsync sealed index", e))?;
        self.sealed.push(Segment {
            base: self.active_base,
            end: next_offset,
        });
        self.active_base = next_offset;
        self.active = Arc::new(open_append(&segment_path(&self.dir, next_offset, "log"))?);
        self.index = open_append(&segment_path(&self.dir, next_offset, "idx"))?;
        self.active_len = 0;
        sync_dir(&self.dir)
    }

    /// Deletes sealed segments whose records are all below `offset`.
    pub(crate) fn delete_below(&mut self, offset: u64) -> Result<()> {
        let mut removed = false;
        while self.sealed.first().is_some_and(|s| s.end <= offset) {
            let s = self.sealed.remove(0);
            for ext in ["log", "idx"] {
                let p = segment_path(&self.dir, s.base, ext);
                fs::remove_file(&p).map_err(|e| io_err(p.display(), e))?;
            }
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes a subscription's state atomically (temp file + rename);
    /// with `durable`, fsyncs file and directory before returning.
    pub(crate) fn write_subscription(&self, name: &str, state: &SubscriptionState, durable: bool) -> Result<()> {
        write_subscription_file(&self.dir.join("subs"), name, state, durable)
    }

    /// Removes a subscription's state file.
    pub(crate) fn delete_subscription(&self, name: &str) -> Result<()> {
        let subs = self.dir.join("subs");
        let p = subs.join(format!("{name}.sub"));
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(&subs),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(p.display(), e)),
        }
    }

    /// The directory, for writers that run outside the topic lock.
    pub(crate) fn subs_dir(&self) -> PathBuf {
        self.dir.join("subs")
    }
}

/// Reads one segment, appending its records; returns each record's position.
fn recover_segment(path: &Path, base: u64, is_last: bool, records: &mut Vec<Record>) -> Result<Vec<u64>> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut data).map_err(|e| io_err(path.display(), e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path.display(), e)),
    }
    let mut positions = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let expected = base + positions.len() as u64;
        let failure = match decode_frame(&data[pos..]) {
            Ok((r, n)) if r.offset == expected => {
                positions.push(pos as u64);
                records.push(r);
                pos += n;
                continue;
            }
            Ok((r, _)) => DecodeError::Corrupt(format!("record has offset {} where {expected} was expected", r.offset)),
            Err(e) => e,
        };
        if !is_last {
            return Err(Error::broker_msg(
                BACKEND,
                format!("corrupt sealed segment {} at byte {pos}: {failure}", path.display()),
            ));
        }
        tracing::warn!(
            segment = %path.display(),
            position = pos,
            dropped_bytes = data.len() - pos,
            "cutting a torn write at the end of the log ({failure}); no send of it had returned"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err(path.display(), e))?;
        f.set_len(pos as u64).map_err(|e| io_err(path.display(), e))?;
        f.sync_all().map_err(|e| io_err(path.display(), e))?;
        break;
    }
    Ok(positions)
}

fn index_bytes(base: u64, positions: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(positions.len() * 16);
    for (i, p) in positions.iter().enumerate() {
        out.extend_from_slice(&(base + i as u64).to_le_bytes());
        out.extend_from_slice(&p.to_le_bytes());
    }
    out
}

fn rewrite_index(path: &Path, base: u64, positions: &[u64]) -> Result<()> {
    let bytes = index_bytes(base, positions);
    let mut f = File::create(path).map_err(|e| io_err(path.display(), e))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_data())
        .map_err(|e| io_err(path.display(), e))
}

fn check_index(path: &Path, base: u64, positions: &[u64]) -> Result<()> {
    let found = fs::read(path).map_err(|e| io_err(path.display(), e))?;
    if found != index_bytes(base, positions) {
        return Err(Error::broker_msg(
            BACKEND,
            format!("sealed index {} does not match its segment (corrupt)", path.display()),
        ));
    }
    Ok(())
}

const SUB_MAGIC: &[u8; 4] = b"PSUB";

fn kind_code(kind: SubscriptionType) -> u8 {
    match kind {
        SubscriptionType::Shared => 0,
        SubscriptionType::Exclusive => 1,
        SubscriptionType::Failover => 2,
        SubscriptionType::KeyShared => 3,
    }
}

pub(crate) fn encode_subscription(state: &SubscriptionState) -> Vec<u8> {
    let above: Vec<u64> = state.acks.above().collect();
    let mut out = Vec::with_capacity(30 + above.len() * 8);
    out.extend_from_slice(SUB_MAGIC);
    out.push(1);
    out.push(kind_code(state.kind));
    out.extend_from_slice(&state.cursor.to_le_bytes());
    out.extend_from_slice(&state.acks.floor().to_le_bytes());
    out.extend_from_slice(&(above.len() as u32).to_le_bytes());
    for o in above {
        out.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_subscription(data: &[u8]) -> std::result::Result<SubscriptionState, String> {
    if data.len() < 30 || &data[..4] != SUB_MAGIC || data[4] != 1 {
        return Err("not a subscription state file".into());
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("CRC mismatch".into());
    }
    let kind = match body[5] {
        0 => SubscriptionType::Shared,
        1 => SubscriptionType::Exclusive,
        2 => SubscriptionType::Failover,
        3 => SubscriptionType::KeyShared,
        k => return Err(format!("unknown subscription type {k}")),
    };
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let cursor = u64_at(6);
    let floor = u64_at(14);
    let n = u32::from_le_bytes(body[22..26].try_into().expect("4 bytes")) as usize;
    if body.len() != 26 + n * 8 {
        return Err("length does not match the ack count".into());
    }
    let above = (0..n).map(|i| u64_at(26 + i * 8));
    Ok(SubscriptionState {
        kind,
        cursor,
        acks: AckSet::new(floor, above),
    })
}

pub(crate) fn write_subscription_file(subs: &Path, name: &str, state: &SubscriptionState, durable: bool) -> Result<()> {
    let tmp = subs.join(format!("{name}.sub.tmp"));
    let dst = subs.join(format!("{name}.sub"));
    let bytes = encode_subscription(state);
    let mut f = File::create(&tmp).map_err(|e| io_err(tmp.display(), e))?;
    f.write_all(&bytes).map_err(|e| io_err(tmp.display(), e))?;
    if durable {
        f.sync_data().map_err(|e| io_err(tmp.display(), e))?;
    }
    fs::rename(&tmp, &dst).map_err(|e| io_err(dst.display(), e))?;
    if durable {
        sync_dir(subs)?;
    }
    Ok(())
}

fn read_subscriptions(subs: &Path) -> Result<Vec<(String, SubscriptionState)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(subs).map_err(|e| io_err(subs.display(), e))? {
        let entry = entry.map_err(|e| io_err(subs.display(), e))?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(name) = file_name.strip_suffix(".sub") else {
            continue;
        };
        let data = fs::read(entry.path()).map_err(|e| io_err(entry.path().display(), e))?;
        let state = decode_subscription(&data).map_err(|why| {
            Error::broker_msg(
                BACKEND,
                format!("corrupt subscription file {}: {why}", entry.path().display()),
            )
        })?;
        out.push((name.to_string(), state));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(offset: u64) -> Arc<Record> {
        Arc::new(Record::new(
            offset,
            1,
            Bytes::from(format!("m{offset}")),
            Default::default(),
        ))
    }

    #[test]
    fn append_roll_recover_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let tdir = dir.path().join("q1.a.b.c");
        let mut r = TopicStore::open(tdir.clone(), 64).unwrap();
        assert_eq!(r.next_offset, 0);
        for o in 0..10 {
            r.store.append(&[rec(o)]).unwrap();
        }
        drop(r);
        let mut r = TopicStore::open(tdir.clone(), 64).unwrap();
        assert_eq!(r.next_offset, 10);
        assert_eq!(
            r.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert!(r.store.sealed.len() > 1, "small segments roll");
        r.store.delete_below(5).unwrap();
        drop(r);
        let r = TopicStore::open(tdir, 64).unwrap();
        assert!(r.records.first().unwrap().offset > 0 && r.records.first().unwrap().offset <= 5);
        assert_eq!(r.next_offset, 10);
    }

    #[test]
    fn torn_tail_is_cut_and_corrupt_sealed_segment_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let tdir = dir.path().join("q1.a.b.c");
        let mut r = TopicStore::open(tdir.clone(), 1 << 20).unwrap();
        r.store.append(&[rec(0), rec(1)]).unwrap();
        drop(r);
        let log = segment_path(&tdir, 0, "log");
        let len = fs::metadata(&log).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut r = TopicStore::open(tdir.clone(), 64).unwrap();
        assert_eq!(r.next_offset, 1, "the torn record is gone, the whole one stays");
        for o in 1..6 {
            r.store.append(&[rec(o)]).unwrap();
        }
        drop(r);
        // Flip a byte inside the first (now sealed) segment.
        let mut data = fs::read(&log).unwrap();
        data[12] ^= 0xff;
        fs::write(&log, data).unwrap();
        let err = TopicStore::open(tdir, 64).unwrap_err();
        assert!(err.to_string().contains("corrupt sealed segment"), "{err}");
    }

    #[test]
    fn subscription_state_round_trip_and_corruption() {
        let s = SubscriptionState {
            kind: SubscriptionType::Failover,
            cursor: 9,
            acks: AckSet::new(3, [5, 7]),
        };
        let bytes = encode_subscription(&s);
        assert_eq!(decode_subscription(&bytes).unwrap(), s);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_subscription(&bad).is_err(), "flip at {i}");
        }
        assert_eq!(parse_topic_dir_name("q2.t.ns.q").unwrap().as_str(), "q2/t/ns/q");
        assert!(parse_topic_dir_name("junk").is_none());
    }
}
