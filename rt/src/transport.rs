//! The MQTT link, for the agent, the coordinator and the CLI client: the only module
//! in fog that touches rumqttc (the coordinator's embedded broker is rumqttd).
//!
//! A [`Link`] owns a rumqttc event loop polled in its own task (awaiting requests while
//! the loop is not polled deadlocks rumqttc). On every ConnAck it subscribes again and
//! re-publishes its announcements (the retained birth record), so a broker restart
//! needs nothing from the caller. Failed connections back off with full jitter; the
//! first failure is logged as a warning, later ones only every minute, so a long outage
//! does not flood the journal. Publishing never blocks: while disconnected it refuses
//! with [`PublishError::NotConnected`] and the caller counts the loss or stores it.
//!
//! A publish can be *tracked* ([`Link::publish_tracked`]): the owner gets
//! [`LinkEvent::Acked`] with its token once the broker's PUBACK arrived. rumqttc reports
//! a packet id only as `Outgoing::Publish(pkid)`, in the order requests were queued, so
//! the link keeps one FIFO entry per queued publish (tracked or not) and pairs them up.
//! On a connection error every unacknowledged tracked publish is simply forgotten: with
//! a clean session rumqttc drops its pending packets on reconnect, so the owner (which
//! sees [`LinkEvent::Disconnected`]) must treat every token it has not seen acked as not
//! delivered, and send it again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::broker::BrokerConfig;

pub use rumqttc::QoS as Qos;

/// A message to publish: on connect, as the Last Will, or on close.
#[derive(Debug, Clone)]
pub struct Announce {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

/// What the link tells its owner.
#[derive(Debug)]
pub enum LinkEvent {
    Connected,
    /// The broker acknowledged the subscriptions made on (re)connect: from now on,
    /// messages on them reach us.
    Subscribed,
    /// Every tracked publish not yet acked when this arrives will never be.
    Disconnected,
    /// The broker acknowledged the tracked publish with this token.
    Acked(u64),
    /// A connection attempt failed after being up or at start: sent once per outage,
    /// not per retry (so the owner can report readiness without waiting for a broker).
    Unreachable,
    Message {
        topic: String,
        payload: Bytes,
    },
}

pub struct LinkOptions {
    pub broker: BrokerConfig,
    pub client_id: String,
    pub will: Option<Announce>,
    pub on_connect: Vec<Announce>,
    pub subscriptions: Vec<(String, QoS)>,
    /// Largest MQTT packet sent. Incoming packets are accepted up to this or
    /// [`crate::limits::MAX_PACKET_BYTES`], whichever is larger.
    pub max_packet_bytes: usize,
    /// Capacity of rumqttc's request channel and of the event channel to the owner.
    pub queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Config loading refuses this already; checked again here so that no code path
    /// that builds a `BrokerConfig` by hand can send a password in the clear.
    #[error("refusing to send the broker password over plain {url}; use mqtts:// or set broker.allow_plaintext_password = true")]
    CleartextPassword { url: String },
    #[error("reading {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("message of {len} bytes exceeds the {max}-byte packet limit")]
    TooLarge { len: usize, max: usize },
    #[error("request queue to the broker is full")]
    Busy,
}

/// Counters shared between the link task and its owner.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub connects_total: AtomicU64,
    pub connect_failures_total: AtomicU64,
    pub dropped_total: AtomicU64,
}

/// One entry per publish queued to rumqttc, in queue order: the token of a tracked one.
/// Guarded together with the connected flag, so a publish is either queued on a live
/// connection with its entry, or refused.
#[derive(Default)]
struct Order {
    queued: VecDeque<Option<u64>>,
}

type SharedOrder = Arc<Mutex<Order>>;

/// A lock that outlives a panic elsewhere: the data behind it stays consistent (each
/// holder makes one small change).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Link {
    client: AsyncClient,
    order: SharedOrder,
    connected: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    events: mpsc::Receiver<LinkEvent>,
    close_tx: Option<oneshot::Sender<Option<Announce>>>,
    task: JoinHandle<()>,
    max_packet_bytes: usize,
    /// Shared with the driver, which publishes these on every connection.
    on_connect: Arc<Mutex<Vec<Announce>>>,
}

