//! Timing helpers and result rows.

use std::time::{Duration, Instant};

/// A 100-byte latency payload carrying its send time (ns since `origin`).
pub fn stamped_payload(origin: Instant) -> Vec<u8> {
    let mut payload = (origin.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
    payload.resize(100, b'x');
    payload
}

/// How long ago a [`stamped_payload`] was made.
pub fn since_stamp(origin: Instant, payload: &[u8]) -> Duration {
    let sent: [u8; 8] = payload[..8].try_into().expect("8-byte timestamp");
    origin
        .elapsed()
        .saturating_sub(Duration::from_nanos(u64::from_le_bytes(sent)))
}

/// One measured figure for the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub backend: String,
    pub workload: String,
    pub sdk: Option<f64>,
    pub raw: Option<f64>,
    pub unit: &'static str,
}

impl Row {
    pub fn new(backend: &str, workload: String, unit: &'static str) -> Self {
        Row {
            backend: backend.to_string(),
            workload,
            sdk: None,
            raw: None,
            unit,
        }
    }
}

/// Messages per second for `n` messages in `d`.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The `q`-quantile (0..=1) of sorted samples, in microseconds.
pub fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Current resident set size (VmRSS), in MiB.
pub fn rss_mib() -> Option<f64> {
    read_status_kib("VmRSS:").map(|k| k as f64 / 1024.0)
}

fn read_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Prints the table: one line per row, with the SDK/raw ratio where both exist.
pub fn print_table(rows: &[Row]) {
    println!("| backend | workload | SDK | raw client | SDK/raw | unit |\n|---|---|---|---|---|---|");
    for r in rows {
        let fmt = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "–".into());
        let ratio = match (r.sdk, r.raw) {
            (Some(s), Some(w)) if w > 0.0 => format!("{:.2}", s / w),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.backend,
            r.workload,
            fmt(r.sdk),
            fmt(r.raw),
            ratio,
            r.unit
        );
    }
}
