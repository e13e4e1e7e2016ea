//! Any topic name a broker delivers: the parser returns a topic or an error.
#![no_main]

use fog_proto::Topics;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(topic) = std::str::from_utf8(data) else { return };
    let topics = Topics::default();
    let _ = topics.parse(topic);
    let _ = topics.parse_node(topic);
});
