//! The client side of tasks: `submit` one and wait for its result, or `bench` a load
//! and count what came back. With a [`Signer`] every list is sealed with the client's
//! key for its name, and results are asked for under `clients/NAME/` (all a broker ACL
//! needs to let that client read).

use std::path::Path;
use std::time::Duration;

use fog_rt::broker::BrokerConfig;
use fog_rt::keys::{KeyError, KeyPair};
use fog_rt::transport::{Link, LinkEvent, LinkOptions, Qos};
use std::collections::VecDeque;

mod bench;
pub use bench::{bench, BenchOptions, BenchReport};

use fog_proto::{
    codec, Encoding, NodeId, Outcome, Payload, TaskResult, TaskResults, TaskSubmission,
    TaskSubmissions, Topics,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Link(#[from] fog_rt::transport::LinkError),
    #[error("could not connect to {broker} within {timeout:?}")]
    NoBroker { broker: String, timeout: Duration },
    #[error("no result for task {id} within {timeout:?} (is `fog-coordinator serve` running?)")]
    Timeout { id: String, timeout: Duration },
    #[error("the mqtt link ended")]
    LinkEnded,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    BadName(String),
    #[error("encoding or signing the submissions: {0}")]
    Encode(#[from] fog_proto::EncodeError),
}

/// What a client signs its submissions with: its key, and its name (the seal's scope,
/// and the `[clients.NAME]` table the coordinator checks it against).
pub struct Signer {
    key: KeyPair,
    name: String,
}

impl Signer {
    pub fn new(key: KeyPair, name: &str) -> Result<Signer, ClientError> {
        crate::clients::valid_client_name(name).map_err(ClientError::BadName)?;
        Ok(Signer {
            key,
            name: name.to_owned(),
        })
    }

    /// The key at `path`, named `name`, or else after the file's stem (`ops.key` is
    /// client `ops`).
    pub fn load(path: &Path, name: Option<&str>) -> Result<Signer, ClientError> {
        let key = KeyPair::load(path)?;
        let stem = path.file_stem().and_then(|s| s.to_str());
        match name.or(stem) {
            Some(n) => Signer::new(key, n),
            None => Err(ClientError::BadName(format!(
                "no client name in key file name {}; give --client-name",
                path.display()
            ))),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `Authorization` header of an HTTP API request (see `crate::http::auth`).
    pub fn http_authorization(&self, method: &str, path: &str, at_ms: u64, body: &[u8]) -> String {
        crate::http::auth::authorization(&self.name, &self.key, method, path, at_ms, body)
    }
}

/// A connected client with its own reply topic.
pub struct Client {
    link: Link,
    topics: Topics,
    reply_to: String,
    encoding: Encoding,
    signer: Option<Signer>,
    /// Results received in a list and not yet handed out.
    pending: VecDeque<TaskResult>,
    /// Ids whose final result was handed out (bounded), so a reply the coordinator
    /// sends again after a crash (at-least-once around a restart) is not seen twice.
    finished: std::collections::HashSet<String>,
    finished_order: VecDeque<String>,
    repeats_dropped: u64,
}

/// Final results remembered per client for dropping repeats.
const CLIENT_REMEMBER: usize = 100_000;

pub(crate) fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:08x}{:08x}",
        fastrand::u32(..),
        fastrand::u32(..)
    )
}

/// This client's reply topic. With a broker username it lies under the username,
/// `{prefix}/v1/clients/{username}/{client_id}/results`, where the generated broker ACL
/// lets only that user read (`fog-coordinator broker-config`); without one it is
/// `{prefix}/v1/clients/{client_id}/results`, as before.
pub fn reply_topic(topics: &Topics, broker: &BrokerConfig, client_id: &NodeId) -> String {
    match broker
        .credentials
        .as_ref()
        .and_then(|(user, _)| NodeId::new(user.as_str()).ok())
    {
        Some(user) => format!("{}/v1/clients/{user}/{client_id}/results", topics.prefix()),
        None => topics.client_results(client_id),
    }
}

impl Client {
    /// An unsigned client (taken only by a coordinator with
    /// `allow_unsigned_submissions`).
    pub async fn connect(
        broker: &BrokerConfig,
        topics: Topics,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        Self::connect_as(broker, topics, timeout, None).await
    }

    /// A client that signs with `signer` (if any).
    pub async fn connect_as(
        broker: &BrokerConfig,
        topics: Topics,
        timeout: Duration,
        signer: Option<Signer>,
    ) -> Result<Client, ClientError> {
        let client_id = NodeId::new(random_id("fog-cli")).expect("generated ids are valid");
        // A signing client replies under its client name (what the coordinator's
        // reply-namespace check and the generated ACL expect: make the broker user the
        // same name); otherwise under its broker username, if it has one.
        let reply_to = match &signer {
            Some(s) => topics.named_client_results(s.name(), &client_id),
            None => reply_topic(&topics, broker, &client_id),
        };
        let mut link = Link::start(LinkOptions {
            broker: broker.clone(),
            client_id: client_id.to_string(),
            will: None,
            on_connect: Vec::new(),
            subscriptions: vec![(reply_to.clone(), Qos::AtLeastOnce)],
            max_packet_bytes: crate::service::MAX_PACKET_BYTES,
            queue: 4096,
        })?;
        let connected = tokio::time::timeout(timeout, async {
            while let Some(ev) = link.next_event().await {
                if matches!(ev, LinkEvent::Subscribed) {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(connected, Ok(true)) {
            return Err(ClientError::NoBroker {
                broker: broker.url(),
                timeout,
            });
        }
        Ok(Client {
            link,
            topics,
            reply_to,
            encoding: Encoding::Json,
            signer,
            pending: VecDeque::new(),
            finished: Default::default(),
            finished_order: VecDeque::new(),
            repeats_dropped: 0,
        })
    }

    pub fn encoding(mut self, e: Encoding) -> Self {
        self.encoding = e;
        self
    }

    /// Publish one submission (waiting for room in the request queue).
    pub async fn submit(&self, sub: TaskSubmission) -> Result<String, ClientError> {
        let mut ids = self.submit_many(vec![sub]).await?;
        Ok(ids.pop().expect("one id per submission"))
    }

    /// Publish several submissions as one list message; returns their ids in order.
    pub async fn submit_many(&self, subs: Vec<TaskSubmission>) -> Result<Vec<String>, ClientError> {
        let items: Vec<TaskSubmission> = subs
            .into_iter()
            .map(|mut sub| {
                if sub.id.is_empty() {
                    sub.id = random_id("task");
                }
                sub.reply_to = self.reply_to.clone();
                sub
            })
            .collect();
        let ids = items.iter().map(|s| s.id.clone()).collect();
        // Sized up front (payloads as base64 in JSON, plus the fields) so a big list is
        // not copied through a dozen doublings.
        let estimate: usize = items
            .iter()
            .map(|s| s.payload.0.len() * 4 / 3 + s.id.len() + s.reply_to.len() + 128)
            .sum();
        let mut list = TaskSubmissions { items, seal: None };
        if let Some(s) = &self.signer {
            // One signature per list, not per task.
            fog_rt::keys::seal(&mut list, &s.key, &s.name, fog_rt::clock::now_ms())?;
        }
        let mut bytes = Vec::with_capacity(estimate + 256);
        codec::encode_into(&list, self.encoding, &mut bytes)?;
        loop {
            match self.link.publish(
                &self.topics.submit(),
                bytes.clone(),
                Qos::AtLeastOnce,
                false,
            ) {
                Ok(()) => return Ok(ids),
                Err(fog_rt::transport::PublishError::Busy) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err(_) => return Err(ClientError::LinkEnded),
            }
        }
    }

    /// Next result on the reply topic: `accepted` notices and final results, each final
    /// result once per task id.
    pub async fn next_result(&mut self) -> Result<Option<TaskResult>, ClientError> {
        if let Some(r) = self.next_pending() {
            return Ok(Some(r));
        }
        loop {
            match self.link.next_event().await {
                Some(LinkEvent::Message { topic, payload }) if topic == self.reply_to => {
                    match codec::decode::<TaskResults>(&payload) {
                        Ok(list) => {
                            self.pending.extend(list.items);
                            if let Some(r) = self.next_pending() {
                                return Ok(Some(r));
                            }
                        }
                        Err(error) => tracing::warn!(%error, "undecodable results"),
                    }
                }
                Some(_) => {}
                None => return Err(ClientError::LinkEnded),
            }
        }
    }

    /// The topic this client's results arrive on.
    pub fn reply_topic(&self) -> &str {
        &self.reply_to
    }

    /// Final results that arrived again for an id already answered (and were dropped).
    pub fn repeats_dropped(&self) -> u64 {
        self.repeats_dropped
    }

    fn next_pending(&mut self) -> Option<TaskResult> {
        while let Some(r) = self.pending.pop_front() {
            if matches!(r.outcome, Outcome::Accepted) {
                if self.finished.contains(&r.id) {
                    continue;
                }
                return Some(r);
            }
            if !self.finished.insert(r.id.clone()) {
                self.repeats_dropped += 1;
                tracing::debug!(task.id = %r.id, "repeated final result dropped");
                continue;
            }
            self.finished_order.push_back(r.id.clone());
            if self.finished_order.len() > CLIENT_REMEMBER {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
            return Some(r);
        }
        None
    }

    pub async fn close(self) {
        self.link.close(None, Duration::from_secs(2)).await;
    }
}

/// A submission with defaults.
pub fn submission(
    kind: &str,
    payload: Vec<u8>,
    priority: u8,
    timeout: Duration,
    cacheable: bool,
) -> TaskSubmission {
    TaskSubmission {
        id: String::new(),
        kind: kind.to_owned(),
        payload: Payload(payload),
        reply_to: String::new(),
        priority,
        timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
        cacheable,
        key: String::new(),
        strategy: String::new(),
        requires: Default::default(),
    }
}

/// Submit one task and wait for its final result.
pub async fn submit_and_wait(
    client: &mut Client,
    sub: TaskSubmission,
    wait: Duration,
) -> Result<TaskResult, ClientError> {
    let id = client.submit(sub).await?;
    tokio::time::timeout(wait, async {
        loop {
            if let Some(r) = client.next_result().await? {
                if r.id == id && !matches!(r.outcome, Outcome::Accepted) {
                    return Ok(r);
                }
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout { id, timeout: wait })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_topic_lies_under_the_broker_username_when_there_is_one() {
        let topics = Topics::default();
        let id = NodeId::new("fog-cli-1").expect("valid");
        let plain = BrokerConfig::plain("mqtt://127.0.0.1:1883").expect("url");
        assert_eq!(
            reply_topic(&topics, &plain, &id),
            "fog/v1/clients/fog-cli-1/results"
        );
        let with_user = BrokerConfig {
            credentials: Some(("ops".into(), "pw".into())),
            ..plain.clone()
        };
        assert_eq!(
            reply_topic(&topics, &with_user, &id),
            "fog/v1/clients/ops/fog-cli-1/results"
        );
        // A username that cannot be a topic segment keeps the old form.
        let odd = BrokerConfig {
            credentials: Some(("a/b".into(), "pw".into())),
            ..plain
        };
        assert_eq!(
            reply_topic(&topics, &odd, &id),
            "fog/v1/clients/fog-cli-1/results"
        );
    }
}
