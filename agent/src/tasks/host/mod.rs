//! The agent's side of task delivery: take assignments off the wire, record them in
//! the store before acknowledging, run them on the pool, store and publish results.
//!
//! Delivery is at-least-once on the wire, so this is where duplicates stop
//! ([`admission`]: what an arriving assignment gets; results leave through the
//! [`outbox`]):
//! * an id already finished is answered from the store, never run again;
//! * an id in flight (accepting, queued or running) is ignored;
//! * after a crash, accepted and unfinished tasks come back from the store and are
//!   handed back (rejected, retryable), so the coordinator places them again from its journal;
//!   with `store.rerun_after_restart` their payloads were kept and they run again here
//!   (or fail as retryable if the node cannot take them now).

mod admission;
mod outbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fog_proto::{
    codec, Encoding, NodeId, Outcome, Payload, TaskAssignment, TaskAssignments, TaskResult,
};

use self::admission::{busy_outcome, busy_reason, check_fit, dedupe, Dedupe, Ledger};
use self::outbox::Outbox;
use super::arena::{Arena, ArenaError};
use super::job::{Job, JobOutcome, JobResult, Kind};
use super::pool::{self, Busy, Pool};
use crate::config::Config;
use crate::forward::Forwarder;
use crate::store::backlog::{Backlog, Removed};
use crate::store::{Committed, Op, RedbStore, StoredTask, TaskStore};
use crate::trust::{Gate, Identity, Refusal};
use fog_rt::clock::now_ms;

/// What a store commit was for.
pub enum Token {
    Accepted(Job),
    Finished { result: TaskResult },
}

/// Counters for readings.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskCounters {
    pub finished: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

pub struct TaskHost {
    node: NodeId,
    encoding: Encoding,
    max_task_bytes: usize,
    decode_limit: usize,
    arena: Arc<Arena>,
    pool: Pool,
    store: RedbStore<Token>,
    kinds: HashMap<String, Kind>,
    /// The ids in flight and recently finished, for the dedupe rules.
    ledger: Ledger,
    outbox: Outbox,
    /// `store.rerun_after_restart`: payloads are stored, and rerun after a restart.
    keep_payloads: bool,
    pub counters: TaskCounters,
    last_malformed_log: Option<std::time::Instant>,
    /// Whose assignments run here.
    gate: Gate,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The kinds a config enables.
pub fn kinds(config: &Config) -> HashMap<String, Kind> {
    let mut k = HashMap::new();
    for b in &config.pool.builtins {
        let kind = match b.as_str() {
            "echo" => Kind::Echo,
            "sha256" => Kind::Sha256,
            "sleep" => Kind::Sleep,
            _ => continue, // config validation allows only the built-ins
        };
        k.insert(b.clone(), kind);
    }
    for (name, spec) in &config.commands {
        k.insert(
            name.clone(),
            Kind::Command {
                name: name.clone(),
                spec: Arc::new(spec.clone()),
            },
        );
    }
    k
}

/// Largest MQTT packet the agent must accept for its task limit.
pub fn packet_limit(max_task_bytes: usize) -> usize {
    // base64 in JSON, plus the other fields.
    (max_task_bytes * 4 / 3 + 8192).max(512 * 1024)
}

impl TaskHost {
    /// Open the store, start the pool, and requeue what a previous run left unfinished.
    pub fn start(
        config: &Config,
        identity: Arc<Identity>,
        gate: Gate,
        pool_results: tokio::sync::mpsc::Sender<JobResult>,
        committed: tokio::sync::mpsc::UnboundedSender<Committed<Token>>,
    ) -> Result<TaskHost, HostError> {
        let arena = Arena::new(config.pool.arena_bytes);
        let (store, recovered) =
            RedbStore::open(&config.data_dir.join("store"), &config.store, committed)?;
        let pool = Pool::start(
            config.pool.workers,
            config.pool.queue_capacity,
            arena.clone(),
            pool_results,
        );
        let mut host = TaskHost {
            node: config.node_id.clone(),
            encoding: config.encoding,
            max_task_bytes: config.pool.max_task_bytes,
            decode_limit: packet_limit(config.pool.max_task_bytes),
            arena,
            pool,
            store,
            kinds: kinds(config),
            ledger: Ledger::default(),
            outbox: Outbox::new(config.encoding, identity),
            keep_payloads: config.store.rerun_after_restart,
            counters: TaskCounters::default(),
            last_malformed_log: None,
            gate,
        };
        for id in recovered.finished {
            host.ledger.remember_finished(id);
        }
        if !recovered.unfinished.is_empty() {
            tracing::info!(
                tasks = recovered.unfinished.len(),
                rerun = host.keep_payloads,
                "tasks a previous run accepted and did not finish: running again if their payloads were kept (rerun), else handing them back"
            );
        }
        for task in recovered.unfinished {
            host.requeue(task);
        }
        Ok(host)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.arena
    }

