//! Resolving a secret reference — `{ file = "/path" }`, `{ env = "VARIABLE" }` or
//! `{ credential = "name" }` (a systemd `LoadCredential=` name) — to its value.

use std::path::Path;

use super::Validator;
use crate::config::{Secret, raw};

impl Validator {
    /// The value of the secret `raw` refers to, without trailing line breaks; it must not be
    /// empty.
    pub(super) fn secret(&mut self, key: &str, raw: &raw::RawSecret) -> Option<Secret> {
        let set = [
            raw.file.is_some(),
            raw.env.is_some(),
            raw.credential.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            self.bad(
                key,
                "a secret is given as exactly one of { file = \"/path\" }, { env = \"VARIABLE\" } or { credential = \"name\" } (a systemd LoadCredential= name)",
            );
            return None;
        }
        let value = if let Some(path) = &raw.file {
            match std::fs::read_to_string(path) {
                Ok(s) => s,
                Err(e) => {
                    self.bad(
                        key,
                        format!("cannot read secret file {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        } else if let Some(var) = &raw.env {
            match std::env::var(var) {
                Ok(s) => s,
                Err(_) => {
                    self.bad(
                        key,
                        format!("environment variable {var} is not set (or not UTF-8)"),
                    );
                    return None;
                }
            }
        } else if let Some(name) = &raw.credential {
            let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                self.bad(
                    key,
                    format!(
                        "credential `{name}` needs CREDENTIALS_DIRECTORY, which systemd sets for LoadCredential=; it is not set"
                    ),
                );
                return None;
            };
            let path = Path::new(&dir).join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => s,
                Err(e) => {
                    self.bad(
                        key,
                        format!("cannot read credential {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        } else {
            return None;
        };
        let value = value.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            self.bad(key, "the secret is empty");
            return None;
        }
        Some(Secret(value))
    }
}
