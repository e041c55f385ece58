//! The simulator's pings: after each change it can send what a booking system with thin
//! notifications sends, a Beds24 v1 notify GET (`?bookid=…&status=…`) or a pretix webhook POST
//! (`{"organizer","event","code","action","notification_id"}`), to pollhook's ingress. Pings
//! can be dropped on purpose, as real ones sometimes are.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{SimChange, Simulator};

/// Which booking system's ping to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingShape {
    /// `GET URL?bookid=ID&status=new|modify|cancel`.
    Beds24V1,
    /// `POST URL` with pretix's notification JSON (the order code is the booking id).
    Pretix,
}

/// A running pinger; stops when dropped.
#[derive(Debug)]
pub struct Pinger {
    sent: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    dropping: Arc<AtomicBool>,
    _stop: DropGuard,
}

impl Pinger {
    /// Pings answered 2xx so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Pings dropped on purpose so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }

    /// While true, changes are not pinged (a lost notification).
    pub fn set_dropping(&self, on: bool) {
        self.dropping.store(on, Ordering::SeqCst);
    }
}

impl Simulator {
    /// Pings `url` after every change from now on, in order, one at a time.
    pub fn ping_to(&self, url: &str, shape: PingShape) -> Pinger {
        let mut changes = self.on_change();
        let (sent, dropped, dropping) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let stop = CancellationToken::new();
        let (s, d, dr, c) = (
            sent.clone(),
            dropped.clone(),
            dropping.clone(),
            stop.clone(),
        );
        let url = url.to_string();
        tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "simulator pinger: no HTTP client");
                    return;
                }
            };
            let mut n = 0u64;
            loop {
                let change = tokio::select! {
                    _ = c.cancelled() => return,
                    r = changes.recv() => match r {
                        Ok(change) => change,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    },
                };
                if dr.load(Ordering::SeqCst) {
                    d.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                n += 1;
                let req = request(&client, &url, shape, change, n);
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => tracing::warn!(status = r.status().as_u16(), "simulator ping refused"),
                    Err(e) => tracing::warn!(error = %e, "simulator ping failed"),
                }
            }
        });
        Pinger {
            sent,
            dropped,
            dropping,
            _stop: stop.drop_guard(),
        }
    }
}

fn request(
    client: &reqwest::Client,
    url: &str,
    shape: PingShape,
    change: SimChange,
    n: u64,
) -> reqwest::RequestBuilder {
    match shape {
        PingShape::Beds24V1 => {
            let status = match change.kind {
                "created" => "new",
                "cancelled" | "removed" => "cancel",
                _ => "modify",
            };
            let join = if url.contains('?') { '&' } else { '?' };
            client.get(format!("{url}{join}bookid={}&status={status}", change.id))
        }
        PingShape::Pretix => {
            let action = match change.kind {
                "created" => "pretix.event.order.placed",
                "cancelled" | "removed" => "pretix.event.order.canceled",
                _ => "pretix.event.order.changed",
            };
            client.post(url).json(&json!({
                "organizer": "demo",
                "event": "demo",
                "code": change.id.to_string(),
                "action": action,
                "notification_id": n,
            }))
        }
    }
}
