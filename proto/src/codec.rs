//! The two encodings and their framing.
//!
//! * **JSON**: a UTF-8 object whose first member is the schema version,
//!   `{"v":1,"seq":7,...}`. Its first byte is `{`.
//! * **postcard**: the byte [`POSTCARD_MARKER`], the schema version as a postcard
//!   varint, then the postcard body.
//!
//! A receiver needs no configuration: the first byte says which one it got. Decoding
//! is total: any input yields a value or a [`DecodeError`], never a panic, and frames
//! above [`Message::MAX_BYTES`] are refused before they are parsed.

use serde::{Deserialize, Serialize};

use crate::schema::Message;
use crate::SCHEMA_VERSION;

/// First byte of a postcard frame. It can never start a JSON text.
pub const POSTCARD_MARKER: u8 = 0xF0;

/// How a node encodes what it publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Readable with `mosquitto_sub`, Telegraf, Node-RED, Home Assistant.
    #[default]
    Json,
    /// Compact binary for thin links.
    Postcard,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Postcard => "postcard",
        }
    }

    /// Which encoding a frame uses, from its first byte.
    pub fn sniff(bytes: &[u8]) -> Result<Encoding, DecodeError> {
        match bytes.first() {
            None => Err(DecodeError::Empty),
            Some(&POSTCARD_MARKER) => Ok(Encoding::Postcard),
            Some(b'{') => Ok(Encoding::Json),
            Some(&b) if b.is_ascii_whitespace() => Ok(Encoding::Json),
            Some(&b) => Err(DecodeError::UnknownEncoding { first_byte: b }),
        }
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Encoding::Json),
            "postcard" => Ok(Encoding::Postcard),
            other => Err(format!(
                "unknown encoding {other:?}; expected \"json\" or \"postcard\""
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Encoded, it is over the largest frame its peers decode ([`Message::MAX_BYTES`]):
    /// refused here, where the sender can see why, not silently by every receiver.
    #[error("{what} is {len} bytes encoded, over the {max} bytes its receivers take")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("encoding {what} as json: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("encoding {what} as postcard: {source}")]
    Postcard {
        what: &'static str,
        source: postcard::Error,
    },
    #[error("{what}: {field} is not a finite number (NaN or infinity); fog messages carry finite numbers only")]
    NonFinite {
        what: &'static str,
        field: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("{what} frame is {len} bytes; the limit is {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("unknown encoding (first byte 0x{first_byte:02x}); expected '{{' for json or 0xf0 for postcard")]
    UnknownEncoding { first_byte: u8 },
    #[error("schema version {found} is not supported (this build speaks {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("malformed {what} in json: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("malformed {what} in postcard: {source}")]
    Postcard {
        what: &'static str,
        source: postcard::Error,
    },
    /// A float field held NaN or an infinity (either encoding): JSON cannot carry
    /// them, so no fog message may, whichever encoding it arrived in.
    #[error("{what} refused: {field} is not a finite number (NaN or infinity); fog messages carry finite numbers only")]
    NonFinite {
        what: &'static str,
        field: &'static str,
    },
}

/// Encode `msg` into a new buffer.
pub fn encode<M: Message>(msg: &M, encoding: Encoding) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(128);
    encode_into(msg, encoding, &mut out)?;
    Ok(out)
}

/// Encode `msg`, appending to `out` (reuse one buffer on hot paths).
pub fn encode_into<M: Message>(
    msg: &M,
    encoding: Encoding,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if let Some(field) = msg.non_finite() {
        return Err(EncodeError::NonFinite {
            what: M::NAME,
            field,
        });
    }
    let start = out.len();
    encode_frame(msg, encoding, out)?;
    let len = out.len() - start;
    if len > M::MAX_BYTES {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            what: M::NAME,
            len,
            max: M::MAX_BYTES,
        });
    }
    Ok(())
}

