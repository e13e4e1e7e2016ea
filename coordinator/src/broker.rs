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

fn config(addr: SocketAddr) -> Config {
    let server = ServerSettings {
        name: "fog-v4".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 5000,
            max_payload_size: MAX_PAYLOAD_BYTES,
            max_inflight_count: 500,
            auth: None,
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
        let cfg = config(addr);
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
