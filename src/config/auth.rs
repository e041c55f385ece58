//! How outgoing requests are authenticated, as configured for a source or an endpoint (the
//! mechanics of applying it and minting tokens live in `crate::http::auth`).

use url::Url;

use super::Secret;

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Nothing.
    None,
    /// A secret header (e.g. Beds24's `token`, Smoobu's `Api-Key`, pretix's
    /// `Authorization: Token <t>`).
    Header {
        /// Header name.
        name: String,
        /// Text sent before the secret (`"Token "`); empty for the secret alone.
        prefix: String,
        /// The secret part of the header value.
        value: Secret,
    },
    /// A secret query parameter.
    Query {
        /// Parameter name.
        name: String,
        /// Parameter value.
        value: Secret,
    },
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>` with a static token.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// OAuth2 client credentials: a form POST to `token_url`, then `Authorization: Bearer`.
    OAuth2 {
        /// Token endpoint.
        token_url: Url,
        /// Client id.
        client_id: String,
        /// Client secret.
        secret: Secret,
        /// Optional scope.
        scope: Option<String>,
    },
    /// A login flow: GET `token_url` with the refresh token in `refresh_header`; the answer's
    /// `token_pointer` is the access token (sent in `header`), `expires_pointer` its lifetime in
    /// seconds.
    TokenRefresh {
        /// Token endpoint.
        token_url: Url,
        /// Header carrying the refresh token.
        refresh_header: String,
        /// The refresh token.
        secret: Secret,
        /// JSON Pointer to the access token in the answer.
        token_pointer: String,
        /// JSON Pointer to the lifetime (seconds) in the answer.
        expires_pointer: String,
        /// Header the access token is sent in.
        header: String,
    },
}
