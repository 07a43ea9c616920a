//! Any bytes as an embedded-log segment: `decode_frame` reports a torn or
//! corrupted frame as an error, never panics, never reads past its input,
//! and a frame it accepts is exactly what encoding its record gives back
//! (so nothing corrupted is returned as a record).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsub_embedded::record::{decode_frame, encode_frame};

fuzz_target!(|input: &[u8]| {
    let mut rest = input;
    // Walk the input as a segment, frame by frame, as recovery does.
    while !rest.is_empty() {
        match decode_frame(rest) {
            Ok((record, len)) => {
                assert!(len <= rest.len());
                let mut again = Vec::new();
                encode_frame(&record, &mut again);
                let (decoded, n) = decode_frame(&again).expect("an encoded frame decodes");
                assert_eq!((decoded, n), (record, again.len()));
                rest = &rest[len..];
            }
            Err(_) => break,
        }
    }
});
