//! The `[auth]` table of a source or an endpoint: which kind of authentication, and the names,
//! URLs and secret each kind needs.

use super::Validator;
use crate::config::{Auth, Secret, raw};

/// A `token_refresh` login's default `token_url`, relative to the source's URL: Beds24 API v2
/// lists bookings at `<base>/bookings` and logs in at `<base>/authentication/token`.
pub const TOKEN_REFRESH_PATH: &str = "authentication/token";

impl Validator {
    /// `[auth]` at `key`; `allowed` lists the types valid there (sources accept more than
    /// endpoints do).
    pub(super) fn auth(&mut self, key: &str, a: raw::RawAuth, allowed: &[&str]) -> Option<Auth> {
        if !allowed.contains(&a.kind.as_str()) {
            self.bad(
                format!("{key}.type"),
                format!(
                    "`{}` is not valid here; use {}",
                    a.kind,
                    allowed
                        .iter()
                        .map(|t| format!("\"{t}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        }
        if a.prefix.is_some() && a.kind != "header" {
            self.bad(
                format!("{key}.prefix"),
                format!(
                    "only applies to type = \"header\" (type \"{}\" builds its own header value)",
                    a.kind
                ),
            );
        }
        match a.kind.as_str() {
            "none" => Some(Auth::None),
            "header" => {
                let name = self.auth_field(key, &a, "name", a.name.as_deref(), "the header name");
                let name = self.auth_header_name(key, "name", name);
                let prefix = a.prefix.clone().unwrap_or_default();
                let value = self.auth_secret(key, &a).and_then(|s| {
                    let valid =
                        reqwest::header::HeaderValue::from_str(&format!("{prefix}{}", s.expose()))
                            .is_ok();
                    if valid {
                        Some(s)
                    } else if reqwest::header::HeaderValue::from_str(&prefix).is_err() {
                        self.bad(
                            format!("{key}.prefix"),
                            "contains characters not allowed in an HTTP header",
                        );
                        None
                    } else {
                        self.auth_header_secret(key, s)
                    }
                });
                Some(Auth::Header {
                    name: name?,
                    prefix,
                    value: value?,
                })
            }
            "query" => {
                let name =
                    self.auth_field(key, &a, "name", a.name.as_deref(), "the parameter name");
                let value = self.auth_secret(key, &a);
                Some(Auth::Query {
                    name: name?,
                    value: value?,
                })
            }
            "basic" => {
                let username =
                    self.auth_field(key, &a, "username", a.username.as_deref(), "the user name");
                let password = self.auth_secret(key, &a);
                Some(Auth::Basic {
                    username: username?,
                    password: password?,
                })
            }
            "bearer" => Some(Auth::Bearer {
                token: self
                    .auth_secret(key, &a)
                    .and_then(|s| self.auth_header_secret(key, s))?,
            }),
            "oauth2" => {
                let token_url = self.url(&format!("{key}.token_url"), a.token_url.as_deref());
                let client_id = self.auth_field(
                    key,
                    &a,
                    "client_id",
                    a.client_id.as_deref(),
                    "the OAuth2 client id",
                );
                let secret = self.auth_secret(key, &a);
                Some(Auth::OAuth2 {
                    token_url: token_url?,
                    client_id: client_id?,
                    secret: secret?,
                    scope: a.scope.clone(),
                })
            }
            "token_refresh" => self.token_refresh(key, &a),
            _ => None,
        }
    }

    /// `type = "token_refresh"`: a refresh token exchanged for a short-lived access token.
    /// Without `token_url`, the login URL is [`TOKEN_REFRESH_PATH`] resolved against the
    /// source's URL (Beds24 API v2: `.../v2/bookings` -> `.../v2/authentication/token`).
    fn token_refresh(&mut self, key: &str, a: &raw::RawAuth) -> Option<Auth> {
        let token_url = match (a.token_url.as_deref(), &self.auth_base) {
            (None, Some(base)) => base.join(TOKEN_REFRESH_PATH).ok(),
            (given, _) => self.url(&format!("{key}.token_url"), given),
        };
        let refresh_header = self.auth_header_name(
            key,
            "refresh_header",
            Some(
                a.refresh_header
                    .clone()
                    .unwrap_or_else(|| "refreshToken".into()),
            ),
        );
        let header = self.auth_header_name(
            key,
            "header",
            Some(a.header.clone().unwrap_or_else(|| "token".into())),
        );
        let token_pointer = a.token_pointer.clone().unwrap_or_else(|| "/token".into());
        let expires_pointer = a
            .expires_pointer
            .clone()
            .unwrap_or_else(|| "/expiresIn".into());
        self.pointer(&format!("{key}.token_pointer"), &token_pointer);
        self.pointer(&format!("{key}.expires_pointer"), &expires_pointer);
        let secret = self
            .auth_secret(key, a)
            .and_then(|s| self.auth_header_secret(key, s));
        Some(Auth::TokenRefresh {
            token_url: token_url?,
            refresh_header: refresh_header?,
            secret: secret?,
            token_pointer,
            expires_pointer,
            header: header?,
        })
    }

    /// The `secret` every auth type but `none` needs.
    fn auth_secret(&mut self, key: &str, a: &raw::RawAuth) -> Option<Secret> {
        match &a.secret {
            Some(s) => self.secret(&format!("{key}.secret"), s),
            None => {
                self.bad(format!("{key}.secret"), "is required for this auth type: { file = \"...\" }, { env = \"...\" } or { credential = \"...\" }");
                None
            }
        }
    }

    /// A non-empty setting `field` that auth type `a.kind` needs (`what` says what it is for).
    fn auth_field(
        &mut self,
        key: &str,
        a: &raw::RawAuth,
        field: &str,
        value: Option<&str>,
        what: &str,
    ) -> Option<String> {
        match value {
            Some(n) if !n.is_empty() => Some(n.to_string()),
            _ => {
                self.bad(
                    format!("{key}.{field}"),
                    format!("is required for auth type \"{}\" ({what})", a.kind),
                );
                None
            }
        }
    }

    /// `value` (from setting `field`) if it is a valid HTTP header name.
    fn auth_header_name(
        &mut self,
        key: &str,
        field: &str,
        value: Option<String>,
    ) -> Option<String> {
        let n = value?;
        if reqwest::header::HeaderName::from_bytes(n.as_bytes()).is_err() {
            self.bad(
                format!("{key}.{field}"),
                format!("`{n}` is not a valid HTTP header name"),
            );
            return None;
        }
        Some(n)
    }

    /// The secret `s` if it can be sent as an HTTP header value.
    fn auth_header_secret(&mut self, key: &str, s: Secret) -> Option<Secret> {
        if reqwest::header::HeaderValue::from_str(s.expose()).is_err() {
            self.bad(
                format!("{key}.secret"),
                "the secret contains characters not allowed in an HTTP header",
            );
            return None;
        }
        Some(s)
    }
}
