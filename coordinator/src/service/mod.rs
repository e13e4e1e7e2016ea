//! `fog-coordinator serve`: subscribe to every node, keep the registry, publish the
//! coordinator's retained status (with the registry snapshot) under a Last Will.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fog_proto::{codec, Encoding, NodeId, NodeTopic, ParsedTopic, Topics, STATUS_TASKS_MAX};
use fog_rt::clock::now_ms;
use fog_rt::sdnotify::Notifier;
use fog_rt::systemd::SystemdReport;
use fog_rt::transport::{Announce, Link, LinkEvent, LinkOptions, Qos};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::batcher::Batcher;
use crate::clients::Gate;
use crate::config::CoordinatorConfig;
use crate::control::{Command, Watchers};
use crate::dispatch::{Dispatcher, Out};
use crate::home_assistant::HomeAssistant;
use crate::journal::{Durable, Journal, JournalConfig};
use crate::latency::{Turn, Turns};
use crate::profiles::Profiles;
use crate::registry::Registry;
use crate::scaling::Scaler;
use crate::signing::Posture;
use crate::trends::Trends;

mod commands;
mod publish;
mod snapshot;
use commands::load_drained;
use snapshot::status;
pub use snapshot::{empty_snapshot, Snapshot};

/// How stale the in-process view may be, when statuses are published less often.
const VIEW_EVERY: Duration = Duration::from_secs(1);
/// Tasks per list in the in-process view (the HTTP API pages through them); the
/// MQTT status has [`STATUS_TASKS_MAX`].
pub const VIEW_TASKS_MAX: usize = crate::dispatch::RECENT_KEPT;
/// How often silence rules are applied.
const LIVENESS_TICK: Duration = Duration::from_millis(100);
/// The shared subscription group of cluster mode's coordinators.
pub const SHARE_GROUP: &str = "fog-coordinators";
/// Largest MQTT packet the coordinator handles.
pub const MAX_PACKET_BYTES: usize = crate::broker::MAX_PAYLOAD_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Link(#[from] fog_rt::transport::LinkError),
    #[error("encoding coordinator status: {0}")]
    Encode(#[from] fog_proto::EncodeError),
    #[error("the mqtt link task ended unexpectedly")]
    LinkEnded,
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("node keys: {0}")]
    NodeKeys(#[from] crate::identity::store::StoreError),
    #[error("the coordinator's signing key: {0}")]
    Key(#[from] fog_rt::keys::KeyError),
    #[error("{0}; stopping (a restart registers again with a new epoch)")]
    Fenced(String),
}

/// After start and after every (re)subscription, how long a task whose kind no known
/// node runs waits for the retained birth records instead of being refused.
const WARM_UP: Duration = Duration::from_secs(5);

/// After a restart, final results stored this recently are sent again: the crash may
/// have come between storing one and publishing it.
const RESEND_AFTER_RESTART: Duration = Duration::from_secs(60);

/// Rate limit for "rejected message" warnings: one per reason per this period.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Run until `shutdown`; snapshots go to `view` after every status interval.
///
/// Says nothing to systemd: in-process coordinators (the demo, `bench --fleet`, tests)
/// must not speak for the process they run in. `fog-coordinator serve` uses
/// [`serve_with`].
pub async fn serve(
    config: CoordinatorConfig,
    shutdown: CancellationToken,
    view: watch::Sender<Snapshot>,
) -> Result<(), ServeError> {
    serve_with(config, shutdown, view, Notifier::default(), None).await
}

/// [`serve`], reporting to systemd through `notifier` (see docs/operations.md):
/// `READY=1` once the task journal is open and the broker link is started (connected
/// or still trying), a `STATUS=` line every few seconds, `WATCHDOG=1` from the main
/// loop as it turns, `STOPPING=1` when shutdown begins.
///
/// The main loop only routes: each event goes to one handler of `Server`.
pub async fn serve_with(
    config: CoordinatorConfig,
    shutdown: CancellationToken,
    view: watch::Sender<Snapshot>,
    notifier: Notifier,
    mut commands: Option<mpsc::Receiver<Command>>,
) -> Result<(), ServeError> {
    let (mut s, mut accepted_rx) = Server::start(&config, view, notifier)?;
    let mut t = Timers::new(config.status_interval);
    loop {
        let wake = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ev = s.link.next_event() => Wake::Link(ev),
            _ = t.flush.tick(), if !s.batcher.is_idle() => Wake::Flush,
            Some(d) = accepted_rx.recv() => Wake::Durable(d),
            _ = t.liveness.tick() => Wake::Liveness,
            _ = t.dispatch.tick(), if s.dispatch.in_flight() > 0 => Wake::Dispatch,
            _ = t.publish.tick() => Wake::Publish,
            _ = t.view.tick() => Wake::View,
            cmd = next_command(&mut commands) => match cmd {
                Some(c) => Wake::Command(c),
                // The API is gone: no more commands.
                None => {
                    commands = None;
                    continue;
                }
            },
            // Last, so it wins only when nothing above is ready (see crate::batcher).
            () = std::future::ready(()), if s.batcher.ready_to_flush() => Wake::Flush,
        };
        if !s.lease_ok() {
            // Cluster mode: the lease was not renewed in time (the database is slow or
            // away, or this process was paused). Act on nothing until it is, or stop
            // if the journal finds this coordinator fenced.
            if !s.wait_for_lease(&shutdown).await? {
                break;
            }
        }
        // Handler time only (not the wait): what delays the messages queued behind.
        let started = std::time::Instant::now();
        let turn = match wake {
            Wake::Link(ev) => s.on_link_event(ev, &mut t.publish)?,
            Wake::Flush => {
                s.batcher.flush(&s.link);
                Turn::Flush
            }
            Wake::Durable(d) => {
                s.on_durable(d)?;
                Turn::Durable
            }
            Wake::Liveness => {
                s.on_liveness_tick();
                Turn::Liveness
            }
            Wake::Dispatch => {
                s.on_dispatch_tick();
                Turn::Dispatch
            }
            Wake::Publish => {
                s.on_publish_tick()?;
                Turn::Publish
            }
            Wake::View => {
                s.send_view(None);
                Turn::View
            }
            Wake::Command(c) => {
                s.on_command(c);
                Turn::Command
            }
        };
        s.turned();
        s.turns.observe(turn, started.elapsed());
    }
    s.stop().await
}

/// What woke the main loop.
enum Wake {
    Link(Option<LinkEvent>),
    Flush,
    Durable(Durable),
    Liveness,
    Dispatch,
    Publish,
    View,
    Command(Command),
}

/// The next command from the HTTP API; never, without one.
async fn next_command(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The main loop's timers.
struct Timers {
    /// Batched output goes out within a millisecond while the loop stays busy (when it
    /// is idle, at once: the loop's last branch).
    flush: tokio::time::Interval,
    liveness: tokio::time::Interval,
    publish: tokio::time::Interval,
    /// Retries, timeouts and re-placement off lost nodes: timers are checked this often
    /// while tasks are in flight (a peek at a heap when nothing is due).
    dispatch: tokio::time::Interval,
    /// The in-process view (HTTP API, metrics) is fresh to this (and to every status).
    view: tokio::time::Interval,
}

impl Timers {
    fn new(status_interval: Duration) -> Timers {
        let every = |period| {
            let mut i = tokio::time::interval(period);
            i.set_missed_tick_behavior(MissedTickBehavior::Skip);
            i
        };
        Timers {
            flush: every(Duration::from_millis(1)),
            liveness: every(LIVENESS_TICK),
            publish: every(status_interval),
            dispatch: every(Duration::from_millis(10)),
            view: every(VIEW_EVERY.min(status_interval)),
        }
    }
}

/// What the main loop works on: the registry, the dispatcher and its journal, the
/// link and what goes out on it. Fields drop in order: the link first, then the
/// journal (waiting for its last commit), the view last, as the locals they were.
struct Server {
    link: Link,
    registry: Registry,
    dispatch: Dispatcher,
    journal: Option<Journal>,
    /// Final results to send again once subscribed (see Dispatcher::restore).
    resend: Vec<Out>,
    coordinator_id: NodeId,
    scaler: Scaler,
    scaling_topic: String,
    batcher: Batcher,
    /// Signing key id and lab-only switches, for the status.
    posture: Posture,
    status_topic: String,
    enc: Encoding,
    subscribed: bool,
    last_reject_log: HashMap<&'static str, Instant>,
    systemd: SystemdReport,
    view: watch::Sender<Snapshot>,
    /// Home Assistant discovery, when enabled, and the topic it announces itself on.
    home_assistant: Option<(HomeAssistant, String)>,
    /// The console's charts, fed from every view.
    trends: Arc<std::sync::RwLock<Trends>>,
    /// The task profiles, fed from the dispatcher's finished tasks with every view.
    profiles: Arc<std::sync::RwLock<Profiles>>,
    /// Where the drained nodes are kept (with a data dir).
    drained_file: Option<std::path::PathBuf>,
    /// Where the forgotten nodes are kept (with a data dir).
    forgotten_file: Option<std::path::PathBuf>,
    /// Ended tasks not yet in the profiles (a reader held them at the last view).
    pending_samples: Vec<crate::profiles::TaskSample>,
    /// Per node, tasks ended and their summed latency, not yet in the charts.
    node_tasks: HashMap<String, (u32, u64)>,
    /// HTTP submissions waiting for their answers.
    watchers: Watchers,
    /// How long the main loop's turns take, by kind.
    turns: Turns,
}

impl Server {
    /// Open the journal (restoring what it holds), start the link, tell systemd we are
    /// ready; also the channel on which the journal reports what became durable.
    fn start(
        config: &CoordinatorConfig,
        view: watch::Sender<Snapshot>,
        notifier: Notifier,
    ) -> Result<(Server, UnboundedReceiver<Durable>), ServeError> {
        let topics = Topics::new(config.prefix.clone());
        let mut registry = Registry::new(topics.clone(), config.liveness.clone());
        registry.set_node_keys(
            crate::identity::NodeKeys::new(
                &config.security.node_keys,
                config.security.nodes_dir.as_deref(),
                config.security.allow_unapproved_nodes,
            )?,
            config.security.max_clock_skew,
        );
        let forgotten_file = config.data_dir.as_ref().map(|d| d.join("forgotten"));
        if let Some(path) = &forgotten_file {
            registry.set_forgotten(crate::registry::Forgotten::load(path));
        }
        let mut dispatch = Dispatcher::new(config.placement.clone());
        let s = &config.security;
        dispatch.set_gate(Gate::new(
            s.allow_unsigned_submissions,
            s.clients.clone(),
            s.max_clock_skew,
            topics.clone(),
        ));
        let drained_file = config.data_dir.as_ref().map(|d| d.join("drained"));
        for node in load_drained(drained_file.as_deref()) {
            dispatch.set_drained(&node, true);
        }
        let (accepted_tx, accepted_rx) = tokio::sync::mpsc::unbounded_channel();
        let (journal, resend) = open_journal(config, &mut dispatch, accepted_tx)?;
        // The registry is empty until the retained birth records arrive.
        dispatch.warm_up(Instant::now() + WARM_UP);
        let status_topic = topics.coordinator_status();
        let (key, throwaway) = crate::signing::signing_key(&config.security)?;
        let posture = Posture::new(&config.security, &key, throwaway);
        let will = codec::encode(
            &status(
                &registry,
                &dispatch,
                &posture,
                false,
                "connection lost",
                STATUS_TASKS_MAX,
            ),
            config.encoding,
        )?;
        let home_assistant = config.home_assistant.enabled.then(|| {
            let ha = HomeAssistant::new(
                config.home_assistant.clone(),
                topics.clone(),
                config.encoding,
            );
            let topic = ha.status_topic();
            (ha, topic)
        });
        let ha_status = home_assistant.as_ref().map(|(_, t)| t.clone());
        let link = start_link(config, &topics, retained(&status_topic, will), ha_status)?;
        tracing::info!(broker = %config.broker.url(), prefix = %config.prefix, "fog-coordinator serving");
        // The journal is open and the link is trying: the coordinator can take work as
        // soon as the broker is there, and waiting for the broker here would only make
        // `systemctl start` hang while it is down.
        // The watchdog is pinged after turns of the main loop (an idle loop still turns:
        // the liveness timer fires every 100 ms), so a stuck loop gets restarted.
        let mut systemd = SystemdReport::new(notifier);
        systemd.ready(&systemd_status(&registry, &dispatch, false));
        let server = Server {
            link,
            registry,
            dispatch,
            journal,
            resend,
            coordinator_id: NodeId::new("coordinator").expect("a valid node id"),
            scaler: Scaler::new(config.scaling.clone()),
            scaling_topic: topics.scaling(),
            batcher: Batcher::new(topics, config.encoding, key),
            posture,
            status_topic,
            enc: config.encoding,
            subscribed: false,
            last_reject_log: HashMap::new(),
            systemd,
            view,
            home_assistant,
            trends: Default::default(),
            profiles: Default::default(),
            drained_file,
            forgotten_file,
            pending_samples: Vec::new(),
            node_tasks: HashMap::new(),
            watchers: Watchers::default(),
            turns: Turns::default(),
        };
        Ok((server, accepted_rx))
    }

    fn push_all(&mut self, msgs: Vec<Out>) {
        for m in msgs {
            if let Out::Reply { result, .. } = &m {
                // What comes here is a refusal at intake (never journaled), a repeat
                // of a finished task (from the journal, with one), or, without a
                // journal, a final result.
                let durable = self.dispatch.is_journaling()
                    && !matches!(result.outcome, fog_proto::Outcome::Rejected { .. });
                self.watchers.offer_result(result, durable);
            }
            self.batcher.push(m);
        }
    }

    fn on_link_event(
        &mut self,
        ev: Option<LinkEvent>,
        publish: &mut tokio::time::Interval,
    ) -> Result<Turn, ServeError> {
        let mut turn = Turn::Link;
        match ev {
            Some(LinkEvent::Message { topic, payload })
                if self
                    .home_assistant
                    .as_ref()
                    .is_some_and(|(_, t)| *t == topic) =>
            {
                if let Some((ha, _)) = &mut self.home_assistant {
                    ha.on_status(&payload);
                }
                turn = Turn::NodeMessage;
            }
            Some(LinkEvent::Message { topic, payload })
                if topic.ends_with("/results") || topic.ends_with("/tasks/submit") =>
            {
                self.on_task_message(&topic, &payload);
                turn = Turn::TaskMessage;
            }
            Some(LinkEvent::Message { topic, payload }) => {
                self.on_node_message(&topic, &payload);
                turn = Turn::NodeMessage;
            }
            // The coordinator makes no tracked publishes.
            Some(LinkEvent::Connected | LinkEvent::Acked(_) | LinkEvent::Unreachable) => {}
            Some(LinkEvent::Subscribed) => {
                // Online only once the broker routes node messages to us; publish
                // at once so `status` works right after a (re)connect.
                self.subscribed = true;
                publish.reset_immediately();
                self.on_subscribed()?;
            }
            Some(LinkEvent::Disconnected) => self.subscribed = false,
            None => return Err(ServeError::LinkEnded),
        }
        Ok(turn)
    }

    /// A submission or a node's results: to the dispatcher.
    fn on_task_message(&mut self, topic: &str, payload: &[u8]) {
        let topics = self.registry.topics();
        let msgs = match topics.parse(topic) {
            Ok(ParsedTopic::Submit) => {
                self.dispatch
                    .on_submit(&self.registry, payload, Instant::now())
            }
            Ok(ParsedTopic::Node(node, NodeTopic::Results))
                if self.registry.node_keys().is_open() =>
            {
                self.dispatch
                    .on_result(&self.registry, node.as_str(), payload, Instant::now())
            }
            Ok(ParsedTopic::Node(node, NodeTopic::Results)) => {
                match codec::decode::<fog_proto::TaskResults>(payload) {
                    Ok(mut list) => {
                        let now = Instant::now();
                        let id = node.to_owned();
                        if self.registry.believe_results(&id, &mut list, now) {
                            self.dispatch
                                .on_result_list(&self.registry, id.as_str(), list, now)
                        } else {
                            Vec::new()
                        }
                    }
                    // Counted as malformed by the dispatcher, as before.
                    Err(_) => self.dispatch.on_result(
                        &self.registry,
                        node.as_str(),
                        payload,
                        Instant::now(),
                    ),
                }
            }
            _ => Vec::new(),
        };
        self.push_all(msgs);
    }

    /// A node's status, heartbeat or reading: to the registry.
    fn on_node_message(&mut self, topic: &str, payload: &[u8]) {
        let now = Instant::now();
        let res = self.registry.ingest(topic, payload, now, now_ms());
        if let Ok(crate::registry::Ingested::Status { node, online }) = &res {
            let reason = self
                .registry
                .get(node.as_str())
                .map(|e| e.offline_reason.clone())
                .unwrap_or_default();
            tracing::info!(node.id = %node, online, %reason, "node status");
            // A Last Will: re-place that node's tasks now, not at the next tick. A
            // birth waits for the tick (10 ms): a fleet booting at hundreds of births a
            // second would otherwise make placement re-read every node for each one.
            if !online {
                let msgs = self.dispatch.tick(&self.registry, now);
                self.push_all(msgs);
            }
        }
        if let Err(error) = res {
            let reason = error.reason();
            let due = self
                .last_reject_log
                .get(reason)
                .is_none_or(|t| now - *t >= REJECT_LOG_EVERY);
            if due {
                self.last_reject_log.insert(reason, now);
                tracing::warn!(%topic, reason, %error, rejected_total = self.registry.counter("rejected_total"), "rejected message (further ones of this kind logged at most every 10 s)");
            } else {
                tracing::debug!(%topic, reason, %error, "rejected message");
            }
        }
    }

    /// (Re)subscribed: warm up again, send the results kept for resending, and the
    /// retained advice that may have been missed while disconnected.
    fn on_subscribed(&mut self) -> Result<(), ServeError> {
        self.dispatch.warm_up(Instant::now() + WARM_UP);
        let resend = std::mem::take(&mut self.resend);
        self.push_all(resend);
        if let Some(advice) = self.scaler.current() {
            let _ = self.link.publish(
                &self.scaling_topic,
                codec::encode(advice, self.enc)?,
                Qos::AtLeastOnce,
                true,
            );
        }
        Ok(())
    }

    /// Whether this coordinator may act for its tasks (cluster mode's lease).
    fn lease_ok(&self) -> bool {
        self.journal.as_ref().is_none_or(Journal::lease_ok)
    }

    /// Wait until the lease is renewed (true), shutdown (false) or the journal says
    /// this coordinator is fenced (the error).
    async fn wait_for_lease(&mut self, shutdown: &CancellationToken) -> Result<bool, ServeError> {
        tracing::warn!("cluster lease not renewed in time: acting on nothing until it is");
        loop {
            if let Some(reason) = self.journal.as_ref().and_then(Journal::fenced) {
                return Err(ServeError::Fenced(reason));
            }
            if self.lease_ok() {
                tracing::info!("cluster lease renewed: acting again");
                return Ok(true);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    /// Durable now: tell the client its task is accepted, or its result; or, in
    /// cluster mode, tasks adopted from a dead peer, or this coordinator fenced.
    fn on_durable(&mut self, d: Durable) -> Result<(), ServeError> {
        let out = match d {
            Durable::Fenced(reason) => return Err(ServeError::Fenced(reason)),
            Durable::Adopted(records) => {
                // As after a restart: the unfinished placed again with a raised
                // attempt, the recently finished answered again.
                let again = self.dispatch.restore(
                    records,
                    Instant::now(),
                    crate::journal::postgres::RESEND_ADOPTED,
                );
                self.push_all(again);
                return Ok(());
            }
            Durable::Accepted { id, reply_to } => Out::Reply {
                topic: reply_to,
                result: fog_proto::TaskResult {
                    id,
                    attempt: 1,
                    node: self.coordinator_id.clone(),
                    at_ms: now_ms(),
                    outcome: fog_proto::Outcome::Accepted,
                },
            },
            Durable::Finished { reply_to, result } => Out::Reply {
                topic: reply_to,
                result,
            },
        };
        if let Out::Reply { result, .. } = &out {
            self.watchers.offer_result(result, true);
        }
        self.batcher.push(out);
        Ok(())
    }

    fn on_liveness_tick(&mut self) {
        let now = Instant::now();
        for t in self.registry.tick(now) {
            tracing::info!(node.id = %t.node, from = t.from.as_str(), to = t.to.as_str(), reason = %t.reason, "node state changed");
        }
        let msgs = self.dispatch.tick(&self.registry, now);
        self.push_all(msgs);
    }

    fn on_dispatch_tick(&mut self) {
        let msgs = self.dispatch.tick(&self.registry, Instant::now());
        self.push_all(msgs);
    }

    /// What the dispatcher changed goes to the journal.
    fn write_journal(&mut self) {
        if let Some(j) = &self.journal {
            for op in self.dispatch.journal.drain(..) {
                j.write(op);
            }
        }
    }

    /// After each turn of the main loop: journal, watchdog.
    fn turned(&mut self) {
        self.write_journal();
        let connected = self.subscribed && self.link.is_connected();
        let (registry, dispatch) = (&self.registry, &self.dispatch);
        self.systemd
            .turned(|| systemd_status(registry, dispatch, connected));
    }

    /// Shutdown: the last journal writes, the retained offline status as the link
    /// closes; dropping the journal (at the end) waits for its last commit.
    async fn stop(mut self) -> Result<(), ServeError> {
        self.systemd
            .stopping("stopping: writing the journal, publishing the offline status");
        self.write_journal();
        let last = status(
            &self.registry,
            &self.dispatch,
            &self.posture,
            false,
            "shutdown",
            STATUS_TASKS_MAX,
        );
        let at_stop = status(
            &self.registry,
            &self.dispatch,
            &self.posture,
            true,
            "",
            VIEW_TASKS_MAX,
        );
        self.send_view(Some(at_stop));
        let goodbye = retained(&self.status_topic, codec::encode(&last, self.enc)?);
        self.link.close(Some(goodbye), Duration::from_secs(3)).await;
        Ok(())
    }
}

/// The coordinator's status as the broker keeps it: retained, at least once.
fn retained(topic: &str, payload: Vec<u8>) -> Announce {
    Announce {
        topic: topic.to_owned(),
        payload,
        qos: Qos::AtLeastOnce,
        retain: true,
    }
}

/// The task journal, if the config has a data dir: opened, its records restored into
/// `dispatch`; the final results to send again once subscribed.
fn open_journal(
    config: &CoordinatorConfig,
    dispatch: &mut Dispatcher,
    accepted_tx: UnboundedSender<Durable>,
) -> Result<(Option<Journal>, Vec<Out>), ServeError> {
    let (j, records) = if let Some(cluster) = &config.cluster {
        Journal::open_cluster(cluster, &JournalConfig::default(), accepted_tx)?
    } else if let Some(dir) = &config.data_dir {
        let (j, records) = Journal::open(dir, &JournalConfig::default(), accepted_tx)?;
        tracing::info!(dir = %dir.display(), "task journal open");
        (j, records)
    } else {
        drop(accepted_tx);
        return Ok((None, Vec::new()));
    };
    let unfinished = records.iter().filter(|r| r.result.is_none()).count();
    tracing::info!(
        unfinished,
        finished = records.len() - unfinished,
        "task journal read"
    );
    dispatch.enable_journal();
    let resend = dispatch.restore(records, Instant::now(), RESEND_AFTER_RESTART);
    Ok((Some(j), resend))
}

/// The link: subscribed to every node's status, heartbeats, readings and results and
/// to submissions, with `will` as its Last Will.
fn start_link(
    config: &CoordinatorConfig,
    topics: &Topics,
    will: Announce,
    home_assistant_status: Option<String>,
) -> Result<Link, ServeError> {
    let client_id = if config.broker.client_id.is_empty() {
        format!(
            "fog-coordinator-{}-{}",
            fog_rt::host::hostname(),
            std::process::id()
        )
    } else {
        config.broker.client_id.clone()
    };
    let mut subscriptions: Vec<(String, Qos)> = [
        NodeTopic::Status,
        NodeTopic::Heartbeat,
        NodeTopic::Metrics,
        NodeTopic::Results,
    ]
    .into_iter()
    .map(|k| (topics.all_nodes(k), Qos::AtLeastOnce))
    .collect();
    // In cluster mode the coordinators share the submissions: the broker hands each
    // to one of them (MQTT 5's shared subscriptions, which Mosquitto and rumqttd also
    // give MQTT 3.1.1 clients).
    let submit = match &config.cluster {
        Some(_) => format!("$share/{SHARE_GROUP}/{}", topics.submit()),
        None => topics.submit(),
    };
    subscriptions.push((submit, Qos::AtLeastOnce));
    subscriptions.extend(home_assistant_status.map(|t| (t, Qos::AtLeastOnce)));
    Ok(Link::start(LinkOptions {
        broker: config.broker.clone(),
        client_id,
        will: Some(will),
        on_connect: Vec::new(),
        subscriptions,
        max_packet_bytes: MAX_PACKET_BYTES,
        queue: 4096,
    })?)
}

/// The coordinator's `STATUS=` line from its registry and dispatcher.
fn systemd_status(registry: &Registry, dispatch: &Dispatcher, connected: bool) -> String {
    let (mut online, mut suspect) = (0, 0);
    for (_, e) in registry.nodes() {
        match e.state {
            fog_proto::NodeState::Online => online += 1,
            fog_proto::NodeState::Suspect => suspect += 1,
            fog_proto::NodeState::Offline => {}
        }
    }
    status_line(connected, online, suspect, dispatch.in_flight())
}

/// The `STATUS=` line: whether the coordinator is serving, and the two figures an
/// operator looks at first.
fn status_line(connected: bool, online: usize, suspect: usize, in_flight: usize) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let agents = plural(online, "agent online", "agents online");
    let suspect = if suspect > 0 {
        format!(" ({suspect} suspect)")
    } else {
        String::new()
    };
    let tasks = plural(in_flight, "task in flight", "tasks in flight");
    if connected {
        format!("serving: {agents}{suspect}, {tasks}")
    } else {
        format!("waiting for the broker: {agents}{suspect}, {tasks}")
    }
}

#[cfg(test)]
mod tests {
    use super::status_line;

    #[test]
    fn status_line_reads_like_a_sentence() {
        assert_eq!(
            status_line(true, 3, 0, 12),
            "serving: 3 agents online, 12 tasks in flight"
        );
        assert_eq!(
            status_line(true, 1, 2, 1),
            "serving: 1 agent online (2 suspect), 1 task in flight"
        );
        assert_eq!(
            status_line(false, 0, 0, 0),
            "waiting for the broker: 0 agents online, 0 tasks in flight"
        );
    }
}