    fn requeue(&mut self, t: StoredTask) {
        let id = t.id.clone();
        let attempt = t.attempt;
        // Without its payload the task cannot run here; the coordinator has it and
        // places it again. (An empty payload cannot be told from one not kept, so it
        // goes back too: the retry costs one attempt, never a wrong run.) Handed back
        // as a retryable refusal, not a failure: the coordinator's breaker must not
        // eject every node that restarts (a farm's power cut restarts them all).
        if !self.keep_payloads || t.payload.is_empty() {
            self.finish_now(
                &id,
                attempt,
                Outcome::Rejected {
                    reason: "handed back: the agent restarted before this task finished".into(),
                    retryable: true,
                },
            );
            return;
        }
        let Some(kind) = self.kinds.get(&t.kind).cloned() else {
            self.finish_now(
                &id,
                attempt,
                Outcome::Failed {
                    error: format!("kind {:?} is no longer allowed on this node", t.kind),
                    retryable: true,
                    exit_code: None,
                    duration_ms: 0,
                },
            );
            return;
        };
        let block = match self.arena.alloc(t.payload.len()) {
            Ok(mut b) => {
                b.as_mut_slice().copy_from_slice(&t.payload);
                b
            }
            Err(e) => {
                self.finish_now(
                    &id,
                    attempt,
                    Outcome::Failed {
                        error: format!("agent restarted and cannot hold the task now: {e}"),
                        retryable: true,
                        exit_code: None,
                        duration_ms: 0,
                    },
                );
                return;
            }
        };
        self.ledger.start(&id);
        let job = Job {
            id,
            attempt,
            kind,
            payload: block,
            timeout: Duration::from_millis(u64::from(t.timeout_ms.max(1))),
            priority: t.priority,
            deadline_ms: t.deadline_ms,
            cacheable: t.cacheable,
        };
        if let Err(Busy(job)) = self.pool.submit(job) {
            self.finish_now(&job.id, job.attempt, busy_outcome("the task queue is full"));
        }
    }

    fn make_result(&self, id: &str, attempt: u32, outcome: Outcome) -> TaskResult {
        let attempt = self.ledger.result_attempt(id, attempt);
        TaskResult {
            id: id.to_owned(),
            attempt,
            node: self.node.clone(),
            at_ms: now_ms(),
            outcome,
        }
    }

    /// Queue a result; results leave in lists (see [`flush`](Self::flush)).
    fn publish(&mut self, out: &mut Forwarder, r: TaskResult) {
        self.outbox.push(out, r);
    }

    /// Publish queued results as lists of up to BATCH_MAX_ITEMS / BATCH_TARGET_BYTES
    /// (called when the agent is idle, on a short timer, and when a list is full).
    pub fn flush(&mut self, out: &mut Forwarder) {
        self.outbox.flush(out);
    }

    /// An answer that needs no run (rejections): published at once, not stored.
    fn reject(&mut self, out: &mut Forwarder, a: &TaskAssignment, reason: String, retryable: bool) {
        self.counters.rejected += 1;
        tracing::debug!(task.id = %a.id, %reason, retryable, "task rejected");
        let r = self.make_result(&a.id, a.attempt, Outcome::Rejected { reason, retryable });
        self.publish(out, r);
    }

    /// A terminal answer that must be stored before it is published.
    fn finish_now(&mut self, id: &str, attempt: u32, outcome: Outcome) {
        let result = self.make_result(id, attempt, outcome);
        self.ledger.take_newer(id);
        let wire = codec::encode(&result, self.encoding).expect("task results always encode");
        self.ledger.start(id);
        let op = Op::Finish {
            id: id.to_owned(),
            result: wire,
            at_ms: now_ms(),
            token: Token::Finished { result },
        };
        if let Err(e) = self.store.submit(op) {
            tracing::error!(task.id = %id, error = %e, "cannot store task result");
        }
    }

