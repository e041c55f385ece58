//! The validated form of a NATS JetStream endpoint (`type = "nats"`): the servers, the subject
//! template, the stream that must exist, credentials and TLS.

use std::path::PathBuf;

use super::Secret;
use crate::template::Template;

/// Where and how a NATS endpoint publishes.
#[derive(Debug, Clone)]
pub struct NatsEndpoint {
    /// Server URLs (`nats://host:port` or `tls://host:port`), tried in order.
    pub servers: Vec<String>,
    /// The subject template; values are escaped so they stay inside one subject token.
    pub subject: Template,
    /// The subject template as written (for messages).
    pub subject_text: String,
    /// A stream that must exist (checked at start-up); messages are published with
    /// `Nats-Expected-Stream` set to it.
    pub stream: Option<String>,
    /// Credentials.
    pub auth: NatsAuth,
    /// Refuse to connect without TLS.
    pub tls_required: bool,
    /// PEM file with the CA certificates to trust (in addition to the system's).
    pub tls_ca_file: Option<PathBuf>,
}

/// Credentials towards a NATS server; every variant's secret comes from a secret reference.
#[derive(Debug, Clone)]
pub enum NatsAuth {
    /// No credentials.
    None,
    /// A server token.
    Token(Secret),
    /// A user name and password.
    UserPassword {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// An NKey seed (`SU...`).
    NKey(Secret),
    /// The contents of a `.creds` file (a user JWT and its NKey seed).
    Creds(Secret),
}

impl NatsAuth {
    /// The `type` word in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            NatsAuth::None => "none",
            NatsAuth::Token(_) => "token",
            NatsAuth::UserPassword { .. } => "user_password",
            NatsAuth::NKey(_) => "nkey",
            NatsAuth::Creds(_) => "creds",
        }
    }
}
