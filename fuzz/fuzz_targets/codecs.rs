//! Any bytes: the JSON and Avro codecs and the binary envelope reject what
//! they cannot read with an error (never a panic), and what they accept
//! survives an encode/decode round trip unchanged.
#![no_main]

use std::sync::OnceLock;

use apache_avro::AvroSchema;
use libfuzzer_sys::fuzz_target;
use pubsub_core::codec::{Avro, Codec, Json};
use pubsub_core::envelope;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
struct Inner {
    name: String,
    count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
struct Request {
    system: String,
    user: Option<String>,
    score: Option<i32>,
    tags: Vec<String>,
    inner: Option<Inner>,
    raw: Vec<u8>,
}

fn round_trip<C: Codec<Request>>(codec: &C, input: &[u8]) {
    if let Ok(value) = codec.decode(input) {
        let bytes = codec.encode(&value).expect("a decoded value encodes");
        let again = codec.decode(&bytes).expect("an encoded value decodes");
        assert_eq!(again, value);
    }
}

static AVRO: OnceLock<Avro<Request>> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    round_trip(&Json, input);
    round_trip(AVRO.get_or_init(|| Avro::new().expect("schema")), input);
    if let Ok(e) = envelope::decode(input) {
        let again = envelope::decode(&envelope::encode(&e)).expect("an encoded envelope decodes");
        assert_eq!(again, e);
    }
});