    /// A list of assignments arrived on our tasks topic.
    pub fn on_assignments(&mut self, out: &mut Forwarder, bytes: &[u8]) {
        let mut list: TaskAssignments = match codec::decode_with_limit(bytes, self.decode_limit) {
            Ok(a) => a,
            Err(error) => {
                self.counters.malformed += 1;
                let now = std::time::Instant::now();
                if self
                    .last_malformed_log
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                {
                    self.last_malformed_log = Some(now);
                    tracing::warn!(%error, malformed_total = self.counters.malformed, "dropping a task assignment that does not decode");
                }
                return;
            }
        };
        match self.gate.check(&mut list, now_ms()) {
            Ok(()) => {}
            Err(Refusal::Drop(_)) => return,
            Err(Refusal::Answer(reason)) => {
                for a in &list.items {
                    self.reject(out, a, reason.clone(), true);
                }
                return;
            }
        }
        for a in list.items {
            self.on_assignment(out, a);
        }
    }

    /// Whose assignments run here (for the birth record).
    /// The kinds this node runs from now on (a config reload). Tasks already queued
    /// or running keep the spec they were accepted with.
    pub fn set_kinds(&mut self, kinds: HashMap<String, Kind>) {
        self.kinds = kinds;
    }

    /// Whose assignments run here from now on (a config reload).
    pub fn set_gate(&mut self, gate: Gate) {
        self.gate = gate.carrying(&self.gate);
    }

    pub fn task_trust(&self) -> fog_proto::TaskTrust {
        self.gate.trust()
    }

    /// Assignment lists refused by the gate since start.
    pub fn assignments_refused_total(&self) -> u64 {
        self.gate.refused_total()
    }

    /// The dedupe rules ([`admission::dedupe`]): whether `a` was answered (or
    /// dropped) here because its id is in flight or already finished; `false` means
    /// it is to be admitted and run.
    fn dedupe(&mut self, out: &mut Forwarder, a: &TaskAssignment) -> bool {
        match dedupe(&mut self.ledger, &self.store, a) {
            Dedupe::Run => false,
            Dedupe::InFlight => {
                self.counters.duplicates += 1;
                true
            }
            Dedupe::Answered(r) => {
                self.counters.duplicates += 1;
                self.publish(out, r);
                true
            }
            Dedupe::Refused { reason, retryable } => {
                self.reject(out, a, reason, retryable);
                true
            }
        }
    }

    fn on_assignment(&mut self, out: &mut Forwarder, a: TaskAssignment) {
        if self.dedupe(out, &a) {
            return;
        }
        let kind = match check_fit(&self.kinds, self.max_task_bytes, &a) {
            Ok(kind) => kind,
            Err(reason) => {
                self.reject(out, &a, reason, false);
                return;
            }
        };
        if a.cacheable {
            let key = pool::cache_key(kind.name(), &a.payload.0);
            match self.store.cached(&key) {
                Ok(Some(output)) => {
                    self.counters.cache_hits += 1;
                    self.finish_now(
                        &a.id,
                        a.attempt,
                        Outcome::Completed {
                            output: Payload(output),
                            truncated: false,
                            exit_code: None,
                            duration_ms: 0,
                            cpu_ms: 0,
                            peak_rss_bytes: 0,
                            from_cache: true,
                        },
                    );
                    return;
                }
                Ok(None) => self.counters.cache_misses += 1,
                Err(e) => tracing::warn!(error = %e, "cache lookup failed; running the task"),
            }
        }
        let load = self.pool.load();
        if load.queued as usize >= self.pool.capacity() {
            self.reject(out, &a, busy_reason("the task queue is full"), true);
            return;
        }
        let mut block = match self.arena.alloc(a.payload.0.len()) {
            Ok(b) => b,
            Err(ArenaError::Full { .. }) => {
                self.reject(out, &a, busy_reason("the task arena is full"), true);
                return;
            }
            Err(e @ ArenaError::TooLarge { .. }) => {
                self.reject(out, &a, format!("too large: {e}"), false);
                return;
            }
        };
        block.as_mut_slice().copy_from_slice(&a.payload.0);
        let timeout = Duration::from_millis(u64::from(a.timeout_ms.max(1)));
        let job = Job {
            id: a.id.clone(),
            attempt: a.attempt,
            kind,
            payload: block,
            timeout,
            priority: a.priority,
            deadline_ms: a.deadline_ms,
            cacheable: a.cacheable,
        };
        let stored = StoredTask {
            id: a.id.clone(),
            attempt: a.attempt,
            kind: a.kind,
            timeout_ms: a.timeout_ms,
            priority: a.priority,
            deadline_ms: a.deadline_ms,
            cacheable: a.cacheable,
            accepted_at_ms: now_ms(),
            // Kept only to run again after a restart: otherwise every payload would be
            // written to the node's disk (SD card wear) when the coordinator's journal
            // already holds it.
            payload: if self.keep_payloads {
                a.payload.0
            } else {
                Vec::new()
            },
            result: None,
            finished_at_ms: 0,
        };
        self.ledger.start(&a.id);
        if let Err(e) = self.store.submit(Op::Accept {
            task: stored,
            token: Token::Accepted(job),
        }) {
            tracing::error!(error = %e, "cannot record an accepted task");
        }
    }

