//! Whether a ping comes from its booking system (pure): a shared token in the path, a query
//! parameter or a header, HTTP Basic, an HMAC of the body, or a Standard Webhooks signature.
//! Every comparison of a secret runs in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::{PingAuth, SignatureEncoding, TokenPlace};

/// What a verification looks at.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The path segment after the ping path (`auth.in = "path"`), if any.
    pub path_token: Option<&'a str>,
    /// The raw query string.
    pub query: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a [u8],
    /// pollhook's clock (seconds since epoch), for signature timestamps.
    pub now_s: i64,
}

/// Why a ping was refused (logged; the sender only gets 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credential where one is expected.
    #[error("no credential")]
    Missing,
    /// A credential that does not match.
    #[error("wrong credential")]
    Wrong,
    /// A signature whose timestamp is outside the tolerance (a replay, or a clock far off).
    #[error("signature timestamp outside the tolerance")]
    Stale,
}

/// Checks a ping against its source's `auth`.
pub fn check(auth: &PingAuth, p: &Presented<'_>) -> Result<(), Denied> {
    match auth {
        PingAuth::None => Ok(()),
        PingAuth::Token { place, token } => {
            let given = match place {
                TokenPlace::Path => p.path_token.map(str::to_string),
                TokenPlace::Query(name) => url::form_urlencoded::parse(p.query.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned()),
                TokenPlace::Header(name) => header(p.headers, name).map(str::to_string),
            };
            let given = given.ok_or(Denied::Missing)?;
            same(given.as_bytes(), token.expose().as_bytes())
        }
        PingAuth::Basic { username, password } => {
            let value = header(p.headers, "authorization").ok_or(Denied::Missing)?;
            let b64 = value
                .strip_prefix("Basic ")
                .or_else(|| value.strip_prefix("basic "))
                .ok_or(Denied::Missing)?;
            let decoded = STANDARD.decode(b64.trim()).map_err(|_| Denied::Wrong)?;
            let expected = format!("{username}:{}", password.expose());
            same(&decoded, expected.as_bytes())
        }
        PingAuth::Hmac {
            header: name,
            encoding,
            prefix,
            secret,
        } => {
            let value = header(p.headers, name).ok_or(Denied::Missing)?;
            let sig = value.strip_prefix(prefix.as_str()).ok_or(Denied::Wrong)?;
            let sig = match encoding {
                SignatureEncoding::Hex => hex_decode(sig.trim()),
                SignatureEncoding::Base64 => STANDARD.decode(sig.trim()).ok(),
            }
            .ok_or(Denied::Wrong)?;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
                .map_err(|_| Denied::Wrong)?;
            mac.update(p.body);
            mac.verify_slice(&sig).map_err(|_| Denied::Wrong)
        }
        PingAuth::StandardWebhooks { key, tolerance } => {
            let id = header(p.headers, "webhook-id").ok_or(Denied::Missing)?;
            let ts = header(p.headers, "webhook-timestamp").ok_or(Denied::Missing)?;
            let sig = header(p.headers, "webhook-signature").ok_or(Denied::Missing)?;
            let at: i64 = ts.trim().parse().map_err(|_| Denied::Wrong)?;
            if p.now_s.abs_diff(at) > tolerance.as_secs() {
                return Err(Denied::Stale);
            }
            if crate::signing::verify(&[key.bytes().to_vec()], id, ts, p.body, sig) {
                Ok(())
            } else {
                Err(Denied::Wrong)
            }
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Equal in constant time (the lengths are compared through fixed-size digests, so a wrong
/// length takes as long as a wrong byte).
fn same(given: &[u8], expected: &[u8]) -> Result<(), Denied> {
    use sha2::Digest as _;
    let a = sha2::Sha256::digest(given);
    let b = sha2::Sha256::digest(expected);
    if bool::from(a.as_slice().ct_eq(b.as_slice())) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;
    use crate::signing::{SigningKey, sign};

    fn presented<'a>(headers: &'a HeaderMap, query: &'a str, body: &'a [u8]) -> Presented<'a> {
        Presented {
            path_token: None,
            query,
            headers,
            body,
            now_s: 1_700_000_000,
        }
    }

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_string())
    }

    #[test]
    fn tokens_in_path_query_and_header() {
        let h = HeaderMap::new();
        let path = PingAuth::Token {
            place: TokenPlace::Path,
            token: secret("s3cret"),
        };
        let mut p = presented(&h, "", b"");
        assert_eq!(check(&path, &p), Err(Denied::Missing));
        p.path_token = Some("s3cre");
        assert_eq!(check(&path, &p), Err(Denied::Wrong));
        p.path_token = Some("s3cret");
        assert_eq!(check(&path, &p), Ok(()));

        let query = PingAuth::Token {
            place: TokenPlace::Query("token".into()),
            token: secret("a b"),
        };
        assert_eq!(check(&query, &presented(&h, "token=a+b", b"")), Ok(()));
        assert_eq!(
            check(&query, &presented(&h, "token=ab", b"")),
            Err(Denied::Wrong)
        );

        let mut h = HeaderMap::new();
        h.insert("x-pollhook-token", "t".parse().unwrap());
        let header = PingAuth::Token {
            place: TokenPlace::Header("X-Pollhook-Token".into()),
            token: secret("t"),
        };
        assert_eq!(check(&header, &presented(&h, "", b"")), Ok(()));
    }

    #[test]
    fn basic() {
        let auth = PingAuth::Basic {
            username: "beds24".into(),
            password: secret("pw"),
        };
        let mut h = HeaderMap::new();
        assert_eq!(check(&auth, &presented(&h, "", b"")), Err(Denied::Missing));
        h.insert(
            "authorization",
            format!("Basic {}", STANDARD.encode("beds24:pw"))
                .parse()
                .unwrap(),
        );
        assert_eq!(check(&auth, &presented(&h, "", b"")), Ok(()));
        h.insert(
            "authorization",
            format!("Basic {}", STANDARD.encode("beds24:px"))
                .parse()
                .unwrap(),
        );
        assert_eq!(check(&auth, &presented(&h, "", b"")), Err(Denied::Wrong));
    }

    #[test]
    fn hmac_hex_with_prefix_and_base64() {
        let body = br#"{"code":"A"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(body);
        let raw = mac.finalize().into_bytes();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let auth = PingAuth::Hmac {
            header: "X-Signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: "sha256=".into(),
            secret: secret("k"),
        };
        let mut h = HeaderMap::new();
        h.insert("x-signature", format!("sha256={hex}").parse().unwrap());
        assert_eq!(check(&auth, &presented(&h, "", body)), Ok(()));
        assert_eq!(check(&auth, &presented(&h, "", b"{}")), Err(Denied::Wrong));
        h.insert("x-signature", hex.parse().unwrap());
        assert_eq!(check(&auth, &presented(&h, "", body)), Err(Denied::Wrong));
        let b64 = PingAuth::Hmac {
            header: "X-Signature".into(),
            encoding: SignatureEncoding::Base64,
            prefix: String::new(),
            secret: secret("k"),
        };
        h.insert("x-signature", STANDARD.encode(raw).parse().unwrap());
        assert_eq!(check(&b64, &presented(&h, "", body)), Ok(()));
    }

    #[test]
    fn standard_webhooks_checks_signature_and_age() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"code":"A"}"#;
        let now = 1_700_000_000;
        let sig = sign(std::slice::from_ref(&key), "msg_1", now - 10, body);
        let auth = PingAuth::StandardWebhooks {
            key,
            tolerance: Duration::from_secs(300),
        };
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        h.insert("webhook-timestamp", (now - 10).to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        assert_eq!(check(&auth, &presented(&h, "", body)), Ok(()));
        assert_eq!(check(&auth, &presented(&h, "", b"{}")), Err(Denied::Wrong));
        let mut late = presented(&h, "", body);
        late.now_s = now + 400;
        assert_eq!(check(&auth, &late), Err(Denied::Stale));
    }
}
