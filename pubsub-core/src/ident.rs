//! The one character rule behind topic segments, subscription names and
//! property names: non-empty, bounded, ASCII letters and digits plus a few
//! punctuation characters.

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
