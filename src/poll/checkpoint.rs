//! A poll's checkpoint: everything needed to continue an interrupted poll from the page after
//! the last one staged (the pager, the poll's clock, counters, watermark candidates), and the
//! fingerprint of the configuration it was started under, so a changed source never resumes a
//! poll begun under other settings.

use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::source::{Pager, PollKind};

/// The checkpoint layout version.
const VERSION: u32 = 1;

/// Where a staged poll stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    version: u32,
    /// Fingerprint of the source configuration the poll began under.
    pub(super) config: u64,
    /// Full or incremental (with the watermark its requests use).
    pub(super) kind: PollKind,
    /// When the poll began; request templates render `now` as this, so every page of one poll
    /// asks for the same window.
    pub(super) started_ms: i64,
    /// Where the walk over the pages stands.
    pub(super) pager: Pager,
    /// Bookings seen so far (distinct ids).
    pub(super) bookings: u64,
    /// Detection order of the next staged change.
    pub(super) next_order: u64,
    /// The source's clock at the first page (`Date` or the configured header), if read.
    pub(super) source_clock_ms: Option<i64>,
    /// The newest time at the watermark pointer among the bookings seen.
    pub(super) newest_item_ms: Option<i64>,
    /// Attempts in a row that failed to continue this poll.
    pub(super) failures: u32,
}

impl Checkpoint {
    /// A new poll of `cfg`.
    pub(super) fn new(cfg: &SourceConfig, kind: PollKind, started_ms: i64) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            config: config_print(cfg),
            kind,
            started_ms,
            pager: Pager::start(cfg),
            bookings: 0,
            next_order: 0,
            source_clock_ms: None,
            newest_item_ms: None,
            failures: 0,
        }
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// A stored checkpoint, or why it cannot be resumed.
    pub(super) fn decode(b: &[u8]) -> Result<Checkpoint, String> {
        let c: Checkpoint = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        if c.version != VERSION {
            return Err(format!("checkpoint version {} is not {VERSION}", c.version));
        }
        Ok(c)
    }
}

/// A fingerprint of everything in a source's configuration (secrets appear redacted in its
/// `Debug`, so they do not influence it).
pub(super) fn config_print(cfg: &SourceConfig) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{cfg:?}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(extra: &str) -> SourceConfig {
        let text = format!("[sources.s]\nurl = \"http://api.test/b\"\nevery = \"1m\"\n{extra}\n");
        Config::from_toml_str(&text, "t.toml")
            .unwrap()
            .sources
            .remove(0)
    }

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let c = Checkpoint::new(&cfg(""), PollKind::Full, 42);
        assert_eq!(Checkpoint::decode(&c.encode().unwrap()).unwrap(), c);
        let mut other = c.clone();
        other.version = 2;
        assert!(Checkpoint::decode(&other.encode().unwrap()).is_err());
        assert!(Checkpoint::decode(b"").is_err());
    }

    #[test]
    fn the_configuration_print_sees_request_changes_only() {
        assert_eq!(config_print(&cfg("")), config_print(&cfg("")));
        assert_ne!(
            config_print(&cfg("")),
            config_print(&cfg("query = { a = \"1\" }"))
        );
    }
}
