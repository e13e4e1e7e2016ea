//! The one packet-size ceiling fog and its broker agree on.
//!
//! A receiver whose MQTT client refuses a packet loses its connection (rumqttc 0.25
//! fails the read on the fixed header, before the topic is known, and drops the link),
//! so the ceiling must be the same on three sides: what fog sends (no message is
//! larger than its [`Message::MAX_BYTES`]), what every fog receiver's MQTT client
//! accepts (so anything the broker lets through is at worst decoded and refused by
//! the message's own, smaller limit, never a disconnect), and what the broker accepts
//! from a publisher (`max_packet_size` in the generated Mosquitto config, the embedded
//! broker's `max_payload_size`), so a larger publish never reaches fog at all.

use fog_proto::{
    Alert, CoordinatorStatus, Heartbeat, Message, Reading, ScalingAdvice, Status, TaskAssignments,
    TaskResults, TaskSubmissions,
};

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// The largest encoded message fog sends (the coordinator's status snapshot).
pub const MAX_MESSAGE_BYTES: usize = max(
    max(
        max(Status::MAX_BYTES, Heartbeat::MAX_BYTES),
        max(Reading::MAX_BYTES, Alert::MAX_BYTES),
    ),
    max(
        max(TaskAssignments::MAX_BYTES, TaskResults::MAX_BYTES),
        max(
            TaskSubmissions::MAX_BYTES,
            max(CoordinatorStatus::MAX_BYTES, ScalingAdvice::MAX_BYTES),
        ),
    ),
);

/// MQTT framing around a payload: fixed header (at most 5), topic length (2), the
/// topic (a fog topic is at most a 128-byte prefix plus about 90 bytes; a reply topic
/// at most 256), packet id (2); rounded up.
pub const MQTT_OVERHEAD_BYTES: usize = 1024;

/// The largest MQTT packet (fixed header included) fog accepts and its broker should
/// forward.
pub const MAX_PACKET_BYTES: usize = MAX_MESSAGE_BYTES + MQTT_OVERHEAD_BYTES;

// The framing of a publish on the longest reply topic the coordinator accepts (256).
const _: () = assert!(5 + 2 + 256 + 2 <= MQTT_OVERHEAD_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_covers_every_message_and_a_long_topic() {
        assert_eq!(MAX_MESSAGE_BYTES, CoordinatorStatus::MAX_BYTES);
        for m in [
            Status::MAX_BYTES,
            Heartbeat::MAX_BYTES,
            Reading::MAX_BYTES,
            Alert::MAX_BYTES,
            TaskAssignments::MAX_BYTES,
            TaskResults::MAX_BYTES,
            TaskSubmissions::MAX_BYTES,
            ScalingAdvice::MAX_BYTES,
        ] {
            assert!(m <= MAX_MESSAGE_BYTES);
        }
    }
}