fn encode_frame<M: Message>(
    msg: &M,
    encoding: Encoding,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match encoding {
        Encoding::Json => {
            // Write `{"v":1,` and then the message object without its own `{`, so the
            // version is the first member without an intermediate Value.
            out.extend_from_slice(b"{\"v\":");
            let mut itoa = [0u8; 5];
            out.extend_from_slice(format_u16(SCHEMA_VERSION, &mut itoa));
            let body_start = out.len();
            serde_json::to_writer(&mut *out, msg).map_err(|source| EncodeError::Json {
                what: M::NAME,
                source,
            })?;
            if out.len() - body_start <= 2 {
                // `{}`: no members follow the version.
                out.truncate(body_start);
                out.push(b'}');
            } else {
                out[body_start] = b',';
            }
        }
        Encoding::Postcard => {
            out.push(POSTCARD_MARKER);
            postcard::serialize_with_flavor(&(SCHEMA_VERSION, msg), AppendVec(out)).map_err(
                |source| EncodeError::Postcard {
                    what: M::NAME,
                    source,
                },
            )?;
        }
    }
    Ok(())
}

/// A postcard flavor that appends to a caller's `Vec` and copies byte slices (payloads,
/// strings) with one `extend_from_slice`. postcard's `to_extend` flavor goes through
/// `Extend` with a cloned iterator, which at our size-optimised opt-level is a byte loop:
/// it was the coordinator's biggest cost after allocation, encoding 256-task lists.
pub(crate) struct AppendVec<'a>(pub(crate) &'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendVec<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn format_u16(mut n: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Decode a frame of either encoding, within `M::MAX_BYTES`.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    decode_with_limit(bytes, M::MAX_BYTES)
}

/// Decode with a caller-chosen size limit (an agent's task limit is below the protocol's).
pub fn decode_with_limit<M: Message>(bytes: &[u8], max_bytes: usize) -> Result<M, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            what: M::NAME,
            len: bytes.len(),
            max: max_bytes,
        });
    }
    let msg: M = match Encoding::sniff(bytes)? {
        Encoding::Json => {
            #[derive(Deserialize)]
            struct Version {
                v: u16,
            }
            let json_err = |source| DecodeError::Json {
                what: M::NAME,
                source,
            };
            // Our encoder writes the version first (`{"v":1,`): read it from the bytes
            // and parse the document once instead of twice (the version pass walks
            // every payload string too). Anything else (another producer's member
            // order, whitespace) takes the separate pass for the version first.
            let v = match leading_version(bytes) {
                Some(v) => v,
                None => {
                    let Version { v } = serde_json::from_slice(bytes).map_err(json_err)?;
                    v
                }
            };
            check_version(v)?;
            serde_json::from_slice(bytes).map_err(json_err)?
        }
        Encoding::Postcard => {
            let postcard_err = |source| DecodeError::Postcard {
                what: M::NAME,
                source,
            };
            let (v, rest): (u16, &[u8]) =
                postcard::take_from_bytes(&bytes[1..]).map_err(postcard_err)?;
            check_version(v)?;
            let (msg, trailing): (M, &[u8]) =
                postcard::take_from_bytes(rest).map_err(postcard_err)?;
            if !trailing.is_empty() {
                return Err(postcard_err(postcard::Error::DeserializeBadEncoding));
            }
            msg
        }
    };
    // Postcard carries any f32/f64 bit pattern and JSON writes NaN as `null`: a
    // non-finite figure let through here could not be republished.
    match msg.non_finite() {
        None => Ok(msg),
        Some(field) => Err(DecodeError::NonFinite {
            what: M::NAME,
            field,
        }),
    }
}

