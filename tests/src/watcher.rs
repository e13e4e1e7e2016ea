//! A plain MQTT subscriber for tests: every message on a filter, with its arrival time,
//! across broker restarts (it reconnects and subscribes again on its own).

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// One message as it arrived.
#[derive(Debug, Clone)]
pub struct Arrived {
    pub topic: String,
    pub payload: Vec<u8>,
    pub at: Instant,
    /// The broker sent it as a retained message (to a new subscription).
    pub retained: bool,
}

pub struct Watcher {
    rx: mpsc::UnboundedReceiver<Arrived>,
    /// How many SUBACKs so far (one per connection).
    subscribed: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Connect to `addr` and subscribe to `filter` at QoS 1; returns once subscribed.
    pub async fn start(addr: std::net::SocketAddr, filter: &str) -> Watcher {
        Self::start_as(addr, filter, None).await
    }

    /// [`Watcher::start`] logged in as `credentials` (user, password), for a broker
    /// with an ACL.
    pub async fn start_as(
        addr: std::net::SocketAddr,
        filter: &str,
        credentials: Option<(String, String)>,
    ) -> Watcher {
        let id = format!("fog-watcher-{}", fastrand::u64(..));
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = credentials {
            opts.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, subscribed) = watch::channel(0u64);
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        sub_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Arrived {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            at: Instant::now(),
                            retained: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        let mut w = Watcher {
            rx,
            subscribed,
            task,
        };
        w.wait_subscribed(1).await;
        w
    }

    /// Wait until the watcher has subscribed `n` times in all (e.g. 2 after a broker
    /// restart).
    pub async fn wait_subscribed(&mut self, n: u64) {
        let wait = self.subscribed.wait_for(|c| *c >= n);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("watcher subscribed in time")
            .expect("watcher alive");
    }

    /// The next message, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Arrived> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Everything that arrived so far.
    pub fn drain(&mut self) -> Vec<Arrived> {
        let mut out = Vec::new();
        while let Ok(a) = self.rx.try_recv() {
            out.push(a);
        }
        out
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
