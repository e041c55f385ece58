//! Row codecs: how this crate's own types are written to and read from redb values. Today
//! serde_json (simple and migration-proof); redb's own type encodings never reach our data.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Result, StoreError};

/// Encodes a row for `table`.
pub(super) fn encode<T: Serialize>(table: &'static str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Encode {
        table,
        reason: e.to_string(),
    })
}

/// Decodes a row read from `table`.
pub(super) fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}
