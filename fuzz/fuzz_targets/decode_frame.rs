//! Any bytes on any fog topic: every decoder must return a value or an error.
//! `cargo +nightly fuzz run decode_frame` (cargo install cargo-fuzz).
#![no_main]

use fog_proto::codec::decode;
use fog_proto::message::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Status>(data);
    let _ = decode::<Heartbeat>(data);
    let _ = decode::<Reading>(data);
    let _ = decode::<Alert>(data);
    let _ = decode::<TaskAssignment>(data);
    let _ = decode::<TaskResult>(data);
    let _ = decode::<TaskSubmission>(data);
    let _ = decode::<CoordinatorStatus>(data);
    let _ = decode::<ScalingAdvice>(data);
});
