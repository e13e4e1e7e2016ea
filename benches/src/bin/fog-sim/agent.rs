//! One simulated agent: an MQTT 3.1.1 session written by hand over rumqttc's packet
//! types (no event loop, no request channel, no inflight table: about 2 KB of buffers
//! and a task), speaking fog's real payloads: a retained birth record with a Last
//! Will, heartbeats, readings, and a synthetic result for every task it is sent.
//! What the broker or the coordinator does with them is the real thing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fog_proto::{
    codec, Encoding, Heartbeat, NodeId, NodeTopic, Outcome, Status, TaskAssignments, TaskResult,
    TaskResults, Topics,
};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Disconnect, LastWill, Packet, PingReq, PubAck, Publish,
    Subscribe,
};
use rumqttc::mqttbytes::{Error as MqttError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Largest packet read (an assignment list of a few hundred small tasks).
const MAX_PACKET: usize = 1 << 20;

/// What every simulated agent does, and how often.
#[derive(Debug, Clone)]
pub struct Plan {
    pub broker: SocketAddr,
    pub topics: Topics,
    pub encoding: Encoding,
    pub heartbeat: Duration,
    pub reading: Duration,
    pub keep_alive_secs: u16,
}

/// Counts over every simulated agent.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicU64,
    pub sessions: AtomicU64,
    pub heartbeats: AtomicU64,
    pub readings: AtomicU64,
    pub tasks: AtomicU64,
    pub acks: AtomicU64,
    pub errors: AtomicU64,
}

impl Stats {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("mqtt: {0:?}")]
    Mqtt(MqttError),
    #[error("encoding: {0}")]
    Encode(#[from] fog_proto::EncodeError),
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("the broker closed the connection")]
    Closed,
}

impl From<MqttError> for SimError {
    fn from(e: MqttError) -> Self {
        SimError::Mqtt(e)
    }
}

/// Run agent `id` until `stop`, reconnecting (after 1 to 3 s) whenever the session ends.
pub async fn run(id: NodeId, plan: Arc<Plan>, stats: Arc<Stats>, stop: CancellationToken) {
    loop {
        let ended = tokio::select! {
            r = Session::open(&id, &plan, &stats) => match r {
                Ok(mut s) => {
                    Stats::add(&stats.sessions);
                    stats.connected.fetch_add(1, Ordering::Relaxed);
                    let r = s.serve(&stop).await;
                    stats.connected.fetch_sub(1, Ordering::Relaxed);
                    r
                }
                Err(e) => Err(e),
            },
            () = stop.cancelled() => return,
        };
        match ended {
            Ok(()) => return,
            Err(error) => {
                Stats::add(&stats.errors);
                tracing::debug!(node.id = %id, %error, "session ended");
            }
        }
        let pause = Duration::from_millis(1000 + fastrand::u64(..2000));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return,
        }
    }
}

struct Session<'a> {
    id: &'a NodeId,
    plan: &'a Plan,
    stats: &'a Stats,
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pkid: u16,
    seq: u64,
    started_ms: u64,
}

