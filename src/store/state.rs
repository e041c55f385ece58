//! Endpoint state (disabled after a 410) and the token cache.

use redb::{ReadableDatabase, ReadableTable};

use super::codec::{decode, decode_delivery, encode, encode_delivery};
use super::rows::{Disabled, EndpointState};
use super::{DELIVERIES, DUE, ENDPOINTS, Result, Store, TOKENS};
use crate::http::{Token, TokenCache};
use crate::outbox::Delivery;

impl Store {
    /// Every endpoint's persistent state.
    pub fn endpoint_states(&self) -> Result<Vec<(String, EndpointState)>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(ENDPOINTS)?;
            let mut out = Vec::new();
            for entry in t.range::<&str>(..)? {
                let (k, v) = entry?;
                out.push((k.value().to_string(), decode("endpoints_v1", v.value())?));
            }
            Ok(out)
        })
    }

    /// Disables (with a reason) or re-enables an endpoint. Re-enabling makes its waiting lane
    /// heads due now.
    pub fn set_endpoint_disabled(
        &self,
        endpoint: &str,
        disabled: Option<Disabled>,
        now_ms: i64,
    ) -> Result<()> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(ENDPOINTS)?;
                let mut state: EndpointState = match t.get(endpoint)? {
                    Some(v) => decode("endpoints_v1", v.value())?,
                    None => EndpointState::default(),
                };
                let enabling = disabled.is_none() && state.disabled.is_some();
                state.disabled = disabled;
                t.insert(endpoint, encode("endpoints_v1", &state)?.as_slice())?;
                if enabling {
                    let mut due = txn.open_table(DUE)?;
                    let mut deliveries = txn.open_table(DELIVERIES)?;
                    let mut heads: Vec<(i64, u64)> = Vec::new();
                    for entry in due.range(
                        (endpoint, now_ms.saturating_add(1), 0u64)..=(endpoint, i64::MAX, u64::MAX),
                    )? {
                        let (k, _) = entry?;
                        let (_, at, seq) = k.value();
                        heads.push((at, seq));
                    }
                    for (at, seq) in heads {
                        due.remove((endpoint, at, seq))?;
                        due.insert((endpoint, now_ms, seq), ())?;
                        let row: Option<Delivery> = match deliveries.get((endpoint, seq))? {
                            Some(v) => Some(decode_delivery(v.value())?),
                            None => None,
                        };
                        if let Some(mut d) = row {
                            d.next_ms = now_ms;
                            deliveries.insert((endpoint, seq), encode_delivery(&d).as_slice())?;
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// A cached token.
    pub fn token(&self, key: &str) -> Result<Option<Token>> {
        self.guard(|| {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(TOKENS)?;
            match t.get(key)? {
                Some(v) => {
                    let row: TokenRow = decode("tokens_v1", v.value())?;
                    Ok(Some(Token {
                        token: row.token,
                        expires_ms: row.expires_ms,
                    }))
                }
                None => Ok(None),
            }
        })
    }

    /// Caches a token (or forgets it with `None`).
    pub fn set_token(&self, key: &str, token: Option<&Token>) -> Result<()> {
        self.guard(|| {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(TOKENS)?;
                match token {
                    Some(tok) => {
                        let row = TokenRow {
                            token: tok.token.clone(),
                            expires_ms: tok.expires_ms,
                        };
                        t.insert(key, encode("tokens_v1", &row)?.as_slice())?;
                    }
                    None => {
                        t.remove(key)?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })
    }
}

/// The stored form of a cached token.
#[derive(serde::Serialize, serde::Deserialize)]
struct TokenRow {
    token: String,
    expires_ms: i64,
}

impl TokenCache for Store {
    fn get(&self, key: &str) -> std::result::Result<Option<Token>, String> {
        self.token(key).map_err(|e| e.to_string())
    }
    fn put(&self, key: &str, token: Option<&Token>) -> std::result::Result<(), String> {
        self.set_token(key, token).map_err(|e| e.to_string())
    }
}
