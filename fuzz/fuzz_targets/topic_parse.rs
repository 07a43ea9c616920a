//! Any string: `Topic` parsing never panics, and an accepted topic prints
//! back to a string that parses to the same topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsub_core::Topic;

fuzz_target!(|input: &str| {
    if let Ok(topic) = input.parse::<Topic>() {
        let again: Topic = topic.as_str().parse().expect("a printed topic parses");
        assert_eq!(again, topic);
        assert_eq!(topic.as_str().split('/').count(), 4, "{topic}");
        for sep in [".", "/", "_"] {
            let _ = topic.joined(sep);
        }
    }
});