/// The version of a document that starts exactly `{"v":DIGITS` then `,` or `}`.
/// (A later duplicate `"v"` is then ignored with the other unknown members, where the
/// separate version pass refused it; harmless, the first one is the version.)
fn leading_version(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"{\"v\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 5 || !matches!(rest.get(digits), Some(b',' | b'}')) {
        return None;
    }
    // A leading zero is not JSON ("01"); let the full parser say so.
    if digits > 1 && rest[0] == b'0' {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn check_version(found: u16) -> Result<(), DecodeError> {
    if found == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion {
            found,
            supported: SCHEMA_VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;

    #[test]
    fn json_carries_version_first() {
        let bytes = encode(&Heartbeat::default(), Encoding::Json).expect("encodes");
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(text.starts_with("{\"v\":1,\"seq\":0,"), "{text}");
        let _: serde_json::Value = serde_json::from_slice(&bytes).expect("valid json");
    }

    #[test]
    fn both_encodings_round_trip_and_are_sniffed() {
        let hb = Heartbeat {
            seq: 42,
            cpu_pct: Some(12.5),
            ..Heartbeat::default()
        };
        for enc in [Encoding::Json, Encoding::Postcard] {
            let bytes = encode(&hb, enc).expect("encodes");
            assert_eq!(Encoding::sniff(&bytes).expect("known"), enc);
            assert_eq!(decode::<Heartbeat>(&bytes).expect("decodes"), hb);
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let json = br#"{"v":2,"seq":1}"#;
        assert!(matches!(
            decode::<Heartbeat>(json),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
        let mut pc = vec![POSTCARD_MARKER];
        pc.extend(postcard::to_allocvec(&(9u16, Heartbeat::default())).expect("encodes"));
        assert!(matches!(
            decode::<Heartbeat>(&pc),
            Err(DecodeError::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn the_version_is_read_from_the_leading_bytes_or_by_a_full_parse() {
        assert_eq!(leading_version(br#"{"v":1,"seq":1}"#), Some(1));
        assert_eq!(leading_version(br#"{"v":65535}"#), Some(65535));
        // Not our exact layout: the full parser decides.
        for odd in [
            &br#"{ "v":1,"seq":1}"#[..],
            br#"{"seq":1,"v":1}"#,
            br#"{"v":01,"seq":1}"#,
            br#"{"v":65536,"seq":1}"#,
            br#"{"v":1.5,"seq":1}"#,
            br#"{"v":"1"}"#,
            br#"{"v":"#,
        ] {
            assert_eq!(
                leading_version(odd),
                None,
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
        // Every form decodes to the same message, or fails with a clear error.
        let hb = Heartbeat {
            seq: 1,
            ..Heartbeat::default()
        };
        let ours = encode(&hb, Encoding::Json).expect("encodes");
        let value: serde_json::Value = serde_json::from_slice(&ours).expect("json");
        // serde_json's map sorts keys ("at_ms" before "v"); pretty adds whitespace.
        let sorted = serde_json::to_vec(&value).expect("json");
        let pretty = serde_json::to_vec_pretty(&value).expect("json");
        assert_eq!(leading_version(&sorted), None);
        assert_eq!(leading_version(&pretty), None);
        for ok in [&ours, &sorted, &pretty] {
            assert_eq!(decode::<Heartbeat>(ok).expect("decodes"), hb);
        }
        let other = String::from_utf8(sorted)
            .expect("utf-8")
            .replace("\"v\":1", "\"v\":3");
        assert!(matches!(
            decode::<Heartbeat>(other.as_bytes()),
            Err(DecodeError::UnsupportedVersion { found: 3, .. })
        ));
        for bad in [
            &br#"{"v":01,"seq":1}"#[..],
            br#"{"v":1,"seq":1"#,
            br#"{"v":1,}"#,
        ] {
            assert!(
                matches!(decode::<Heartbeat>(bad), Err(DecodeError::Json { .. })),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let big = vec![b'{'; Heartbeat::MAX_BYTES + 1];
        assert!(matches!(
            decode::<Heartbeat>(&big),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_after_postcard_body_are_refused() {
        let mut bytes = encode(&Heartbeat::default(), Encoding::Postcard).expect("encodes");
        bytes.push(0);
        assert!(decode::<Heartbeat>(&bytes).is_err());
    }

    /// The fuzz finding kept in `fuzz/regressions/decode_frame/`: a postcard heartbeat
    /// whose `load1` is a NaN. It used to decode; JSON would then write `null`.
    #[test]
    fn the_nan_heartbeat_fuzz_finding_is_refused_naming_its_field() {
        let frame = include_bytes!("../../fuzz/regressions/decode_frame/heartbeat-nan-postcard");
        let err = decode::<Heartbeat>(frame).expect_err("refused");
        assert!(
            matches!(
                err,
                DecodeError::NonFinite {
                    what: "heartbeat",
                    field: "load1"
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("heartbeat") && text.contains("load1"),
            "{text}"
        );
        assert!(text.contains("not a finite number"), "{text}");
    }

    #[test]
    fn non_finite_floats_are_refused_in_both_encodings_and_on_encode() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let hb = Heartbeat {
                load1: bad,
                ..Heartbeat::default()
            };
            for enc in [Encoding::Json, Encoding::Postcard] {
                let err = encode(&hb, enc).expect_err("refused on encode");
                assert!(
                    matches!(err, EncodeError::NonFinite { field: "load1", .. }),
                    "{err:?}"
                );
            }
            // What another producer could send: postcard carries the bits as they are.
            let mut pc = vec![POSTCARD_MARKER];
            pc.extend(postcard::to_allocvec(&(SCHEMA_VERSION, &hb)).expect("encodes"));
            assert!(matches!(
                decode::<Heartbeat>(&pc),
                Err(DecodeError::NonFinite { field: "load1", .. })
            ));
        }
        // JSON has no NaN literal, and serde_json refuses a number beyond an f32's
        // range rather than making an infinity of it: refused either way.
        for big in ["3.5e38", "1e300", "-1e300"] {
            let json = format!(
                r#"{{"v":1,"seq":1,"at_ms":0,"cpu_pct":{big},"mem_pct":0,"load1":0,"queued":0,"running":0,"free_slots":0}}"#
            );
            assert!(decode::<Heartbeat>(json.as_bytes()).is_err(), "{json}");
        }
        // Nested fields are named by their path.
        let mut reading = Reading::default();
        reading.disks.push(Disk {
            write_bytes_per_sec: Some(f64::INFINITY),
            ..Disk::default()
        });
        assert!(matches!(
            encode(&reading, Encoding::Postcard),
            Err(EncodeError::NonFinite {
                what: "reading",
                field: "disks[].write_bytes_per_sec"
            })
        ));
        let status = CoordinatorStatus {
            signing_key: Default::default(),
            warnings: Default::default(),
            omitted: Default::default(),
            online: true,
            at_ms: 0,
            version: String::new(),
            reason: String::new(),
            nodes: Vec::new(),
            counters: Default::default(),
            running: Vec::new(),
            recent: Vec::new(),
            dead: Vec::new(),
            scaling: Some(ScalingAdvice {
                at_ms: 0,
                direction: ScaleDirection::Hold,
                current_nodes: 1,
                desired_nodes: 1,
                cpu_pct: 10.0,
                mem_pct: f32::NAN,
                reason: String::new(),
            }),
        };
        assert!(matches!(
            encode(&status, Encoding::Json),
            Err(EncodeError::NonFinite {
                field: "scaling.mem_pct",
                ..
            })
        ));
        // Finite extremes are fine.
        let hb = Heartbeat {
            cpu_pct: Some(f32::MAX),
            load1: f32::MIN_POSITIVE,
            ..Heartbeat::default()
        };
        for enc in [Encoding::Json, Encoding::Postcard] {
            let bytes = encode(&hb, enc).expect("encodes");
            assert_eq!(decode::<Heartbeat>(&bytes).expect("decodes"), hb);
        }
    }

    #[test]
    fn unknown_first_byte_is_named() {
        let err = decode::<Heartbeat>(b"\x07abc").expect_err("refused");
        assert!(err.to_string().contains("0x07"), "{err}");
    }
}

#[cfg(test)]
mod too_large {
    use super::{decode, encode, EncodeError, Encoding};
    use crate::message::Heartbeat;
    use crate::Message;

    /// What fog encodes, fog decodes: a frame over the receivers' limit is refused by
    /// the sender (found by fuzz/fuzz_targets/open_seal.rs: a heartbeat with a long
    /// `degraded` list, under the limit until its seal was added).
    #[test]
    fn a_frame_over_the_limit_is_refused_when_encoded() {
        let hb = Heartbeat {
            degraded: vec!["x".repeat(100); 30],
            ..Heartbeat::default()
        };
        let mut out = b"kept".to_vec();
        let err = super::encode_into(&hb, Encoding::Json, &mut out).expect_err("too large");
        assert!(
            matches!(err, EncodeError::TooLarge { max, .. } if max == Heartbeat::MAX_BYTES),
            "{err}"
        );
        assert_eq!(out, b"kept", "nothing appended");
        let ok = Heartbeat {
            degraded: vec!["store".into()],
            ..Heartbeat::default()
        };
        for e in [Encoding::Json, Encoding::Postcard] {
            let b = encode(&ok, e).expect("fits");
            assert!(decode::<Heartbeat>(&b).is_ok());
        }
    }
}
