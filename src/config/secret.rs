//! The secret type: a credential resolved from a file, an environment variable or a systemd
//! credential when the configuration is loaded, never shown by `Debug`.

use std::fmt;

/// A secret value resolved from a file, an environment variable or a systemd credential.
/// `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    /// A secret from its value (resolving references is the validator's job; this is for code
    /// and tests that already hold the value).
    #[cfg(test)]
    pub(crate) fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call only where it is put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
