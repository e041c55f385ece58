//! NATS JetStream endpoints (`type = "nats"`): the servers, the subject template (its literal
//! text must make a valid subject to publish to), the stream name, `auth` as NATS credentials
//! from secrets, TLS; and the HTTP-only keys such an endpoint refuses.

use super::{FieldKey, Validator};
use crate::config::{NatsAuth, NatsEndpoint, raw};
use crate::template::Template;

/// Keys only a NATS endpoint has.
const NATS_KEYS: &str = "servers, subject, stream, tls_required, tls_ca_file";

impl Validator {
    /// Whether the endpoint publishes to NATS: `type = "nats"`, or a `nats://` / `tls://` URL
    /// without a `type`.
    pub(super) fn endpoint_is_nats(
        &mut self,
        k: FieldKey,
        kind: Option<&str>,
        url: Option<&str>,
    ) -> bool {
        let nats_url = url.is_some_and(|u| {
            let l = u.trim_start().to_ascii_lowercase();
            l.starts_with("nats://") || l.starts_with("tls://")
        });
        match kind {
            None => nats_url,
            Some("nats") => true,
            Some("http") => {
                if nats_url {
                    self.bad(
                        k("url"),
                        "a nats:// URL needs type = \"nats\" (or no type); an HTTP endpoint needs an http:// or https:// URL",
                    );
                }
                false
            }
            Some(other) => {
                self.bad(
                    k("type"),
                    format!("`{other}` is not valid; use \"http\" (the default: webhooks) or \"nats\" (NATS JetStream)"),
                );
                nats_url
            }
        }
    }

    /// An HTTP endpoint has none of the NATS keys.
    pub(super) fn no_nats_keys(&mut self, k: FieldKey, re: &raw::RawEndpoint) {
        let given = [
            ("servers", re.servers.is_some()),
            ("subject", re.subject.is_some()),
            ("stream", re.stream.is_some()),
            ("tls_required", re.tls_required.is_some()),
            ("tls_ca_file", re.tls_ca_file.is_some()),
        ];
        for (field, set) in given {
            if set {
                self.bad(
                    k(field),
                    "is for NATS endpoints only; add type = \"nats\" (and `servers`, `subject`) or remove it",
                );
            }
        }
    }

