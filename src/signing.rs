//! Standard Webhooks signatures: secret parsing, `v1,` HMAC-SHA256 signing and verification.
//!
//! Spec: <https://www.standardwebhooks.com/> (see `shared/reference/webhooks.md`). The signed
//! content is `{msg_id}.{timestamp}.{body}` over the exact bytes sent; the key is the base64-decoded
//! part of a `whsec_` secret. Pure functions: no clock, no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signing secret was refused. Never contains the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The secret is not `whsec_` followed by standard base64.
    #[error("a signing secret must be `whsec_` followed by base64 (24 to 64 random bytes)")]
    NotBase64,
    /// The decoded key is outside the 24..=64 bytes the spec allows.
    #[error("a signing secret must decode to 24 to 64 bytes, this one has {0}")]
    BadLength(usize),
}

/// A decoded signing key. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Parses a `whsec_...` secret (the prefix is optional; padded or unpadded base64).
    pub fn parse(secret: &str) -> Result<SigningKey, SecretError> {
        let b64 = secret.trim();
        let b64 = b64.strip_prefix("whsec_").unwrap_or(b64);
        let key = STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .map_err(|_| SecretError::NotBase64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(SigningKey(key))
    }

    /// The raw key bytes (for the demo receiver's verifier).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

fn mac(key: &[u8], msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header value: one `v1,<base64>` entry per key, space-separated, so a
/// receiver holding either the old or the new secret accepts the request during a rotation.
pub fn sign(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mut out = String::new();
    for key in keys {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&STANDARD.encode(mac(&key.0, msg_id, &ts, body).finalize().into_bytes()));
    }
    out
}

/// Verifies a `webhook-signature` header value against any of the raw keys, in constant time per
/// comparison. Entries of unknown versions are skipped, as the spec requires. Does not check the
/// timestamp's age: the caller decides its tolerance.
pub fn verify(
    secrets: &[Vec<u8>],
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
) -> bool {
    for entry in signature_header.split(' ') {
        let Some(b64) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(b64) else {
            continue;
        };
        for key in secrets {
            if mac(key, msg_id, timestamp, body).verify_slice(&sig).is_ok() {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SigningKey {
        SigningKey::parse(s).unwrap()
    }

    #[test]
    fn official_vector_a() {
        let k = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = sign(
            &[k],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn official_vector_b() {
        let k = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let sig = sign(
            &[k],
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn empty_body_vector() {
        let k = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = sign(&[k], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b"");
        assert_eq!(sig, "v1,v48jdbgvh29KJz2Qc+ghw8G6vG3nAKnujWBg8oM/62A=");
    }

    #[test]
    fn rotation_signs_with_every_key_and_verifies_with_either() {
        let old = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let new = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        let header = sign(&[old.clone(), new.clone()], "evt_1", 1700000000, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(
            std::slice::from_ref(&old.0),
            "evt_1",
            "1700000000",
            b"{}",
            &header
        ));
        assert!(verify(
            std::slice::from_ref(&new.0),
            "evt_1",
            "1700000000",
            b"{}",
            &header
        ));
        assert!(!verify(&[new.0], "evt_1", "1700000001", b"{}", &header));
        assert!(!verify(&[old.0], "evt_1", "1700000000", b"{ }", &header));
    }

    #[test]
    fn verify_skips_unknown_versions_and_garbage() {
        let k = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let good = sign(std::slice::from_ref(&k), "m", 1, b"x");
        let header =
            format!("v2,abc v1,!!notbase64 v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {good}");
        assert!(verify(std::slice::from_ref(&k.0), "m", "1", b"x", &header));
        assert!(!verify(
            &[k.0],
            "m",
            "1",
            b"x",
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
        ));
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        assert_eq!(SigningKey::parse("whsec_%%%"), Err(SecretError::NotBase64));
        assert_eq!(
            SigningKey::parse("whsec_c2hvcnQ="),
            Err(SecretError::BadLength(5))
        );
        let e = SigningKey::parse("whsec_c2hvcnQ=").unwrap_err().to_string();
        assert!(!e.contains("c2hvcnQ"));
        assert_eq!(
            format!("{:?}", key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            "SigningKey(<redacted>)"
        );
    }

    #[test]
    fn the_official_library_accepts_our_signatures() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"type":"booking.modified","data":{"id":"1"}}"#;
        let ts = chrono::Utc::now().timestamp();
        let sig = sign(&[key(secret)], "evt_abc", ts, body);
        let wh = standardwebhooks::Webhook::new(secret).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "evt_abc".parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", sig.parse().unwrap());
        wh.verify(body, &headers).unwrap();
        headers.insert("webhook-id", "evt_abd".parse().unwrap());
        assert!(wh.verify(body, &headers).is_err());
    }
}