fn read_file(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|source| LinkError::TlsFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// rumqttc options for a broker (also used by the coordinator and the CLI).
pub fn mqtt_options(
    broker: &BrokerConfig,
    client_id: &str,
    max_packet_bytes: usize,
) -> Result<MqttOptions, LinkError> {
    if broker.leaks_password() {
        return Err(LinkError::CleartextPassword { url: broker.url() });
    }
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(broker.keep_alive);
    o.set_clean_session(true);
    // Incoming: never below the ceiling the broker enforces (`limits`), so whatever the
    // broker forwards is read and then refused by its decoder's own limit, not a
    // dropped connection (rumqttc kills the link on an oversized packet).
    o.set_max_packet_size(
        max_packet_bytes.max(crate::limits::MAX_PACKET_BYTES),
        max_packet_bytes,
    );
    if let Some((u, p)) = &broker.credentials {
        o.set_credentials(u.clone(), p.clone());
    }
    if let Some(tls) = &broker.tls {
        let ca = read_file("CA file", &tls.ca_file)?;
        let client_auth = match &tls.client_cert {
            Some((cert, key)) => Some((
                read_file("client certificate", cert)?,
                read_file("client key", key)?,
            )),
            None => None,
        };
        o.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

impl Link {
    /// Start connecting in the background. Returns at once; [`LinkEvent::Connected`]
    /// arrives when the broker accepts.
    pub fn start(opts: LinkOptions) -> Result<Link, LinkError> {
        let mut mqtt = mqtt_options(&opts.broker, &opts.client_id, opts.max_packet_bytes)?;
        if let Some(w) = &opts.will {
            mqtt.set_last_will(LastWill::new(
                w.topic.clone(),
                w.payload.clone(),
                w.qos,
                w.retain,
            ));
        }
        let queue = opts.queue.max(8);
        let (client, mut eventloop) = AsyncClient::new(mqtt, queue);
        // Small publishes (one ack, one result) go out at once. With Nagle's algorithm
        // the kernel holds a small write while the previous segment is unacknowledged,
        // and the broker's delayed ACK comes up to 40 ms later: once per hop of a task's
        // round trip. Throughput does not need Nagle: the link batches lists itself.
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (events_tx, events) = mpsc::channel(queue);
        let (close_tx, close_rx) = oneshot::channel();
        let connected = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LinkStats::default());
        let order = SharedOrder::default();
        let on_connect = Arc::new(Mutex::new(opts.on_connect));
        let driver = Driver {
            client: client.clone(),
            order: order.clone(),
            acks: HashMap::new(),
            eventloop,
            connected: connected.clone(),
            stats: stats.clone(),
            events: events_tx,
            on_connect: on_connect.clone(),
            subscriptions: opts.subscriptions,
            backoff: Backoff::new(opts.broker.reconnect_initial, opts.broker.reconnect_max),
            url: opts.broker.url(),
            up_since: None,
        };
        let task = tokio::spawn(driver.run(close_rx));
        Ok(Link {
            client,
            order,
            connected,
            stats,
            events,
            close_tx: Some(close_tx),
            task,
            max_packet_bytes: opts.max_packet_bytes,
            on_connect,
        })
    }

    /// Replace what is published on every (re)connection from the next one on (a new
    /// birth record after a config reload). Publishing it now is the caller's part.
    pub fn set_on_connect(&self, list: Vec<Announce>) {
        *lock(&self.on_connect) = list;
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Count a message the caller gave up on.
    pub fn count_dropped(&self) {
        self.stats.dropped_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Next event; `None` once the link task has ended.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// Queue a publish without waiting. Refused while disconnected, when oversized
    /// (rumqttc would accept it and then drop the connection), or when the request
    /// queue is full; the caller decides whether to retry or count it as dropped
    /// ([`LinkStats::dropped_total`]).
    pub fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), PublishError> {
        self.queue(topic, payload, qos, retain, None)
    }

    /// Publish at QoS 1 and report [`LinkEvent::Acked`]`(token)` when the broker has
    /// acknowledged it. Tokens are the caller's; they should be unique among the ones
    /// not yet acked.
    pub fn publish_tracked(
        &self,
        topic: &str,
        payload: Vec<u8>,
        token: u64,
    ) -> Result<(), PublishError> {
        self.queue(topic, payload, QoS::AtLeastOnce, false, Some(token))
    }

    fn queue(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        token: Option<u64>,
    ) -> Result<(), PublishError> {
        // Fixed header (<=5) + topic length prefix (2) + topic + packet id (2).
        let len = payload.len() + topic.len() + 9;
        if len > self.max_packet_bytes {
            return Err(PublishError::TooLarge {
                len,
                max: self.max_packet_bytes,
            });
        }
        let mut order = lock(&self.order);
        if !self.is_connected() {
            return Err(PublishError::NotConnected);
        }
        self.client
            .try_publish(topic, qos, retain, payload)
            .map_err(|_| PublishError::Busy)?;
        order.queued.push_back(token);
        Ok(())
    }

    /// Publish `last` (if connected), disconnect cleanly so the broker discards the
    /// Last Will, and wait (bounded) for that to reach the socket.
    pub async fn close(mut self, last: Option<Announce>, wait: Duration) {
        if let Some(tx) = self.close_tx.take() {
            let _ = tx.send(last);
        }
        if tokio::time::timeout(wait, &mut self.task).await.is_err() {
            tracing::warn!(timeout = ?wait, "mqtt link did not close in time; aborting it");
            self.task.abort();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Driver {
    client: AsyncClient,
    order: SharedOrder,
    /// Packet id -> token of tracked publishes sent and not yet acked.
    acks: HashMap<u16, u64>,
    eventloop: EventLoop,
    connected: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    events: mpsc::Sender<LinkEvent>,
    on_connect: Arc<Mutex<Vec<Announce>>>,
    subscriptions: Vec<(String, QoS)>,
    backoff: Backoff,
    url: String,
    /// When the current connection was accepted.
    up_since: Option<Instant>,
}

/// A connection that lasted this long resets the reconnect backoff when it ends; a
/// shorter one does not, so a connection the broker or a poison message kills right
/// after every ConnAck (a retained oversized message on a subscribed topic comes back
/// on every subscribe) backs off to `reconnect_max` instead of reconnecting in a
/// tight loop.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How often a continuing outage is logged at WARN.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

impl Driver {
    async fn run(mut self, mut close_rx: oneshot::Receiver<Option<Announce>>) {
        let mut down_since: Option<Instant> = None;
        let mut last_warn: Option<Instant> = None;
        loop {
            let polled = tokio::select! {
                biased;
                last = &mut close_rx => {
                    self.close(last.ok().flatten()).await;
                    return;
                }
                polled = self.eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    self.connected.store(true, Ordering::Relaxed);
                    self.stats.connects_total.fetch_add(1, Ordering::Relaxed);
                    if let Some(since) = down_since.take() {
                        tracing::info!(
                            broker = %self.url,
                            attempts = self.backoff.attempts(),
                            down_secs = since.elapsed().as_secs_f32(),
                            "reconnected to broker"
                        );
                    } else {
                        tracing::info!(broker = %self.url, "connected to broker");
                    }
                    self.up_since = Some(Instant::now());
                    last_warn = None;
                    self.announce();
                    let _ = self.events.send(LinkEvent::Connected).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = self.events.send(LinkEvent::Subscribed).await;
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(Some(token)) = lock(&self.order).queued.pop_front() {
                        self.acks.insert(pkid, token);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(token) = self.acks.remove(&ack.pkid) {
                        if self.events.send(LinkEvent::Acked(token)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ev = LinkEvent::Message {
                        topic: p.topic,
                        payload: p.payload,
                    };
                    // Backpressure: the owner is slow, so stop reading the socket.
                    if self.events.send(ev).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    let was_connected = self.connection_ended(&error);
                    if was_connected {
                        tracing::warn!(broker = %self.url, %error, "lost connection to broker");
                        let _ = self.events.send(LinkEvent::Disconnected).await;
                    }
                    let now = Instant::now();
                    if down_since.is_none() {
                        let _ = self.events.send(LinkEvent::Unreachable).await;
                    }
                    let since = *down_since.get_or_insert(now);
                    let delay = self.backoff.next_delay();
                    if last_warn.is_none_or(|t| now.duration_since(t) >= OUTAGE_LOG_EVERY) {
                        last_warn = Some(now);
                        tracing::warn!(
                            broker = %self.url,
                            %error,
                            attempts = self.backoff.attempts(),
                            down_secs = since.elapsed().as_secs(),
                            retry_in_ms = delay.as_millis() as u64,
                            "cannot reach broker; retrying with backoff"
                        );
                    } else {
                        tracing::debug!(broker = %self.url, %error, retry_in_ms = delay.as_millis() as u64, "reconnect failed");
                    }
                    tokio::select! {
                        biased;
                        last = &mut close_rx => {
                            // Not connected: nothing to flush, the will already stands.
                            drop(last);
                            return;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Book a failed poll: count it, forget what was unacknowledged, reset the backoff
    /// only after a stable connection, say so if an oversized packet ended it.
    /// Returns whether the link was up.
    fn connection_ended(&mut self, error: &rumqttc::ConnectionError) -> bool {
        self.stats
            .connect_failures_total
            .fetch_add(1, Ordering::Relaxed);
        let was_connected = self.forget_unsent();
        if self
            .up_since
            .take()
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER)
        {
            self.backoff.reset();
        }
        if let Some(len) = oversized(error) {
            tracing::error!(
                broker = %self.url,
                packet.bytes = len,
                limit.bytes = crate::limits::MAX_PACKET_BYTES,
                "the broker sent a packet larger than fog accepts, which ends the connection; \
                 if it is retained it comes back on every reconnect: clear it \
                 (mosquitto_pub -r -n -t TOPIC) and cap the broker's max_packet_size \
                 (fog-coordinator broker-config)"
            );
        }
        was_connected
    }

    /// Mark the link down and forget every publish not yet acknowledged: rumqttc drops
    /// them on a clean-session reconnect, and so must our bookkeeping, or the FIFO would
    /// pair later packet ids with stale tokens. Returns whether the link was up.
    fn forget_unsent(&mut self) -> bool {
        let mut order = lock(&self.order);
        let was = self.connected.swap(false, Ordering::Relaxed);
        // Requests queued after the error was seen (multi-threaded owners) go to
        // rumqttc's pending list, which the next clean-session ConnAck clears.
        self.eventloop.clean();
        // Events of the dead connection still buffered (e.g. the `Outgoing::Publish`
        // of the write that failed) must not be read as the new connection's.
        self.eventloop.state.events.clear();
        order.queued.clear();
        self.acks.clear();
        was
    }

    fn announce(&self) {
        let on_connect = lock(&self.on_connect).clone();
        let clears = |a: &&Announce| a.retain && a.payload.is_empty();
        // Clears first: sent before the SUBSCRIBE on the same connection, an empty
        // retained message removes what is retained there before the subscription
        // would deliver it (a poison message on our own topic is gone for good).
        self.publish_announcements(on_connect.iter().filter(clears));
        if !self.subscriptions.is_empty() {
            let subs = self
                .subscriptions
                .iter()
                .map(|(t, q)| rumqttc::SubscribeFilter::new(t.clone(), *q));
            if let Err(error) = self.client.try_subscribe_many(subs) {
                tracing::error!(%error, "could not queue subscriptions");
            }
        }
        self.publish_announcements(on_connect.iter().filter(|a| !clears(a)));
    }

    fn publish_announcements<'a>(&self, list: impl Iterator<Item = &'a Announce>) {
        let mut order = lock(&self.order);
        for a in list {
            match self
                .client
                .try_publish(a.topic.clone(), a.qos, a.retain, a.payload.clone())
            {
                Ok(()) => order.queued.push_back(None),
                Err(error) => {
                    tracing::error!(topic = %a.topic, %error, "could not queue announcement")
                }
            }
        }
    }

    async fn close(mut self, last: Option<Announce>) {
        if !self.connected.load(Ordering::Relaxed) {
            return;
        }
        if let Some(a) = last {
            let _ = self.client.try_publish(a.topic, a.qos, a.retain, a.payload);
        }
        let _ = self.client.try_disconnect();
        // Drive the loop until the DISCONNECT has been written.
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.connected.store(false, Ordering::Relaxed);
    }
}

/// The size of the packet that ended the connection, if that is what ended it.
fn oversized(error: &rumqttc::ConnectionError) -> Option<usize> {
    match error {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(len),
        )) => Some(*len),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_built_config_cannot_send_a_password_in_the_clear() {
        let plain = BrokerConfig::plain("mqtt://127.0.0.1:1883").expect("url");
        let leaky = BrokerConfig {
            credentials: Some(("fog".into(), "s3cret".into())),
            ..plain.clone()
        };
        let e = mqtt_options(&leaky, "t", 1024).expect_err("refused");
        assert!(matches!(e, LinkError::CleartextPassword { .. }), "{e}");
        assert!(e.to_string().contains("allow_plaintext_password"), "{e}");
        // Allowed explicitly, or no password at all: fine.
        let allowed = BrokerConfig {
            allow_plaintext_password: true,
            ..leaky
        };
        assert!(mqtt_options(&allowed, "t", 1024).is_ok());
        let username_only = BrokerConfig {
            credentials: Some(("fog".into(), String::new())),
            ..plain
        };
        assert!(mqtt_options(&username_only, "t", 1024).is_ok());
    }
}
