//! A TCP proxy between a client and a broker that a test can cut or freeze.
//!
//! Freezing stops forwarding while holding both sockets open: to the broker the client
//! has gone silent (as when a node loses power or its uplink), so only the MQTT
//! keep-alive can notice, which is exactly what the offline-detection test measures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    /// Connections forwarded to the broker so far.
    forwarded: Arc<AtomicU64>,
    frozen_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let frozen = Arc::new(AtomicBool::new(false));
        let (frozen_tx, frozen_rx) = watch::channel(false);
        let refusing = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let r = refusing.clone();
        let forwarded = Arc::new(AtomicU64::new(0));
        let n = forwarded.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if r.load(Ordering::SeqCst) {
                    // Refusing: the client sees its connection closed at once.
                    drop(client);
                    continue;
                }
                if !f.load(Ordering::SeqCst) {
                    n.fetch_add(1, Ordering::SeqCst);
                }
                let f = f.clone();
                let rx = frozen_rx.clone();
                tokio::spawn(async move {
                    if f.load(Ordering::SeqCst) {
                        // Frozen: accept and hold, never answer.
                        let _hold = client;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = tokio::spawn(pipe(cr, sw, rx.clone()));
                    let b = tokio::spawn(pipe(sr, cw, rx));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Ok(Proxy {
            addr,
            frozen,
            refusing,
            forwarded,
            frozen_tx,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// TCP connections forwarded to the broker so far: how often the client behind
    /// this proxy (re)connected.
    pub fn connections(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Close new connections at once (existing ones are not touched), so a test decides
    /// when a client may reach the broker again.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Stop forwarding in both directions, keeping sockets open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        let _ = self.frozen_tx.send(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = async { let _ = frozen.wait_for(|f| *f).await; } => {
                // Hold both halves until the test ends.
                let _hold = (from, to);
                std::future::pending::<()>().await;
                return;
            }
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if to.write_all(&buf[..n]).await.is_err() { return },
            }
        }
    }
}
