//! Resolving a secret reference — `{ file = "/path" }`, `{ env = "VARIABLE" }` or
//! `{ credential = "name" }` (a systemd `LoadCredential=` name) — to its value.

use std::path::Path;

use url::Url;

use super::Validator;
use crate::config::{Auth, Secret, raw};
use crate::text::Redactor;

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

/// What the remotes of a source or an endpoint must never get to show: every secret it sends
/// (its `auth`, its template `secrets`), the passwords in its URLs, and the logins they make
/// (`Basic` credentials). Signing keys are left out: they never go on the wire.
pub(super) fn redactor<'a>(
    auth: &'a Auth,
    named: impl IntoIterator<Item = &'a Secret>,
    urls: impl IntoIterator<Item = Option<&'a Url>>,
) -> Redactor {
    let mut secrets: Vec<String> = named.into_iter().map(|s| s.expose().to_string()).collect();
    let mut logins: Vec<(String, String)> = Vec::new();
    let mut urls: Vec<&Url> = urls.into_iter().flatten().collect();
    match auth {
        Auth::None => {}
        Auth::Header { value, .. } => {
            let value = value.expose();
            secrets.push(value.to_string());
            // `Token abc`: the credentials after a scheme are echoed on their own too.
            if let Some((_, credentials)) = value.split_once(' ') {
                secrets.push(credentials.trim().to_string());
            }
        }
        Auth::Query { value, .. } => secrets.push(value.expose().to_string()),
        Auth::Basic { username, password } => {
            logins.push((username.clone(), password.expose().to_string()));
        }
        Auth::Bearer { token } => secrets.push(token.expose().to_string()),
        Auth::OAuth2 {
            token_url,
            client_id,
            secret,
            ..
        } => {
            // Token endpoints take the client secret in the form or as Basic credentials.
            logins.push((client_id.clone(), secret.expose().to_string()));
            urls.push(token_url);
        }
        Auth::TokenRefresh {
            token_url, secret, ..
        } => {
            secrets.push(secret.expose().to_string());
            urls.push(token_url);
        }
    }
    for url in urls {
        if let Some(password) = url.password() {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            secrets.push(password.to_string());
            logins.push((decode(url.username()), decode(password)));
        }
    }
    Redactor::new(
        secrets.iter().map(String::as_str),
        logins.iter().map(|(u, p)| (u.as_str(), p.as_str())),
    )
}