    /// A store commit became durable.
    pub fn on_committed(&mut self, out: &mut Forwarder, c: Committed<Token>) {
        match c.token {
            Token::Accepted(job) => {
                if let Err(error) = c.result {
                    self.ledger.forget(&job.id);
                    self.counters.rejected += 1;
                    let r = self.make_result(
                        &job.id,
                        job.attempt,
                        busy_outcome(&format!("the store cannot record it: {error}")),
                    );
                    self.publish(out, r);
                    return;
                }
                let r = self.make_result(&job.id, job.attempt, Outcome::Accepted);
                self.publish(out, r);
                if let Err(Busy(job)) = self.pool.submit(job) {
                    self.counters.rejected += 1;
                    self.finish_now(&job.id, job.attempt, busy_outcome("the task queue is full"));
                }
            }
            Token::Finished { mut result } => {
                if let Err(error) = &c.result {
                    tracing::error!(task.id = %result.id, %error, "task result not stored; publishing it anyway");
                }
                // A newer attempt that arrived while this result was being stored.
                if let Some(n) = self.ledger.take_newer(&result.id) {
                    result.attempt = result.attempt.max(n);
                }
                self.ledger.remember_finished(result.id.clone());
                self.counters.finished += 1;
                self.publish(out, result);
            }
        }
    }

    /// A worker finished a job.
    pub fn on_result(&mut self, r: JobResult) {
        let outcome = match r.outcome {
            JobOutcome::Completed {
                output,
                truncated,
                exit_code,
                duration,
                cpu,
                peak_rss_bytes,
            } => {
                let bytes = output.as_slice().to_vec();
                drop(output); // back to the arena before the store round trip
                if r.cacheable && !truncated {
                    let _ = self.store.submit(Op::CachePut {
                        key: r.cache_key,
                        output: bytes.clone(),
                        at_ms: now_ms(),
                    });
                }
                Outcome::Completed {
                    output: Payload(bytes),
                    truncated,
                    exit_code,
                    duration_ms: duration.as_millis() as u64,
                    cpu_ms: cpu.as_millis() as u64,
                    peak_rss_bytes,
                    from_cache: false,
                }
            }
            JobOutcome::Failed {
                error,
                retryable,
                exit_code,
                duration,
            } => Outcome::Failed {
                error,
                retryable,
                exit_code,
                duration_ms: duration.as_millis() as u64,
            },
            JobOutcome::TimedOut { after } => Outcome::TimedOut {
                after_ms: after.as_millis() as u64,
            },
        };
        self.finish_now(&r.id, r.attempt, outcome);
    }

    /// Shutdown: stop taking work, hand queued tasks back as retryable.
    pub fn close(&mut self) {
        for job in self.pool.close() {
            self.finish_now(
                &job.id,
                job.attempt,
                busy_outcome("the agent is shutting down"),
            );
        }
    }

    pub fn cancel_running(&self) {
        self.pool.cancel_running();
    }

    pub fn in_flight(&self) -> usize {
        self.ledger.in_flight()
    }

    /// The store's health, shared with its writer threads.
    pub fn store_health(&self) -> std::sync::Arc<crate::store::cell::DbCell> {
        self.store.health()
    }

    /// Open the store-and-forward backlog in the task store's database.
    pub fn open_backlog(
        &self,
        config: &Config,
        removed: tokio::sync::mpsc::UnboundedSender<Removed>,
    ) -> Result<Backlog, HostError> {
        Ok(self.store.backlog(&config.store, removed)?)
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Results wait to be published and nothing stopped the last flush (see
    /// [`Outbox::ready_to_flush`]).
    pub fn outbox_ready(&self) -> bool {
        self.outbox.ready_to_flush()
    }
}

#[cfg(test)]
mod tests;
