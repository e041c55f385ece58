//! Recording pings durably before they are acknowledged: requests from every ingress
//! connection are gathered into group commits (one fsynced transaction for all that wait), then
//! each source's refresh worker is handed its pings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::PingIn;
use crate::clock::Clock;
use crate::store::{NewPing, Store};

/// Requests gathered into one transaction at most.
const GROUP: usize = 512;

/// Why pings could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The state file refused the write.
    #[error("recording the ping failed: {0}")]
    Store(String),
    /// pollhook is stopping or reloading.
    #[error("pollhook is stopping")]
    Stopping,
}

struct Request {
    source: usize,
    ids: Vec<String>,
    reply: oneshot::Sender<Result<(), IntakeError>>,
}

/// Where the ingress hands pings in. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Intake {
    tx: mpsc::Sender<Request>,
}

/// The task side of an [`Intake`]: run it with [`Writer::run`].
pub struct Writer {
    rx: mpsc::Receiver<Request>,
    store: Store,
    clock: Clock,
    /// Per source index: its name, its refresh worker and its backlog count.
    workers: Vec<Target>,
}

/// Where one source's recorded pings go: its name, its refresh worker, and the count of pings
/// recorded and not yet answered (raised here, before the ingress answers, so a full backlog is
/// seen at once).
pub type Target = (String, mpsc::UnboundedSender<PingIn>, Arc<AtomicUsize>);

/// An intake and its writer; `workers` are the sources' targets, by index.
pub fn intake(store: Store, clock: Clock, workers: Vec<Target>) -> (Intake, Writer) {
    let (tx, rx) = mpsc::channel(4 * GROUP);
    (
        Intake { tx },
        Writer {
            rx,
            store,
            clock,
            workers,
        },
    )
}

impl Intake {
    /// Records pings for the source at `source` (its index) and returns once they are durable.
    pub async fn record(&self, source: usize, ids: Vec<String>) -> Result<(), IntakeError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { source, ids, reply })
            .await
            .map_err(|_| IntakeError::Stopping)?;
        answer.await.map_err(|_| IntakeError::Stopping)?
    }
}

impl Writer {
    /// Writes group commits until `cancel` (or until every [`Intake`] is gone).
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.rx.recv() => match r { Some(r) => r, None => return },
            };
            let mut group = vec![first];
            while group.len() < GROUP {
                match self.rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.commit(group).await;
        }
    }

    async fn commit(&self, group: Vec<Request>) {
        let received_ms = self.clock.now_ms();
        let mut pings = Vec::new();
        let mut valid = Vec::with_capacity(group.len());
        for r in group {
            let Some((name, _, _)) = self.workers.get(r.source) else {
                let _ = r.reply.send(Err(IntakeError::Stopping));
                continue;
            };
            for id in &r.ids {
                pings.push(NewPing {
                    source: name.clone(),
                    id: id.clone(),
                    received_ms,
                });
            }
            valid.push(r);
        }
        let result = self.store.run(move |s| s.record_pings(&pings)).await;
        match result {
            Ok(seqs) => {
                let mut seqs = seqs.into_iter();
                for r in valid {
                    if let Some((_, worker, backlog)) = self.workers.get(r.source) {
                        backlog.fetch_add(r.ids.len(), Ordering::SeqCst);
                        for id in r.ids {
                            if let Some(seq) = seqs.next() {
                                // A worker that is gone stops with this round; the ping is
                                // recorded and the next round's worker loads it.
                                let _ = worker.send(PingIn {
                                    id,
                                    seq,
                                    received_ms,
                                });
                            }
                        }
                    }
                    let _ = r.reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "recording pings failed; they were refused with 503");
                let reason = e.to_string();
                for r in valid {
                    let _ = r.reply.send(Err(IntakeError::Store(reason.clone())));
                }
            }
        }
    }
}
