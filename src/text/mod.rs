//! Text from outside made safe to keep and to show: configured secrets taken out of what remotes
//! send back, control characters escaped in what is logged. A leaf: it imports nothing from the
//! crate.
//!
//! | file       | owns |
//! |------------|------|
//! | [`redact`] | the secrets a remote may echo, in the forms they travel in, replaced by `<redacted>` |
//! | [`escape`] | a `Display` wrapper that escapes control characters for log lines |

pub mod escape;
pub mod redact;

pub use escape::Escaped;
pub use redact::{REDACTED, Redactor};
