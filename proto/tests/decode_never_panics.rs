//! Decoding arbitrary bytes never panics: random input, truncated and bit-flipped
//! valid frames, each for every message type. Failures come back as typed errors.

mod samples;

use fog_proto::codec::{decode, encode};
use fog_proto::message::*;
use fog_proto::Encoding;
use proptest::prelude::*;

fn decode_all(bytes: &[u8]) {
    let _ = decode::<Status>(bytes);
    let _ = decode::<Heartbeat>(bytes);
    let _ = decode::<Reading>(bytes);
    let _ = decode::<Alert>(bytes);
    let _ = decode::<TaskAssignment>(bytes);
    let _ = decode::<TaskResult>(bytes);
    let _ = decode::<TaskSubmission>(bytes);
    let _ = decode::<CoordinatorStatus>(bytes);
    let _ = decode::<ScalingAdvice>(bytes);
    let _ = decode::<TaskAssignments>(bytes);
    let _ = decode::<TaskResults>(bytes);
    let _ = decode::<TaskSubmissions>(bytes);
}

/// Every sample message in both encodings, encoded once for all cases.
fn valid_frames() -> &'static [Vec<u8>] {
    static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(encode_samples)
}

fn encode_samples() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for enc in [Encoding::Json, Encoding::Postcard] {
        out.push(encode(&samples::status(), enc).expect("encodes"));
        out.push(encode(&samples::heartbeat(), enc).expect("encodes"));
        out.push(encode(&samples::reading(), enc).expect("encodes"));
        out.push(encode(&samples::alert(), enc).expect("encodes"));
        out.push(encode(&samples::assignment(), enc).expect("encodes"));
        for r in samples::results() {
            out.push(encode(&r, enc).expect("encodes"));
        }
        out.push(encode(&samples::submission(), enc).expect("encodes"));
        out.push(encode(&samples::coordinator_status(), enc).expect("encodes"));
        out.push(encode(&samples::scaling(), enc).expect("encodes"));
        out.push(
            encode(
                &TaskResults {
                    items: samples::results(),
                    seal: samples::seal("pi-07"),
                },
                enc,
            )
            .expect("encodes"),
        );
    }
    out
}

/// 2,000 cases natively; an eighth under qemu-user (scripts/cross-check.sh sets
/// FOG_UNDER_QEMU), where the soft-float ARMv6 run took 330 s for these five tests:
/// there the point is the target's word size and ABI, which a few hundred cases
/// check, and the native run searches at full strength.
fn cases() -> u32 {
    let emulated = std::env::var_os("FOG_UNDER_QEMU").is_some_and(|v| !v.is_empty() && v != "0");
    if emulated {
        250
    } else {
        2000
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn random_bytes_behind_each_marker(first in prop_oneof![Just(b'{'), Just(0xF0u8)],
                                       rest in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = vec![first];
        bytes.extend(rest);
        decode_all(&bytes);
    }

    #[test]
    fn truncated_valid_frames(which in 0usize..32, cut in 0.0f64..1.0) {
        let frames = valid_frames();
        let frame = &frames[which % frames.len()];
        let len = ((frame.len() as f64) * cut) as usize;
        decode_all(&frame[..len]);
    }

    #[test]
    fn corrupted_valid_frames(which in 0usize..32, pos in any::<usize>(), byte in any::<u8>()) {
        let frames = valid_frames();
        let mut frame = frames[which % frames.len()].clone();
        let i = pos % frame.len();
        frame[i] = byte;
        decode_all(&frame);
    }
}

#[test]
fn every_strict_prefix_of_a_postcard_frame_is_an_error() {
    for enc in [Encoding::Json, Encoding::Postcard] {
        let frame = encode(&samples::reading(), enc).expect("encodes");
        for len in 0..frame.len() {
            assert!(
                decode::<Reading>(&frame[..len]).is_err(),
                "{enc:?} prefix of {len} bytes decoded"
            );
        }
    }
}
