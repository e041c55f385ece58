//! The `[ingress]` table and each source's `[ping]` table: where the ingress listens and what
//! it accepts, and per source the ping path, the sender's authentication and where the ids are.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{FieldKey, Validator};
use crate::config::ping::{
    DEFAULT_INGRESS_LISTEN, IdFrom, IngressConfig, PingAuth, PingConfig, PingMethod, PingPreset,
    SignatureEncoding, TokenPlace,
};
use crate::config::{SourceConfig, raw};
use crate::signing::SigningKey;

const AUTH_HINT: &str = "use \"token\" (with in = \"path\", \"query\" or \"header\"), \"basic\", \"hmac\", \"standard_webhooks\" or \"none\"";

impl Validator {
    /// `[ingress]`: off unless the table is present (and its `listen` is not "off").
    pub(super) fn ingress(&mut self, raw: Option<raw::RawIngress>) -> Option<IngressConfig> {
        let raw = raw?;
        let listen = match raw.listen.as_deref() {
            Some("off") => return None,
            None => DEFAULT_INGRESS_LISTEN,
            Some(s) => s,
        };
        let listen = match listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.bad(
                    "ingress.listen",
                    format!("`{listen}` is not an address; use \"127.0.0.1:9478\", \"0.0.0.0:9478\" or \"off\""),
                );
                return None;
            }
        };
        let max_body = match &raw.max_body {
            None => 64 * 1024,
            Some(s) => self.size("ingress.max_body", s, 1024, 64 * 1024),
        };
        let timeout = self.positive_duration(
            "ingress.timeout",
            raw.timeout.as_deref(),
            Duration::from_secs(10),
        );
        let backlog = match raw.backlog {
            None => 10_000,
            Some(0) => {
                self.bad("ingress.backlog", "must be at least 1, e.g. 10000");
                10_000
            }
            Some(n) => n as usize,
        };
        let max_connections = match raw.max_connections {
            None => 256,
            Some(0) => {
                self.bad("ingress.max_connections", "must be at least 1, e.g. 256");
                256
            }
            Some(n) => n as usize,
        };
        Some(IngressConfig {
            listen,
            max_body,
            timeout,
            backlog,
            max_connections,
        })
    }

    /// A source's `[ping]` table.
    pub(super) fn ping(&mut self, k: FieldKey, raw: raw::RawPing) -> Option<PingConfig> {
        let key = k("ping");
        let f = |name: &str| format!("{key}.{name}");
        let preset = match raw.preset.as_deref() {
            None => None,
            Some(p) => match PingPreset::named(p) {
                Some(p) => Some(p),
                None => {
                    self.bad(
                        f("preset"),
                        format!(
                            "`{p}` is not a ping preset; use one of: {}",
                            PingPreset::NAMES.join(", ")
                        ),
                    );
                    None
                }
            },
        };
        let path = match raw.path.as_deref() {
            None => {
                self.bad(
                    f("path"),
                    "is required: the path pings arrive at, e.g. \"/ping/hotel\"",
                );
                None
            }
            Some(p) => match path_problem(p) {
                None => Some(p.to_string()),
                Some(why) => {
                    self.bad(
                        f("path"),
                        format!("`{p}` {why}; write a path such as \"/ping/hotel\""),
                    );
                    None
                }
            },
        };
        let methods = match raw.methods {
            Some(list) => {
                let mut out = Vec::new();
                for m in list {
                    match m.to_ascii_uppercase().as_str() {
                        "GET" => out.push(PingMethod::Get),
                        "POST" => out.push(PingMethod::Post),
                        _ => self.bad(
                            f("methods"),
                            format!("`{m}` is not accepted; use [\"GET\"], [\"POST\"] or [\"GET\", \"POST\"]"),
                        ),
                    }
                }
                if out.is_empty() {
                    self.bad(
                        f("methods"),
                        "must name at least one of \"GET\" and \"POST\"",
                    );
                }
                out
            }
            None => preset.map_or(vec![PingMethod::Post], |p| p.methods()),
        };
        let id = match raw.id {
            Some(id) => self.ping_id(&f("id"), id),
            None => match preset {
                Some(p) => Some(p.id()),
                None => {
                    self.bad(
                        f("id"),
                        "is required (or a preset): where the booking id is, e.g. { query = \"bookid\" }, { form = \"bookid\" } or { pointer = \"/code\" }",
                    );
                    None
                }
            },
        };
        if matches!(id, Some(IdFrom::Form(_))) && !methods.contains(&PingMethod::Post) {
            self.bad(
                f("id"),
                "a form field needs POST; add \"POST\" to methods or use { query = \"...\" }",
            );
        }
        if matches!(id, Some(IdFrom::Pointer(_))) && methods.contains(&PingMethod::Get) {
            self.bad(
                f("methods"),
                "a GET request has no JSON body to point into; use methods = [\"POST\"] or id = { query = \"...\" }",
            );
        }
        let auth = match raw.auth {
            None => {
                self.bad(
                    f("auth"),
                    format!("is required: how the sender proves it is the booking system; {AUTH_HINT}, e.g. {{ type = \"token\", in = \"path\", secret = {{ env = \"PING_TOKEN\" }} }}"),
                );
                None
            }
            Some(a) => self.ping_auth(&f("auth"), a),
        };
        let coalesce = self.duration(
            &f("coalesce"),
            raw.coalesce.as_deref(),
            Duration::from_millis(25),
        );
        if coalesce > Duration::from_secs(60) {
            self.bad(
                f("coalesce"),
                "is at most 60s: pings wait this long before their lookup",
            );
        }
        Some(PingConfig {
            path: path?,
            methods,
            auth: auth?,
            id: id?,
            coalesce,
        })
    }

    fn ping_id(&mut self, key: &str, raw: raw::RawPingId) -> Option<IdFrom> {
        let hint = "give exactly one of { query = \"bookid\" }, { form = \"bookid\" } or { pointer = \"/code\" }";
        match (raw.query, raw.form, raw.pointer) {
            (Some(q), None, None) if !q.is_empty() => Some(IdFrom::Query(q)),
            (None, Some(f), None) if !f.is_empty() => Some(IdFrom::Form(f)),
            (None, None, Some(p)) if p.starts_with('/') => Some(IdFrom::Pointer(p)),
            (None, None, Some(p)) => {
                self.bad(
                    key,
                    format!(
                        "`{p}` is not a JSON Pointer to the id; it starts with `/`, e.g. \"/code\""
                    ),
                );
                None
            }
            _ => {
                self.bad(key, hint);
                None
            }
        }
    }

    fn ping_auth(&mut self, key: &str, a: raw::RawPingAuth) -> Option<PingAuth> {
        let f = |name: &str| format!("{key}.{name}");
        let unused = |v: &mut Validator, name: &str, set: bool, kind: &str| {
            if set {
                v.bad(f(name), format!("does not apply to type = \"{kind}\""));
            }
        };
        let secret = |v: &mut Validator, raw: &Option<raw::RawSecret>, what: &str| match raw {
            Some(s) => v.secret(&f("secret"), s),
            None => {
                v.bad(
                    f("secret"),
                    format!("is required: {what}, e.g. {{ env = \"PING_SECRET\" }} or {{ credential = \"ping\" }}"),
                );
                None
            }
        };
        match a.kind.as_str() {
            "none" => {
                unused(self, "secret", a.secret.is_some(), "none");
                Some(PingAuth::None)
            }
            "token" => {
                let place = match (a.place.as_deref(), a.name) {
                    (None | Some("path"), None) => TokenPlace::Path,
                    (Some("query"), name) => {
                        TokenPlace::Query(name.unwrap_or_else(|| "token".into()))
                    }
                    (Some("header"), name) => {
                        let name = name.unwrap_or_else(|| "X-Pollhook-Token".into());
                        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                            self.bad(f("name"), format!("`{name}` is not a header name"));
                        }
                        TokenPlace::Header(name)
                    }
                    (None | Some("path"), Some(_)) => {
                        self.bad(f("name"), "applies only with in = \"query\" or \"header\"");
                        TokenPlace::Path
                    }
                    (Some(other), _) => {
                        self.bad(
                            f("in"),
                            format!(
                                "`{other}` is not valid; use \"path\", \"query\" or \"header\""
                            ),
                        );
                        return None;
                    }
                };
                let token = secret(self, &a.secret, "the token the sender includes")?;
                if place == TokenPlace::Path
                    && !token
                        .expose()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                {
                    self.bad(
                        f("secret"),
                        "a token sent in the path may contain only letters, digits and - . _ ~ (so no proxy re-encodes it); generate one with `openssl rand -hex 32`",
                    );
                }
                Some(PingAuth::Token { place, token })
            }
            "basic" => {
                let Some(username) = a.username else {
                    self.bad(f("username"), "is required for type = \"basic\"");
                    return None;
                };
                let password = secret(self, &a.secret, "the password")?;
                Some(PingAuth::Basic { username, password })
            }
            "hmac" => {
                let header = a.header.unwrap_or_else(|| "X-Signature".into());
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    self.bad(f("header"), format!("`{header}` is not a header name"));
                }
                let encoding = match a.encoding.as_deref() {
                    None | Some("hex") => SignatureEncoding::Hex,
                    Some("base64") => SignatureEncoding::Base64,
                    Some(o) => {
                        self.bad(
                            f("encoding"),
                            format!("`{o}` is not valid; use \"hex\" or \"base64\""),
                        );
                        SignatureEncoding::Hex
                    }
                };
                let secret = secret(self, &a.secret, "the shared HMAC key")?;
                Some(PingAuth::Hmac {
                    header,
                    encoding,
                    prefix: a.prefix.unwrap_or_default(),
                    secret,
                })
            }
            "standard_webhooks" => {
                let s = secret(self, &a.secret, "the whsec_ signing secret the sender uses")?;
                let key = match SigningKey::parse(s.expose()) {
                    Ok(k) => k,
                    Err(e) => {
                        self.bad(f("secret"), e.to_string());
                        return None;
                    }
                };
                let tolerance = self.positive_duration(
                    &f("tolerance"),
                    a.tolerance.as_deref(),
                    Duration::from_secs(300),
                );
                Some(PingAuth::StandardWebhooks { key, tolerance })
            }
            other => {
                self.bad(f("type"), format!("`{other}` is not valid; {AUTH_HINT}"));
                None
            }
        }
    }

    /// Across sources: every ping path is unique and pings need the ingress and a lookup.
    pub(super) fn pings_fit(&mut self, sources: &[SourceConfig], ingress: Option<&IngressConfig>) {
        let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
        for s in sources {
            let Some(p) = &s.ping else { continue };
            if let Some(other) = paths.insert(p.path.as_str(), s.name.as_str()) {
                self.bad(
                    format!("sources.{}.ping.path", s.name),
                    format!(
                        "`{}` is also the ping path of source `{other}`; give each source its own",
                        p.path
                    ),
                );
            }
            if ingress.is_none() {
                self.bad(
                    format!("sources.{}.ping", s.name),
                    "pings arrive at the ingress listener, which is off; add an [ingress] table, e.g. listen = \"127.0.0.1:9478\"",
                );
            }
        }
        // A path that is a prefix of another with a token in the path would be ambiguous.
        for s in sources {
            let Some(p) = &s.ping else { continue };
            if !matches!(
                p.auth,
                PingAuth::Token {
                    place: TokenPlace::Path,
                    ..
                }
            ) {
                continue;
            }
            let prefix = format!("{}/", p.path);
            for (other_path, other) in &paths {
                if other_path.starts_with(&prefix) && *other != s.name {
                    self.bad(
                        format!("sources.{}.ping.path", s.name),
                        format!("with the token in the path, `{}/<token>` could be source `{other}`'s path `{other_path}`; choose paths that do not nest", p.path),
                    );
                }
            }
        }
    }
}

/// What is wrong with a ping path, if anything.
fn path_problem(p: &str) -> Option<&'static str> {
    if !p.starts_with('/') {
        return Some("must start with `/`");
    }
    if p.len() == 1 || p.ends_with('/') {
        return Some("must name at least one segment and not end with `/`");
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._~/".contains(c);
    if !p.chars().all(ok_char) {
        return Some("may contain only letters, digits, `/` and - . _ ~");
    }
    if p[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Some("has an empty, `.` or `..` segment");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::path_problem;

    #[test]
    fn ping_paths_are_plain() {
        assert_eq!(path_problem("/ping/hotel"), None);
        assert_eq!(path_problem("/p-1/a_b.c~d"), None);
        assert!(path_problem("ping").is_some());
        assert!(path_problem("/").is_some());
        assert!(path_problem("/ping/").is_some());
        assert!(path_problem("/ping//x").is_some());
        assert!(path_problem("/ping/../admin").is_some());
        assert!(path_problem("/ping?x=1").is_some());
        assert!(path_problem("/ping%2F").is_some());
    }
}
