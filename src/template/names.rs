//! The vocabularies: which names a template may use where. Source templates (requests) and
//! endpoint templates (URLs and bodies) see different values; config validation checks every
//! template against these lists, and the contexts that fill them in live with their stage.

/// Names a source's `query` and `body` templates may use (`secret` stands for `secret.NAME`).
pub const SOURCE_NAMES: &[&str] = &[
    "now", "today", "secret", "page", "offset", "limit", "cursor",
];

/// [`SOURCE_NAMES`] plus `watermark`, for the `[incremental]` query and body. Written out rather
/// than concatenated because the order shows in the "available: ..." messages; a test below
/// checks the two lists stay in step.
pub const INCREMENTAL_NAMES: &[&str] = &[
    "now",
    "today",
    "watermark",
    "secret",
    "page",
    "offset",
    "limit",
    "cursor",
];

/// Names a `[lookup]` query and body may use: `id` is the booking looked up.
pub const LOOKUP_NAMES: &[&str] = &["now", "today", "id", "secret"];

/// The `event.*` fields endpoint templates may use.
pub const EVENT_NAMES: &[&str] = &[
    "id",
    "type",
    "status",
    "kind",
    "source",
    "booking_id",
    "sequence",
    "attempt",
    "detected_at",
    "changes",
    "backfill",
];

/// Names that endpoint templates (URL and body) may use.
pub const DELIVERY_NAMES: &[&str] = &["event", "booking", "beds24", "now", "today"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_names_are_the_source_names_plus_watermark() {
        assert_eq!(
            INCREMENTAL_NAMES
                .iter()
                .filter(|n| **n == "watermark")
                .count(),
            1
        );
        let without: Vec<&str> = INCREMENTAL_NAMES
            .iter()
            .copied()
            .filter(|n| *n != "watermark")
            .collect();
        assert_eq!(without, SOURCE_NAMES);
    }
}
