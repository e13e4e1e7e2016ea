//! Any bytes on any fog topic: every decoder must return a value or an error, and a
//! value it returns must survive a round trip through both encodings unchanged.
//! `scripts/fuzz.sh` runs it (and the others) for a bounded time; CI does.
#![no_main]

use fog_proto::codec::{decode, encode, Encoding};
use fog_proto::message::*;
use fog_proto::Message;
use libfuzzer_sys::fuzz_target;

fn check<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(m) = decode::<M>(data) else { return };
    for encoding in [Encoding::Json, Encoding::Postcard] {
        // A message the decoder accepted can still be too big to send again (the
        // size limit is the encoder's too); that is an error, not a panic.
        let Ok(bytes) = encode(&m, encoding) else { continue };
        let again = decode::<M>(&bytes).expect("what fog encodes, fog decodes");
        assert_eq!(again, m, "{encoding:?} round trip changed the message");
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Status>(data);
    check::<Heartbeat>(data);
    check::<Reading>(data);
    check::<Alert>(data);
    check::<TaskAssignment>(data);
    check::<TaskAssignments>(data);
    check::<TaskResult>(data);
    check::<TaskResults>(data);
    check::<TaskSubmission>(data);
    check::<TaskSubmissions>(data);
    check::<CoordinatorStatus>(data);
    check::<ScalingAdvice>(data);
});
