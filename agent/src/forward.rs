//! Store-and-forward: every reading, alert and task result leaves through here, and
//! nothing the broker has not acknowledged is ever forgotten.
//!
//! The mode is an explicit state machine, after uplink's serializer:
//!
//! | mode         | link       | backlog   | a new message...                          |
//! |--------------|------------|-----------|-------------------------------------------|
//! | `Live`       | up         | empty     | is published at QoS 1 and tracked         |
//! | `Backlogged` | up, full   | any       | goes to the backlog (the link is saturated)|
//! | `Draining`   | up         | not empty | is published live; the backlog replays    |
//! | `Offline`    | down       | any       | goes to the backlog                       |
//!
//! Published messages stay in memory until the broker's PUBACK; if the link drops first
//! they go to the backlog, in the order they were made. Backlog entries leave the store
//! only after their own PUBACK. Replay runs at `replay_per_sec` with at most
//! `replay_in_flight` unacknowledged, so a thin uplink is not flooded and live readings
//! are not stuck behind a long backlog.
//!
//! Results are the exception to "the link is saturated": the task host keeps its own
//! bounded outbox and retries, so a busy link returns [`PublishError::Busy`] for them
//! instead of writing every result batch of a busy node to disk.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::backlog::{Backlog, BacklogStats, Class, Removed};
use crate::transport::{Link, PublishError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Backlogged,
    Draining,
    Offline,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Backlogged => "backlogged",
            Mode::Draining => "draining",
            Mode::Offline => "offline",
        }
    }
}

/// A publish waiting for its PUBACK.
enum Tracked {
    /// Made now; goes to the backlog if the link drops first.
    Live { class: Class, payload: Vec<u8> },
    /// Replayed from the backlog; removed from it once acknowledged.
    Replay { class: Class, seq: u64 },
}

/// Topics per class, in [`Class`] order.
pub struct ClassTopics {
    pub readings: String,
    pub alerts: String,
    pub results: String,
}

impl ClassTopics {
    fn get(&self, class: Class) -> &str {
        match class {
            Class::Reading => &self.readings,
            Class::Alert => &self.alerts,
            Class::Result => &self.results,
        }
    }
}

pub struct ReplayLimits {
    pub per_sec: u32,
    pub in_flight: u32,
}

pub struct Forwarder {
    link: Link,
    mode: Mode,
    backlog: Backlog,
    topics: ClassTopics,
    limits: ReplayLimits,
    tracked: HashMap<u64, Tracked>,
    next_token: u64,
    /// Highest backlog sequence number replayed on this connection.
    cursor: u64,
    replay_in_flight: u32,
    /// Acknowledged, removal not yet durable: never replayed again meanwhile.
    acked: BTreeSet<u64>,
    /// Replay allowance (token bucket), refilled at `per_sec`.
    allowance: f64,
    refilled_at: Instant,
    replayed_total: u64,
    /// Mode changes since start (each logged once).
    transitions: u64,
}

impl Forwarder {
    pub fn new(
        link: Link,
        backlog: Backlog,
        topics: ClassTopics,
        limits: ReplayLimits,
    ) -> Forwarder {
        Forwarder {
            link,
            mode: Mode::Offline,
            backlog,
            topics,
            limits,
            tracked: HashMap::new(),
            next_token: 1,
            cursor: 0,
            replay_in_flight: 0,
            acked: BTreeSet::new(),
            allowance: 0.0,
            refilled_at: Instant::now(),
            replayed_total: 0,
            transitions: 0,
        }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }

    /// A new link after the old one's task died (supervision): what the old one had
    /// not got acknowledged goes to the backlog; the new one reports Connected.
    pub fn replace_link(&mut self, link: Link) {
        self.on_disconnected();
        self.link = link;
    }