    /// The NATS part of an endpoint. Takes `auth` and the HTTP-only keys out of `re`, so the
    /// shared steps after it see their defaults; each HTTP-only key given is a problem.
    pub(super) fn nats_endpoint(
        &mut self,
        k: FieldKey,
        re: &mut raw::RawEndpoint,
    ) -> Option<NatsEndpoint> {
        let http_only = [
            ("method", re.method.take().is_some()),
            ("methods", !std::mem::take(&mut re.methods).is_empty()),
            ("bookid_param", re.bookid_param.take().is_some()),
            ("status_param", re.status_param.take().is_some()),
        ];
        for (field, set) in http_only {
            if set {
                self.bad(
                    k(field),
                    "is for HTTP endpoints; a NATS endpoint publishes a message to `subject`",
                );
            }
        }
        match re.format.take().as_deref() {
            None | Some("v2") => {}
            Some(other) => self.bad(
                k("format"),
                format!("`{other}`: a NATS endpoint publishes v2 bodies (a preset or `body`); remove `format` or set it to \"v2\""),
            ),
        }
        let servers = self.nats_servers(k, re.url.take(), re.servers.take());
        let subject_text = re.subject.take();
        let subject = match &subject_text {
            None => {
                self.bad(
                    k("subject"),
                    "is required for a NATS endpoint: the subject to publish to, e.g. \"bookings.{{ event.source }}.{{ event.kind }}\"",
                );
                None
            }
            Some(t) => self.subject_template(&k("subject"), t),
        };
        let stream = re.stream.take();
        if let Some(s) = &stream
            && (s.is_empty()
                || s.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
                }))
        {
            self.bad(
                k("stream"),
                format!("`{s}` is not a JetStream stream name (no spaces, `.`, `*`, `>`, `/` or `\\`), e.g. \"BOOKINGS\""),
            );
        }
        let auth = match re.auth.take() {
            None => Some(NatsAuth::None),
            Some(a) => self.nats_auth(&k("auth"), a),
        };
        let tls_ca_file = re.tls_ca_file.take();
        if let Some(path) = &tls_ca_file
            && let Err(e) = std::fs::metadata(path)
        {
            self.bad(
                k("tls_ca_file"),
                format!("cannot read {}: {e}", path.display()),
            );
        }
        let tls_required = re.tls_required.take().unwrap_or(false)
            || servers.iter().any(|s| s.starts_with("tls://"));
        Some(NatsEndpoint {
            servers,
            subject: subject?,
            subject_text: subject_text.unwrap_or_default(),
            stream,
            auth: auth?,
            tls_required,
            tls_ca_file,
        })
    }

    /// `servers`, or a `url` standing for a one-server list; at least one, each a `nats://` or
    /// `tls://` URL with a host and no credentials (those go in `auth`, from secrets).
    fn nats_servers(
        &mut self,
        k: FieldKey,
        url: Option<String>,
        servers: Option<Vec<String>>,
    ) -> Vec<String> {
        let (key, list) = match (url, servers) {
            (Some(_), Some(_)) => {
                self.bad(
                    k("url"),
                    "give either `url` or `servers` for a NATS endpoint, not both",
                );
                return Vec::new();
            }
            (Some(u), None) => (k("url"), vec![u]),
            (None, Some(list)) => (k("servers"), list),
            (None, None) => {
                self.bad(
                    k("servers"),
                    "is required for a NATS endpoint: the server URLs, e.g. [\"nats://127.0.0.1:4222\"]",
                );
                return Vec::new();
            }
        };
        if list.is_empty() {
            self.bad(
                &key,
                "is empty; list at least one server, e.g. [\"nats://127.0.0.1:4222\"]",
            );
        }
        let mut out = Vec::new();
        for (i, s) in list.into_iter().enumerate() {
            let item = if key.ends_with("servers") {
                format!("{key}[{i}]")
            } else {
                key.clone()
            };
            match url::Url::parse(s.trim()) {
                Ok(u)
                    if matches!(u.scheme(), "nats" | "tls")
                        && u.host().is_some()
                        && u.username().is_empty()
                        && u.password().is_none() =>
                {
                    let port = u.port().unwrap_or(4222);
                    let host = u.host_str().unwrap_or_default();
                    out.push(format!("{}://{host}:{port}", u.scheme()));
                }
                Ok(u) if !u.username().is_empty() || u.password().is_some() => self.bad(
                    item,
                    "credentials do not belong in the URL; use `auth` with a secret (token, user_password, nkey or creds)",
                ),
                Ok(_) => self.bad(
                    item,
                    format!("`{s}` must be a nats:// or tls:// URL with a host, e.g. \"nats://127.0.0.1:4222\""),
                ),
                Err(e) => self.bad(item, format!("`{s}` is not a valid URL ({e})")),
            }
        }
        out
    }

    /// The subject template: the usual endpoint names, and literal text that makes a subject
    /// one may publish to (tokens separated by `.`, none empty, no wildcards or spaces).
    fn subject_template(&mut self, key: &str, text: &str) -> Option<Template> {
        let template = match Template::parse(text).and_then(|t| {
            t.check_names(crate::template::names::DELIVERY_NAMES)
                .map(|()| t)
        }) {
            Ok(t) => {
                self.known_names(key, &t.names());
                t
            }
            Err(e) => {
                self.bad(key, e.to_string());
                return None;
            }
        };
        // Every placeholder renders as at least one character that cannot break a token.
        let mut sample = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("{{") {
            sample.push_str(&rest[..i]);
            sample.push('x');
            rest = rest[i..]
                .find("}}")
                .map(|j| &rest[i + j + 2..])
                .unwrap_or("");
        }
        sample.push_str(rest);
        if let Err(why) = crate::template::check_subject(&sample) {
            self.bad(
                key,
                format!("`{text}` is not a subject to publish to: {why}; e.g. \"bookings.{{{{ event.source }}}}.{{{{ event.kind }}}}\""),
            );
            return None;
        }
        Some(template)
    }

    /// `auth` of a NATS endpoint: `none`, `token`, `user_password`, `nkey` or `creds`, each
    /// secret from a secret reference.
    fn nats_auth(&mut self, key: &str, a: raw::RawAuth) -> Option<NatsAuth> {
        let kinds = "\"none\", \"token\", \"user_password\", \"nkey\" or \"creds\"";
        let extra = [
            ("name", a.name.is_some()),
            ("token_url", a.token_url.is_some()),
            ("client_id", a.client_id.is_some()),
            ("scope", a.scope.is_some()),
            ("refresh_header", a.refresh_header.is_some()),
            ("token_pointer", a.token_pointer.is_some()),
            ("expires_pointer", a.expires_pointer.is_some()),
            ("header", a.header.is_some()),
        ];
        for (field, set) in extra {
            if set {
                self.bad(
                    format!("{key}.{field}"),
                    format!("is not used by NATS auth; NATS auth takes `type` ({kinds}), `username` (user_password) and `secret`"),
                );
            }
        }
        let secret = |v: &mut Validator, what: &str| -> Option<crate::config::Secret> {
            match &a.secret {
                Some(s) => v.secret(&format!("{key}.secret"), s),
                None => {
                    v.bad(
                        format!("{key}.secret"),
                        format!(
                            "is required: {what}, e.g. {{ credential = \"nats-{}\" }}",
                            a.kind.replace('_', "-")
                        ),
                    );
                    None
                }
            }
        };
        if a.username.is_some() && a.kind != "user_password" {
            self.bad(
                format!("{key}.username"),
                "is only for type = \"user_password\"",
            );
        }
        match a.kind.as_str() {
            "none" => Some(NatsAuth::None),
            "token" => secret(self, "the server token").map(NatsAuth::Token),
            "user_password" => {
                let username = a.username.clone();
                if username.as_deref().is_none_or(str::is_empty) {
                    self.bad(
                        format!("{key}.username"),
                        "is required for type = \"user_password\"",
                    );
                }
                let password = secret(self, "the password")?;
                Some(NatsAuth::UserPassword {
                    username: username?,
                    password,
                })
            }
            "nkey" => {
                let seed = secret(self, "the NKey seed (starts with SU)")?;
                if let Err(e) = nkeys::KeyPair::from_seed(seed.expose()) {
                    // The error names the problem, never the seed.
                    self.bad(
                        format!("{key}.secret"),
                        format!("is not an NKey user seed ({e}); it starts with \"SU\""),
                    );
                    return None;
                }
                Some(NatsAuth::NKey(seed))
            }
            "creds" => {
                let creds = secret(
                    self,
                    "the contents of the .creds file, e.g. { file = \"/etc/pollhook/user.creds\" }",
                )?;
                // Secrets are read without their trailing line breaks, but async-nats finds the
                // seed only when a line break follows `------END USER NKEY SEED------`, where a
                // file without nsc's closing line of asterisks ends: give it back.
                let creds = crate::config::Secret(format!("{}\n", creds.expose()));
                if let Err(e) = async_nats::ConnectOptions::new().credentials(creds.expose()) {
                    self.bad(
                        format!("{key}.secret"),
                        format!("is not a NATS .creds file ({e}); it holds a \"BEGIN NATS USER JWT\" and a \"BEGIN USER NKEY SEED\" section"),
                    );
                    return None;
                }
                Some(NatsAuth::Creds(creds))
            }
            other => {
                self.bad(
                    format!("{key}.type"),
                    format!("`{other}` is not valid for a NATS endpoint; use {kinds} (keys for NATS endpoints: {NATS_KEYS})"),
                );
                None
            }
        }
    }
}
