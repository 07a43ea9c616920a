//! The one character rule behind topic segments, subscription names and
//! property names: non-empty, bounded, ASCII letters and digits plus a few
//! punctuation characters; and the one hash names are derived with.

/// Why a name broke the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentError {
    Empty,
    TooLong,
    BadChar(char),
}

/// Checks that `s` is 1 to `max` bytes of `[A-Za-z0-9]` and `extra`.
pub(crate) fn check_ident(s: &str, max: usize, extra: &[char]) -> Result<(), IdentError> {
    if s.is_empty() {
        return Err(IdentError::Empty);
    }
    if s.len() > max {
        return Err(IdentError::TooLong);
    }
    match s.chars().find(|c| !(c.is_ascii_alphanumeric() || extra.contains(c))) {
        Some(bad) => Err(IdentError::BadChar(bad)),
        None => Ok(()),
    }
}

/// "A-Z, a-z, 0-9, '-', '_' and '.'" for the error messages.
pub(crate) fn allowed_list(extra: &[char]) -> String {
    let quoted: Vec<String> = extra.iter().map(|c| format!("{c:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("A-Z, a-z, 0-9, {} and {last}", rest.join(", ")),
        Some((last, _)) => format!("A-Z, a-z, 0-9 and {last}"),
        None => "A-Z, a-z and 0-9".to_string(),
    }
}

/// A 64-bit FNV-1a hash of `bytes`: the same in every process, platform and
/// version, unlike `std`'s randomly seeded hashers. For what adapters derive
/// from names and keys and must agree on across processes: broker-side
/// names (NATS streams, MQTT client ids) and routing a key to a consumer.
///
/// ```
/// assert_eq!(pubsub_core::stable_hash(b""), 0xcbf29ce484222325);
/// assert_eq!(pubsub_core::stable_hash(b"a"), 0xaf63dc4c8601ec8c);
/// ```
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
