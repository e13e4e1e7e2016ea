//! The signature envelope: any bytes on a topic that carries sealed messages. Opening
//! a seal must return the signer or a reason, never panic; and whatever decodes, once
//! sealed with a known key and sent again in either encoding, must open on the other
//! side (the signed bytes are recomputed from the decoded message, so a field that
//! does not survive a round trip exactly would break every honest signature).
#![no_main]

use std::sync::OnceLock;

use fog_proto::codec::{decode, encode, Encoding};
use fog_proto::message::*;
use fog_proto::Sealed;
use fog_rt::keys::{open, seal, Freshness, KeyPair, PublicKey};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static (KeyPair, Vec<PublicKey>) {
    static KEY: OnceLock<(KeyPair, Vec<PublicKey>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let (k, _) = KeyPair::generate().expect("a key");
        let public = vec![k.public().clone()];
        (k, public)
    })
}

const NOW: u64 = 1_790_000_000_000;

fn check<M: Sealed + Clone>(data: &[u8]) {
    let Ok(mut m) = decode::<M>(data) else { return };
    let (k, keys) = key();
    let fresh = Some(Freshness { now_ms: NOW, max_skew_ms: 300_000 });
    // A stranger's message: a reason, not a panic (it was not signed by our key).
    let _ = open(&mut m, keys, "pi-07", fresh);
    if seal(&mut m, k, "pi-07", NOW).is_err() {
        return;
    }
    for encoding in [Encoding::Json, Encoding::Postcard] {
        let Ok(bytes) = encode(&m, encoding) else { continue };
        let mut back = decode::<M>(&bytes).expect("what fog encodes, fog decodes");
        open(&mut back, keys, "pi-07", fresh)
            .unwrap_or_else(|e| panic!("an honest seal did not open after {encoding:?}: {e}"));
    }
}

fuzz_target!(|data: &[u8]| {
    check::<TaskAssignments>(data);
    check::<TaskSubmissions>(data);
    check::<TaskResults>(data);
    check::<Heartbeat>(data);
    check::<Status>(data);
});