impl<'a> Session<'a> {
    /// Connect, with a retained offline Last Will; subscribe to its tasks; announce
    /// its birth, retained.
    async fn open(id: &'a NodeId, plan: &'a Plan, stats: &'a Stats) -> Result<Self, SimError> {
        let stream = TcpStream::connect(plan.broker).await?;
        stream.set_nodelay(true)?;
        let mut s = Session {
            id,
            plan,
            stats,
            stream,
            rbuf: BytesMut::with_capacity(1024),
            wbuf: BytesMut::with_capacity(1024),
            pkid: 0,
            seq: 0,
            started_ms: fog_rt::clock::now_ms(),
        };
        let status = plan.topics.node(id, NodeTopic::Status);
        let will = codec::encode(
            &Status {
                seal: None,
                online: false,
                at_ms: s.started_ms,
                reason: "connection lost".into(),
                birth: None,
            },
            plan.encoding,
        )?;
        let mut connect = Connect::new(format!("fog-agent-{id}"));
        connect.keep_alive = plan.keep_alive_secs;
        connect.last_will = Some(LastWill::new(status, will, QoS::AtLeastOnce, true));
        connect.write(&mut s.wbuf)?;
        s.flush().await?;
        match s.next_packet().await? {
            Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                ..
            }) => {}
            Packet::ConnAck(ConnAck { code, .. }) => return Err(SimError::Refused(code)),
            _ => return Err(SimError::Closed),
        }
        let pkid = s.next_pkid();
        let mut sub = Subscribe::new(plan.topics.node(id, NodeTopic::Tasks), QoS::AtLeastOnce);
        sub.pkid = pkid;
        sub.write(&mut s.wbuf)?;
        s.birth()?;
        s.flush().await?;
        Ok(s)
    }

    fn next_pkid(&mut self) -> u16 {
        self.pkid = self.pkid.wrapping_add(1).max(1);
        self.pkid
    }

    fn publish(
        &mut self,
        kind: NodeTopic,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), SimError> {
        let mut p = Publish::new(self.plan.topics.node(self.id, kind), qos, payload);
        p.retain = retain;
        if qos != QoS::AtMostOnce {
            p.pkid = self.next_pkid();
        }
        p.write(&mut self.wbuf)?;
        Ok(())
    }

    fn birth(&mut self) -> Result<(), SimError> {
        let mut birth = fog_benches::pi::birth(self.id);
        birth.encoding = self.plan.encoding;
        birth.heartbeat_interval_ms = self.plan.heartbeat.as_millis() as u32;
        birth.metrics_interval_ms = self.plan.reading.as_millis() as u32;
        birth.keep_alive_secs = u32::from(self.plan.keep_alive_secs);
        birth.started_at_ms = self.started_ms;
        birth.task_kinds = vec!["echo".into()];
        birth.version = format!("{}-sim", env!("CARGO_PKG_VERSION"));
        birth.task_trust = fog_proto::TaskTrust::Signed;
        let s = Status {
            seal: None,
            online: true,
            at_ms: fog_rt::clock::now_ms(),
            reason: String::new(),
            birth: Some(birth),
        };
        let bytes = codec::encode(&s, self.plan.encoding)?;
        self.publish(NodeTopic::Status, bytes, QoS::AtLeastOnce, true)
    }

    async fn flush(&mut self) -> Result<(), SimError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The next whole packet from the broker.
    async fn next_packet(&mut self) -> Result<Packet, SimError> {
        loop {
            match Packet::read(&mut self.rbuf, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(MqttError::InsufficientBytes(_)) => {}
                Err(e) => return Err(e.into()),
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(SimError::Closed);
            }
        }
    }

    /// Heartbeats, readings and pings when due; tasks answered as they come; until
    /// `stop` (a clean goodbye, as the agent says it) or an error.
    async fn serve(&mut self, stop: &CancellationToken) -> Result<(), SimError> {
        let plan = self.plan;
        let now = Instant::now();
        // Spread over the interval, as agents started at different times are.
        let mut next_hb = now + plan.heartbeat.mul_f64(fastrand::f64());
        let mut next_reading = now + plan.reading.mul_f64(fastrand::f64());
        let ping_every = Duration::from_secs(u64::from(plan.keep_alive_secs.max(2)) / 2);
        let mut next_ping = now + ping_every;
        loop {
            let due = next_hb.min(next_reading).min(next_ping);
            tokio::select! {
                () = stop.cancelled() => return self.goodbye().await,
                () = sleep_until(due) => {
                    let now = Instant::now();
                    if now >= next_hb {
                        self.heartbeat()?;
                        next_hb += plan.heartbeat;
                        next_ping = now + ping_every;
                    }
                    if now >= next_reading {
                        let r = fog_benches::pi::reading(fog_rt::clock::now_ms());
                        let bytes = codec::encode(&r, plan.encoding)?;
                        self.publish(NodeTopic::Metrics, bytes, QoS::AtLeastOnce, false)?;
                        Stats::add(&self.stats.readings);
                        next_reading += plan.reading;
                    }
                    if now >= next_ping {
                        PingReq.write(&mut self.wbuf)?;
                        next_ping = now + ping_every;
                    }
                    self.flush().await?;
                }
                read = self.stream.read_buf(&mut self.rbuf) => {
                    if read? == 0 {
                        return Err(SimError::Closed);
                    }
                    self.take_packets()?;
                    self.flush().await?;
                }
            }
        }
    }

    fn heartbeat(&mut self) -> Result<(), SimError> {
        self.seq += 1;
        let hb = Heartbeat {
            seq: self.seq,
            at_ms: fog_rt::clock::now_ms(),
            cpu_pct: Some(12.5),
            mem_pct: 25.0,
            load1: 0.5,
            free_slots: 4,
            ..Heartbeat::default()
        };
        let bytes = codec::encode(&hb, self.plan.encoding)?;
        self.publish(NodeTopic::Heartbeat, bytes, QoS::AtMostOnce, false)?;
        Stats::add(&self.stats.heartbeats);
        Ok(())
    }

    /// Every whole packet read so far: acks counted, tasks answered.
    fn take_packets(&mut self) -> Result<(), SimError> {
        loop {
            let p = match Packet::read(&mut self.rbuf, MAX_PACKET) {
                Ok(p) => p,
                Err(MqttError::InsufficientBytes(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match p {
                Packet::PubAck(_) => Stats::add(&self.stats.acks),
                Packet::Publish(p) => {
                    if p.qos == QoS::AtLeastOnce {
                        PubAck::new(p.pkid).write(&mut self.wbuf)?;
                    }
                    self.answer(&p.payload)?;
                }
                _ => {}
            }
        }
    }

    /// A result for each task of an assignment list: completed at once, its payload
    /// echoed (the list's signature is not checked: the simulator trusts its
    /// coordinator; the coordinator's own checks are what is measured).
    fn answer(&mut self, payload: &[u8]) -> Result<(), SimError> {
        let Ok(list) = codec::decode::<TaskAssignments>(payload) else {
            Stats::add(&self.stats.errors);
            return Ok(());
        };
        let at_ms = fog_rt::clock::now_ms();
        let items: Vec<TaskResult> = list
            .items
            .into_iter()
            .map(|t| TaskResult {
                id: t.id,
                attempt: t.attempt,
                node: self.id.clone(),
                at_ms,
                outcome: Outcome::Completed {
                    output: t.payload,
                    truncated: false,
                    exit_code: None,
                    duration_ms: 0,
                    cpu_ms: 0,
                    peak_rss_bytes: 0,
                    from_cache: false,
                },
            })
            .collect();
        self.stats
            .tasks
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let bytes = codec::encode(&TaskResults { items, seal: None }, self.plan.encoding)?;
        self.publish(NodeTopic::Results, bytes, QoS::AtLeastOnce, false)
    }

    /// What a stopping agent says: offline, retained, then DISCONNECT (no will).
    async fn goodbye(&mut self) -> Result<(), SimError> {
        let s = Status {
            seal: None,
            online: false,
            at_ms: fog_rt::clock::now_ms(),
            reason: "stopped".into(),
            birth: None,
        };
        let bytes = codec::encode(&s, self.plan.encoding)?;
        self.publish(NodeTopic::Status, bytes, QoS::AtLeastOnce, true)?;
        Disconnect.write(&mut self.wbuf)?;
        self.flush().await
    }
}
