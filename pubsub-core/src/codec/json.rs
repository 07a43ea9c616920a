use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::Codec;
use crate::error::{Error, Result};

/// Content type written by [`Json`].
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// JSON with the seed's rule for optional fields: a field whose value is
/// `None` is left out (not written as `null`), while empty values (`""`,
/// `[]`, `{}`) stay. Field order is the struct's declaration order.
///
/// The rule applies to every object member, however deep: a member whose
/// value serializes to `null` is omitted. Array elements are positional and
/// keep their `null`s. Decoding turns absent members back into `None`
/// (serde's default for `Option` fields).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn content_type(&self) -> &str {
        JSON_CONTENT_TYPE
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        to_json_bytes(value)
    }

    fn decode(&self, payload: &[u8]) -> Result<T> {
        from_json_bytes(payload)
    }
}

/// JSON bytes of any `Serialize` value, with `None` members omitted.
pub(crate) fn to_json_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut tree = serde_json::to_value(value).map_err(|e| Error::codec(format!("JSON encode failed: {e}"), e))?;
    strip_null_members(&mut tree);
    serde_json::to_vec(&tree).map_err(|e| Error::codec(format!("JSON encode failed: {e}"), e))
}

pub(crate) fn from_json_bytes<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| Error::codec(format!("JSON decode failed: {e}"), e))
}

fn strip_null_members(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_null_members);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_members),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    /// The seed's example type.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct TextCompletionRequest {
        system: String,
        prompt: String,
        #[serde(default)]
        streaming: bool,
        metadata: Option<BTreeMap<String, String>>,
    }

    fn request(metadata: Option<BTreeMap<String, String>>) -> TextCompletionRequest {
        TextCompletionRequest {
            system: "You are helpful".into(),
            prompt: "Hello world".into(),
            streaming: false,
            metadata,
        }
    }

    #[test]
    fn none_is_omitted_and_empty_is_kept_exact_bytes() {
        let absent = Json.encode(&request(None)).unwrap();
        assert_eq!(
            String::from_utf8(absent.clone()).unwrap(),
            r#"{"system":"You are helpful","prompt":"Hello world","streaming":false}"#
        );
        let empty = Json.encode(&request(Some(BTreeMap::new()))).unwrap();
        assert_eq!(
            String::from_utf8(empty.clone()).unwrap(),
            r#"{"system":"You are helpful","prompt":"Hello world","streaming":false,"metadata":{}}"#
        );
        let back: TextCompletionRequest = Json.decode(&absent).unwrap();
        assert_eq!(back, request(None));
        let back: TextCompletionRequest = Json.decode(&empty).unwrap();
        assert_eq!(back, request(Some(BTreeMap::new())));
    }

    #[test]
    fn nested_none_is_omitted_empty_strings_and_lists_kept() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Inner {
            a: Option<u32>,
            s: String,
            l: Vec<Option<u8>>,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Outer {
            inner: Inner,
            maybe: Option<Inner>,
        }
        let v = Outer {
            inner: Inner {
                a: None,
                s: String::new(),
                l: vec![None, Some(1)],
            },
            maybe: None,
        };
        let bytes = Json.encode(&v).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"inner":{"s":"","l":[null,1]}}"#
        );
        let back: Outer = Json.decode(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn undecodable_payload_is_a_codec_error() {
        let err = <Json as Codec<TextCompletionRequest>>::decode(&Json, b"not json").unwrap_err();
        assert!(matches!(err, Error::Codec { .. }), "{err:?}");
    }
}
