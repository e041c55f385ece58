//! What one source needs between polls: its configuration, diff policy, HTTP client, the
//! endpoints subscribed to it, the lock that keeps its polls from overlapping, and what its ping
//! lookups are doing.

use std::sync::Arc;

use super::overlap::Overlap;
use crate::clock::Clock;
use crate::config::{Config, SourceConfig};
use crate::diff::Policy;
use crate::http::TokenCache;
use crate::outbox::EventKind;
use crate::source::SourceClient;

/// Which endpoints get which kinds from one source, each with the delay before its first
/// attempt (`retry_schedule[0]`).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    new: Vec<(String, i64)>,
    modify: Vec<(String, i64)>,
    cancel: Vec<(String, i64)>,
}

impl Routes {
    /// Routes of `source` in `config`.
    pub fn of(config: &Config, source: &str) -> Routes {
        let names = |k| {
            config
                .routes(source, k)
                .map(|e| {
                    let first = e.retry.schedule.first().copied().unwrap_or_default();
                    (e.name.clone(), first.as_millis() as i64)
                })
                .collect()
        };
        Routes {
            new: names(EventKind::New),
            modify: names(EventKind::Modify),
            cancel: names(EventKind::Cancel),
        }
    }

    pub(super) fn get(&self, kind: EventKind) -> Vec<(&str, i64)> {
        let v = match kind {
            EventKind::New => &self.new,
            EventKind::Modify => &self.modify,
            EventKind::Cancel => &self.cancel,
        };
        v.iter().map(|(n, d)| (n.as_str(), *d)).collect()
    }
}

/// Everything needed to poll one source.
#[derive(Debug)]
pub struct SourceRuntime {
    /// Its configuration.
    pub cfg: SourceConfig,
    /// Its diff policy.
    pub policy: Policy,
    /// Its HTTP client.
    pub client: SourceClient,
    /// Its subscribers.
    pub routes: Routes,
    /// Fingerprint of its configuration (a staged poll resumes only under the same one).
    pub(super) config_print: u64,
    /// Ping lookups in flight or committed while a poll runs.
    pub overlap: Overlap,
    lock: tokio::sync::Mutex<()>,
}

/// The diff policy a source's configuration describes.
pub(super) fn policy_of(cfg: &SourceConfig) -> Policy {
    Policy::new(
        cfg.status.clone(),
        cfg.cancelled_values.clone(),
        cfg.ignore_fields.clone(),
        cfg.only_fields.clone(),
    )
}

impl SourceRuntime {
    /// Prepares a source for polling.
    pub fn new(
        config: &Config,
        cfg: &SourceConfig,
        tokens: Arc<dyn TokenCache>,
        clock: Clock,
    ) -> Result<SourceRuntime, String> {
        Ok(SourceRuntime {
            policy: policy_of(cfg),
            config_print: super::checkpoint::config_print(cfg),
            client: SourceClient::new(cfg, tokens, clock)?,
            routes: Routes::of(config, &cfg.name),
            cfg: cfg.clone(),
            overlap: Overlap::default(),
            lock: tokio::sync::Mutex::new(()),
        })
    }
}

impl SourceRuntime {
    /// Polls of one source never overlap: hold this while polling.
    pub(super) async fn one_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}
