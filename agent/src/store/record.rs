//! A task as stored (postcard), and how its byte fields are encoded.

use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTask {
    pub id: String,
    pub attempt: u32,
    pub kind: String,
    pub timeout_ms: u32,
    pub priority: u8,
    pub deadline_ms: u64,
    pub cacheable: bool,
    pub accepted_at_ms: u64,
    /// Kept (with `store.rerun_after_restart`) until the task finishes; empty otherwise.
    #[serde(with = "raw_bytes")]
    pub payload: Vec<u8>,
    /// The encoded result message, once finished.
    #[serde(with = "raw_bytes::option")]
    pub result: Option<Vec<u8>>,
    pub finished_at_ms: u64,
}

/// Byte strings as one postcard byte string instead of serde's default sequence of
/// `u8`s. The bytes on disk are the same (length, then bytes); encoding and decoding
/// stop costing a call per byte, which was 3 % of all CPU in the end-to-end bench.
mod raw_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Raw<'a>(&'a [u8]);

    impl Serialize for Raw<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        Raw(v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        fog_proto::Payload::deserialize(d).map(|p| p.0)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            v.as_deref().map(Raw).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Option::<fog_proto::Payload>::deserialize(d).map(|o| o.map(|p| p.0))
        }
    }
}

pub(super) fn decode_task(id: &str, bytes: &[u8]) -> Result<StoredTask, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_fields_keep_postcards_length_then_bytes_layout() {
        #[derive(Serialize)]
        struct Plain {
            payload: Vec<u8>,
            result: Option<Vec<u8>>,
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Raw {
            #[serde(with = "raw_bytes")]
            payload: Vec<u8>,
            #[serde(with = "raw_bytes::option")]
            result: Option<Vec<u8>>,
        }
        for (payload, result) in [(vec![1, 2, 3], Some(vec![9; 300])), (vec![], None)] {
            let plain = postcard::to_allocvec(&Plain {
                payload: payload.clone(),
                result: result.clone(),
            })
            .expect("encodes");
            let raw = Raw { payload, result };
            let bytes = postcard::to_allocvec(&raw).expect("encodes");
            assert_eq!(
                bytes, plain,
                "records written before this change still decode"
            );
            assert_eq!(postcard::from_bytes::<Raw>(&bytes).expect("decodes"), raw);
        }
    }
}
