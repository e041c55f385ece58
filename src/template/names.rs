//! The vocabularies: which names a template may use where. Source templates (requests) and
//! endpoint templates (URLs and bodies) see different values; config validation checks every
//! template against these lists, and the contexts that fill them in live with their stage.

/// Names every source request template may use (`secret` stands for `secret.NAME`).
pub const SOURCE_NAMES: &[&str] = &["now", "today", "secret", "page", "offset", "limit", "cursor"];

/// Names an incremental poll's extra parameters may use: the source names and `watermark`.
pub const INCREMENTAL_NAMES: &[&str] = &[
    "now",
    "today",
    "secret",
    "page",
    "offset",
    "limit",
    "cursor",
    "watermark",
];

/// Names a lookup-by-id request may use.
pub const LOOKUP_NAMES: &[&str] = &["now", "today", "id", "secret"];

/// The `event.*` fields endpoint templates may use.
pub const EVENT_NAMES: &[&str] = &[
    "id",
    "type",
    "status",
    "source",
    "booking_id",
    "sequence",
    "attempt",
    "detected_at",
    "changes",
];

/// Names that endpoint templates (URL and body) may use.
pub const DELIVERY_NAMES: &[&str] = &["event", "booking", "beds24", "now", "today"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_names_are_the_source_names_and_the_watermark() {
        let mut want: Vec<&str> = SOURCE_NAMES.to_vec();
        want.push("watermark");
        assert_eq!(INCREMENTAL_NAMES, want.as_slice());
    }
}