    /// Give the link back for a clean close (the backlog flushes as it drops).
    pub fn into_link(self) -> Link {
        self.link
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn stats(&self) -> &BacklogStats {
        self.backlog.stats()
    }

    pub fn replayed_total(&self) -> u64 {
        self.replayed_total
    }

    /// Publishes awaiting their PUBACK (live and replayed).
    pub fn unacked(&self) -> usize {
        self.tracked.len()
    }

    fn set_mode(&mut self, mode: Mode) {
        if self.mode != mode {
            tracing::info!(
                from = self.mode.as_str(),
                to = mode.as_str(),
                backlog.entries = self.stats().len(),
                backlog.bytes = self.stats().bytes(),
                "forwarding mode changed"
            );
            self.mode = mode;
            self.transitions += 1;
        }
    }

    /// Send `payload` now if the link allows, else keep it in the backlog.
    /// `Err(Busy)` only for results on a saturated link (the caller retries);
    /// `Err(TooLarge)` for a message that can never be published.
    pub fn publish(&mut self, class: Class, payload: Vec<u8>) -> Result<(), PublishError> {
        match self.mode {
            Mode::Offline => {
                self.backlog.push(class, payload);
                return Ok(());
            }
            Mode::Backlogged if class != Class::Result => {
                self.backlog.push(class, payload);
                return Ok(());
            }
            _ => {}
        }
        let token = self.next_token;
        match self
            .link
            .publish_tracked(self.topics.get(class), payload.clone(), token)
        {
            Ok(()) => {
                self.next_token += 1;
                self.tracked.insert(token, Tracked::Live { class, payload });
                Ok(())
            }
            Err(PublishError::NotConnected) => {
                // The link's Disconnected event follows and moves what is unacked to
                // the backlog; going offline now keeps new messages off the wire.
                self.set_mode(Mode::Offline);
                self.backlog.push(class, payload);
                Ok(())
            }
            Err(PublishError::Busy) if class == Class::Result => Err(PublishError::Busy),
            Err(PublishError::Busy) => {
                self.set_mode(Mode::Backlogged);
                self.backlog.push(class, payload);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The link is up (again): replay from the start of what is stored.
    pub fn on_connected(&mut self) {
        self.cursor = 0;
        self.replay_in_flight = 0;
        self.refilled_at = Instant::now();
        self.allowance = 0.0;
        let next = if self.stats().is_empty() {
            Mode::Live
        } else {
            Mode::Draining
        };
        self.set_mode(next);
    }

    /// The link dropped: what was published and not acknowledged goes to the backlog,
    /// in the order it was made; replayed entries are still there.
    pub fn on_disconnected(&mut self) {
        let mut lost: Vec<(u64, Tracked)> = self.tracked.drain().collect();
        lost.sort_unstable_by_key(|(token, _)| *token);
        for (_, t) in lost {
            if let Tracked::Live { class, payload } = t {
                self.backlog.push(class, payload);
            }
        }
        self.replay_in_flight = 0;
        self.set_mode(Mode::Offline);
    }

    pub fn on_acked(&mut self, token: u64) {
        match self.tracked.remove(&token) {
            Some(Tracked::Replay { class, seq }) => {
                self.backlog.remove(class, seq);
                self.acked.insert(seq);
                self.replay_in_flight = self.replay_in_flight.saturating_sub(1);
                self.replayed_total += 1;
            }
            Some(Tracked::Live { .. }) | None => {}
        }
    }

    pub fn on_removed(&mut self, seqs: Removed) {
        for s in seqs {
            self.acked.remove(&s);
        }
    }

    /// Replay what the rate allows. Call on a short timer (tens of ms).
    pub fn tick(&mut self) {
        match self.mode {
            Mode::Offline => return,
            Mode::Live if self.stats().is_empty() => return,
            // Entries were stored while the link was saturated, or the link has room
            // again: try to drain.
            Mode::Live | Mode::Backlogged => self.set_mode(Mode::Draining),
            Mode::Draining => {}
        }
        let now = Instant::now();
        let rate = f64::from(self.limits.per_sec);
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = now;
        // A burst of at most a tenth of a second's worth (and at least one entry).
        let burst = (rate / 10.0).max(1.0);
        self.allowance = (self.allowance + rate * elapsed.as_secs_f64()).min(burst);
        let room = self.limits.in_flight.saturating_sub(self.replay_in_flight) as usize;
        let want = (self.allowance as usize).min(room);
        if want == 0 {
            return;
        }
        let batch = match self
            .backlog
            .read_after(self.cursor, want + self.acked.len())
        {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(%error, "cannot read the backlog; retrying");
                return;
            }
        };
        if batch.is_empty() {
            if self.stats().is_empty() && self.replay_in_flight == 0 {
                self.set_mode(Mode::Live);
            }
            return;
        }
        let mut sent = 0;
        for e in batch {
            if sent == want {
                break;
            }
            if self.acked.contains(&e.seq) {
                self.cursor = e.seq;
                continue;
            }
            let token = self.next_token;
            match self
                .link
                .publish_tracked(self.topics.get(e.class), e.payload, token)
            {
                Ok(()) => {
                    self.next_token += 1;
                    self.tracked.insert(
                        token,
                        Tracked::Replay {
                            class: e.class,
                            seq: e.seq,
                        },
                    );
                    self.cursor = e.seq;
                    self.replay_in_flight += 1;
                    self.allowance -= 1.0;
                    sent += 1;
                }
                Err(PublishError::Busy) => return,
                Err(PublishError::NotConnected) => {
                    self.set_mode(Mode::Offline);
                    return;
                }
                Err(error) => {
                    // Cannot ever be sent (the packet limit shrank since it was
                    // stored): drop it rather than block the backlog behind it.
                    tracing::warn!(%error, seq = e.seq, class = e.class.as_str(), "dropping unsendable backlog entry");
                    self.backlog.remove(e.class, e.seq);
                    self.cursor = e.seq;
                }
            }
        }
    }

    /// How long until [`tick`](Self::tick) has something to do; `None` when idle.
    pub fn next_tick(&self) -> Option<Duration> {
        match self.mode {
            Mode::Offline => None,
            Mode::Live if self.stats().is_empty() => None,
            _ => Some(Duration::from_millis(10)),
        }
    }
}
