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

/// What the forwarder needs of the MQTT link: a trait so the state machine is tested
/// without a broker. [`Link`] is the real one.
pub trait Uplink {
    /// Publish at QoS 1; the link reports `Acked(token)` after the PUBACK.
    fn publish_tracked(
        &self,
        topic: &str,
        payload: Vec<u8>,
        token: u64,
    ) -> Result<(), PublishError>;
}

impl Uplink for Link {
    fn publish_tracked(
        &self,
        topic: &str,
        payload: Vec<u8>,
        token: u64,
    ) -> Result<(), PublishError> {
        Link::publish_tracked(self, topic, payload, token)
    }
}

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

pub struct Forwarder<L = Link> {
    link: L,
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

impl<L: Uplink> Forwarder<L> {
    pub fn new(
        link: L,
        backlog: Backlog,
        topics: ClassTopics,
        limits: ReplayLimits,
    ) -> Forwarder<L> {
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

    pub fn link(&self) -> &L {
        &self.link
    }

    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// A new link after the old one's task died (supervision): what the old one had
    /// not got acknowledged goes to the backlog; the new one reports Connected.
    pub fn replace_link(&mut self, link: L) {
        self.on_disconnected();
        self.link = link;
    }

    /// Give the link back for a clean close (the backlog flushes as it drops).
    pub fn into_link(self) -> L {
        self.link
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn stats(&self) -> &BacklogStats {
        self.backlog.stats()
    }

    /// Messages sent to the backlog since start (tests: exact, where `stats().len()`
    /// races the backlog's writer thread).
    #[cfg(test)]
    pub(crate) fn backlogged_total(&self) -> u64 {
        self.backlog.pushed_since_open()
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

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::config::StoreConfig;
    use crate::store::RedbStore;

    /// A link that records what it was given and can be down or saturated.
    #[derive(Default)]
    struct FakeLink {
        down: Cell<bool>,
        busy: Cell<bool>,
        sent: RefCell<Vec<(String, Vec<u8>, u64)>>,
    }

    impl Uplink for FakeLink {
        fn publish_tracked(
            &self,
            topic: &str,
            payload: Vec<u8>,
            token: u64,
        ) -> Result<(), PublishError> {
            if self.down.get() {
                return Err(PublishError::NotConnected);
            }
            if self.busy.get() {
                return Err(PublishError::Busy);
            }
            self.sent
                .borrow_mut()
                .push((topic.to_owned(), payload, token));
            Ok(())
        }
    }

    struct Rig {
        fwd: Forwarder<FakeLink>,
        removed: tokio::sync::mpsc::UnboundedReceiver<Removed>,
        _store: RedbStore<u32>,
        _dir: tempfile::TempDir,
    }

    fn rig(per_sec: u32, in_flight: u32) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig {
            result_retention: Duration::from_secs(60),
            result_retention_count: 10,
            commit_interval: Duration::from_millis(1),
            max_backlog_bytes: 1 << 20,
            replay_per_sec: per_sec,
            replay_in_flight: in_flight,
            rerun_after_restart: false,
        };
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (store, _) = RedbStore::open(dir.path(), &cfg, tx).expect("store");
        let (rtx, removed) = tokio::sync::mpsc::unbounded_channel();
        let backlog = store.backlog(&cfg, rtx).expect("backlog");
        let fwd = Forwarder::new(
            FakeLink::default(),
            backlog,
            ClassTopics {
                readings: "m".into(),
                alerts: "a".into(),
                results: "r".into(),
            },
            ReplayLimits { per_sec, in_flight },
        );
        Rig {
            fwd,
            removed,
            _store: store,
            _dir: dir,
        }
    }

    impl Rig {
        /// Wait (real time, bounded) until the backlog writer has committed.
        fn settle(&mut self) {
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while self.fwd.stats().queued() > 0 {
                assert!(std::time::Instant::now() < until, "backlog writer stuck");
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        /// Ack everything sent so far and apply the durable removals.
        fn ack_all(&mut self) {
            let tokens: Vec<u64> = self.fwd.link().sent.borrow().iter().map(|s| s.2).collect();
            for t in tokens {
                self.fwd.on_acked(t);
            }
            self.drain_removed();
        }

        fn drain_removed(&mut self) {
            let until = std::time::Instant::now() + Duration::from_secs(10);
            // Until every acknowledged entry's removal is durable.
            while !self.fwd.acked.is_empty() && std::time::Instant::now() < until {
                while let Ok(r) = self.removed.try_recv() {
                    self.fwd.on_removed(r);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            while let Ok(r) = self.removed.try_recv() {
                self.fwd.on_removed(r);
            }
        }

        fn sent(&self) -> Vec<(String, Vec<u8>)> {
            self.fwd
                .link()
                .sent
                .borrow()
                .iter()
                .map(|(t, p, _)| (t.clone(), p.clone()))
                .collect()
        }

        /// Tick every 10 ms of paused time for `d`.
        async fn run_for(&mut self, d: Duration) {
            let steps = d.as_millis() / 10;
            for _ in 0..steps {
                tokio::time::advance(Duration::from_millis(10)).await;
                self.fwd.tick();
            }
        }
    }

    fn m(s: &str) -> (String, Vec<u8>) {
        ("m".to_owned(), s.as_bytes().to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn offline_messages_wait_on_disk_and_replay_in_order_once_connected() {
        let mut r = rig(100, 32);
        assert_eq!(r.fwd.mode(), Mode::Offline);
        r.fwd
            .publish(Class::Reading, b"r1".to_vec())
            .expect("stored");
        r.fwd.publish(Class::Alert, b"a1".to_vec()).expect("stored");
        r.fwd
            .publish(Class::Result, b"x1".to_vec())
            .expect("stored");
        r.fwd
            .publish(Class::Reading, b"r2".to_vec())
            .expect("stored");
        r.settle();
        assert!(r.sent().is_empty());
        assert_eq!(r.fwd.stats().len(), 4);
        r.fwd.on_connected();
        assert_eq!(r.fwd.mode(), Mode::Draining);
        // A live reading goes out at once, ahead of the replay.
        r.fwd
            .publish(Class::Reading, b"live".to_vec())
            .expect("sent");
        r.run_for(Duration::from_millis(200)).await;
        let topics: Vec<(String, Vec<u8>)> = r.sent();
        assert_eq!(
            topics,
            [
                m("live"),
                m("r1"),
                ("a".into(), b"a1".to_vec()),
                ("r".into(), b"x1".to_vec()),
                m("r2")
            ]
        );
        r.ack_all();
        assert_eq!(
            r.fwd.stats().len(),
            0,
            "acknowledged entries leave the store"
        );
        assert_eq!(r.fwd.replayed_total(), 4);
        r.run_for(Duration::from_millis(20)).await;
        assert_eq!(r.fwd.mode(), Mode::Live);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_keeps_to_its_rate_and_its_in_flight_limit() {
        let mut r = rig(50, 1000);
        for i in 0..200 {
            r.fwd
                .publish(Class::Reading, format!("r{i}").into_bytes())
                .expect("stored");
        }
        r.settle();
        r.fwd.on_connected();
        r.run_for(Duration::from_secs(2)).await;
        let n = r.sent().len();
        assert!((95..=106).contains(&n), "about 50/s for 2 s: {n}");
        // Nothing acknowledged: the in-flight cap holds the replay.
        let mut r = rig(1000, 8);
        for i in 0..100 {
            r.fwd
                .publish(Class::Reading, format!("r{i}").into_bytes())
                .expect("stored");
        }
        r.settle();
        r.fwd.on_connected();
        r.run_for(Duration::from_secs(1)).await;
        assert_eq!(r.sent().len(), 8);
        r.ack_all();
        r.run_for(Duration::from_millis(100)).await;
        assert_eq!(r.sent().len(), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drop_moves_unacknowledged_live_messages_to_the_backlog_in_order() {
        let mut r = rig(100, 32);
        r.fwd.on_connected();
        assert_eq!(r.fwd.mode(), Mode::Live);
        for p in ["r1", "r2", "r3"] {
            r.fwd
                .publish(Class::Reading, p.as_bytes().to_vec())
                .expect("sent");
        }
        let first = r.fwd.link().sent.borrow()[0].2;
        r.fwd.on_acked(first);
        r.fwd.link().down.set(true);
        r.fwd.on_disconnected();
        assert_eq!(r.fwd.mode(), Mode::Offline);
        r.fwd
            .publish(Class::Reading, b"r4".to_vec())
            .expect("stored");
        r.settle();
        assert_eq!(r.fwd.stats().len(), 3, "r2, r3 (unacked) and r4");
        r.fwd.link().sent.borrow_mut().clear();
        r.fwd.link().down.set(false);
        r.fwd.on_connected();
        r.run_for(Duration::from_millis(100)).await;
        assert_eq!(r.sent(), [m("r2"), m("r3"), m("r4")]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledged_entry_is_not_replayed_again_while_its_removal_is_pending() {
        let mut r = rig(100, 32);
        for p in ["r1", "r2"] {
            r.fwd
                .publish(Class::Reading, p.as_bytes().to_vec())
                .expect("stored");
        }
        r.settle();
        r.fwd.on_connected();
        r.run_for(Duration::from_millis(50)).await;
        assert_eq!(r.sent().len(), 2);
        let first = r.fwd.link().sent.borrow()[0].2;
        r.fwd.on_acked(first);
        // The link drops and comes back before the removal is reported durable.
        r.fwd.on_disconnected();
        r.fwd.link().sent.borrow_mut().clear();
        r.fwd.on_connected();
        r.run_for(Duration::from_millis(50)).await;
        assert_eq!(r.sent(), [m("r2")], "r1 was acknowledged: never sent twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturated_link_backlogs_readings_but_hands_results_back() {
        let mut r = rig(100, 32);
        r.fwd.on_connected();
        r.fwd.link().busy.set(true);
        r.fwd
            .publish(Class::Reading, b"r1".to_vec())
            .expect("stored");
        assert_eq!(r.fwd.mode(), Mode::Backlogged);
        assert!(matches!(
            r.fwd.publish(Class::Result, b"x".to_vec()),
            Err(PublishError::Busy)
        ));
        r.fwd
            .publish(Class::Reading, b"r2".to_vec())
            .expect("stored");
        r.settle();
        r.fwd.link().busy.set(false);
        r.run_for(Duration::from_millis(50)).await;
        assert_eq!(r.sent(), [m("r1"), m("r2")]);
        assert_eq!(r.fwd.mode(), Mode::Draining);
        r.ack_all();
        r.run_for(Duration::from_millis(20)).await;
        assert_eq!(r.fwd.mode(), Mode::Live);
    }
}
