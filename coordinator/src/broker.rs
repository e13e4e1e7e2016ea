//! The embedded MQTT broker (rumqttd), for one-command demos, single-machine sites and
//! tests. It lives in the coordinator binary only: its dependency tree is large.
//!
//! Tuned small: rumqttd's sample config preallocates 100 MiB x 10 segments (73 MiB
//! RSS measured); 1 MiB x 4 measured 18 to 20 MiB with higher throughput.
//!
//! rumqttd binds its listener itself and has no shutdown; a caller that needs a free
//! port takes one with [`free_port`], and a test that needs to stop the broker runs
//! it as a child process (`fog-coordinator broker`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker on {addr} did not start listening within {timeout:?}")]
    NotListening { addr: SocketAddr, timeout: Duration },
    #[error("starting embedded broker thread: {0}")]
    Thread(std::io::Error),
    #[error("finding a free port: {0}")]
    FreePort(std::io::Error),
}

/// Largest packet the embedded broker accepts from a publisher: fog's shared ceiling
/// (the coordinator's status snapshot, the largest message, plus MQTT framing), the
/// same `max_packet_size` the generated Mosquitto config sets. rumqttd closes the
/// connection of a client that sends more, and forwards nothing of it.
pub const MAX_PAYLOAD_BYTES: usize = fog_rt::limits::MAX_PACKET_BYTES;

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, BrokerError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(BrokerError::FreePort)?;
    Ok(l.local_addr().map_err(BrokerError::FreePort)?.port())
}

/// Who may connect: username -> password. rumqttd 0.20 checks the pair at CONNECT
/// (constant-time) and has no per-topic ACL, so any admitted user may publish and
/// subscribe anywhere; `None` admits everyone, anonymous included.
pub type Users = Option<HashMap<String, String>>;

fn config(addr: SocketAddr, users: Users) -> Config {
    let server = ServerSettings {
        name: "fog-v4".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 5000,
            max_payload_size: MAX_PAYLOAD_BYTES,
            max_inflight_count: 500,
            auth: users,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_240,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Config::default()
    }
}

/// Handle to a running embedded broker. It runs until the process exits.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Start the broker on `addr` and wait until it accepts connections.
    pub fn start(addr: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        Self::start_with_users(addr, None)
    }

    /// Start the broker admitting only `users` (see [`Users`]).
    pub fn start_with_users(addr: SocketAddr, users: Users) -> Result<EmbeddedBroker, BrokerError> {
        let cfg = config(addr, users);
        std::thread::Builder::new()
            .name("fog-broker".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(cfg);
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "embedded broker stopped");
                }
            })
            .map_err(BrokerError::Thread)?;
        let timeout = Duration::from_secs(10);
        let deadline = Instant::now() + timeout;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(BrokerError::NotListening { addr, timeout });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(%addr, "embedded broker listening");
        Ok(EmbeddedBroker { addr })
    }

    /// Start on a free loopback port.
    pub fn start_local() -> Result<EmbeddedBroker, BrokerError> {
        let port = free_port()?;
        Self::start(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    /// The CONNACK (true) or the error that ended the attempt (false).
    async fn admitted(addr: SocketAddr, login: Option<(&str, &str)>) -> bool {
        let mut o = MqttOptions::new(format!("t-{}", fastrand::u32(..)), "127.0.0.1", addr.port());
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (_client, mut ev) = AsyncClient::new(o, 4);
        let res = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        return a.code == rumqttc::ConnectReturnCode::Success
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        })
        .await;
        res.unwrap_or(false)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_users_only_their_passwords_get_in_and_oversized_publishes_cut_the_sender() {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port().expect("port")));
        let users = HashMap::from([("pi-1".to_owned(), "s3cret".to_owned())]);
        EmbeddedBroker::start_with_users(addr, Some(users)).expect("starts");
        assert!(!admitted(addr, None).await, "anonymous admitted");
        assert!(
            !admitted(addr, Some(("pi-1", "wrong"))).await,
            "wrong password admitted"
        );
        assert!(
            !admitted(addr, Some(("pi-2", "s3cret"))).await,
            "unknown user admitted"
        );
        assert!(
            admitted(addr, Some(("pi-1", "s3cret"))).await,
            "the right password refused"
        );

        // A publish over the ceiling: rumqttd closes the sender's connection.
        let mut o = MqttOptions::new("big", "127.0.0.1", addr.port());
        o.set_credentials("pi-1", "s3cret");
        o.set_max_packet_size(32 << 20, 32 << 20);
        let (client, mut ev) = AsyncClient::new(o, 4);
        client
            .publish(
                "fog/v1/tasks/submit",
                QoS::AtLeastOnce,
                false,
                vec![0u8; MAX_PAYLOAD_BYTES + 1],
            )
            .await
            .expect("queued");
        let cut = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => return false,
                    Ok(_) => {}
                    Err(_) => return true,
                }
            }
        })
        .await;
        assert_eq!(cut, Ok(true), "an oversized publish was acknowledged");
    }
}
