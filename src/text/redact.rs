//! Redaction: the secrets of one source or endpoint, in every form they travel in (as written,
//! inside `Basic` credentials, base64, query-encoded, JSON-escaped), replaced by `<redacted>` in
//! whatever a remote sends back (an answer's start, an error body) before it is kept or shown.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// The secret strings of one source or endpoint and their wire forms; replaces each occurrence
/// with [`REDACTED`]. `Debug` never shows them. The default redacts nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// Longest first, so the longest form wins where several match at one place.
    needles: Vec<Vec<u8>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor(<redacted>)")
    }
}

/// The forms `s` may be echoed in: as it is, base64 (standard and URL-safe; without padding, so
/// the padded form matches too), query-encoded (what a query string carries), JSON-escaped.
fn forms(s: &str) -> Vec<String> {
    let mut out = vec![
        s.to_string(),
        STANDARD_NO_PAD.encode(s),
        URL_SAFE_NO_PAD.encode(s),
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect(),
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string(),
    ];
    if let Ok(json) = serde_json::to_string(s)
        && let Some(inner) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"'))
    {
        out.push(inner.to_string());
    }
    out
}

impl Redactor {
    /// Redacts `secrets` and, for each `(user, password)` login, its password and its `Basic`
    /// credentials (`base64(user:password)`), all in their [`forms`]. Empty secrets are ignored.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = &'a str>,
        logins: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Redactor {
        let mut needles: Vec<String> = Vec::new();
        for s in secrets.into_iter().filter(|s| !s.is_empty()) {
            needles.extend(forms(s));
        }
        for (user, password) in logins {
            if password.is_empty() {
                continue;
            }
            needles.extend(forms(password));
            let login = format!("{user}:{password}");
            needles.push(STANDARD.encode(&login));
            needles.extend(forms(&login));
        }
        let mut needles: Vec<Vec<u8>> = needles
            .into_iter()
            .filter(|n| !n.is_empty())
            .map(String::into_bytes)
            .collect();
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Redactor { needles }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The length of the longest form, in bytes: how far past a cut a secret that starts before
    /// it can reach (read that much more than you keep, then [`Redactor::snippet`]).
    pub fn longest(&self) -> usize {
        self.needles.first().map_or(0, Vec::len)
    }

    /// The form that starts at `at` in `bytes`, if any (the longest).
    fn at(&self, bytes: &[u8], at: usize) -> Option<usize> {
        let rest = &bytes[at..];
        self.needles
            .iter()
            .find(|n| rest.starts_with(n))
            .map(Vec::len)
    }

    /// `bytes` up to `keep` bytes, with every secret that starts before the cut replaced whole
    /// (so a secret that straddles the cut shows none of itself).
    fn redact_bytes(&self, bytes: &[u8], keep: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(keep.min(bytes.len()) + REDACTED.len());
        let mut i = 0;
        while i < bytes.len() && i < keep {
            match self.at(bytes, i) {
                Some(n) => {
                    out.extend_from_slice(REDACTED.as_bytes());
                    i += n;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes(), text.len())).into_owned()
    }

    /// The start of a body as one line of text (at most `max` bytes of it, newlines as spaces),
    /// secrets redacted. `body` may run past `max` by up to [`Redactor::longest`] bytes so a
    /// secret that starts before the cut is recognised whole.
    pub fn snippet(&self, body: &[u8], max: usize) -> String {
        let kept = self.redact_bytes(body, max);
        String::from_utf8_lossy(&kept).replace(['\n', '\r'], " ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_is_redacted_and_the_rest_kept() {
        let r = Redactor::new(["tok/en+1="], [("hotel", "s3cret")]);
        let text = format!(
            "a tok/en+1= b {} c {} d tok%2Fen%2B1%3D e {} f {} g s3cret h {} i",
            STANDARD.encode("tok/en+1="),
            URL_SAFE_NO_PAD.encode("tok/en+1="),
            STANDARD.encode("hotel:s3cret"),
            STANDARD.encode("s3cret"),
            "Basic aG90ZWw6czNjcmV0",
        );
        let out = r.redact(&text);
        assert_eq!(
            out,
            "a <redacted> b <redacted> c <redacted> d <redacted> e <redacted> f <redacted> g <redacted> h Basic <redacted> i"
        );
        assert!(!out.contains("tok") && !out.contains("s3cret"), "{out}");
    }

    #[test]
    fn nothing_to_redact_changes_nothing() {
        let r = Redactor::default();
        assert!(r.is_empty());
        assert_eq!(r.redact("a\nb"), "a\nb");
        assert_eq!(r.snippet(b"a\nb\r\nc", 100), "a b  c");
        assert_eq!(r.snippet(b"abcdef", 3), "abc");
        assert_eq!(Redactor::new([""], [("u", "")]), Redactor::default());
        assert_eq!(
            format!("{:?}", Redactor::new(["k"], [])),
            "Redactor(<redacted>)"
        );
    }

    #[test]
    fn a_secret_across_the_cut_shows_none_of_itself() {
        let r = Redactor::new(["SECRET-TOKEN"], []);
        let body = b"0123456789SECRET-TOKEN tail";
        // Its base64 form is the longest.
        assert_eq!(r.longest(), STANDARD_NO_PAD.encode("SECRET-TOKEN").len());
        assert_eq!(r.snippet(body, 12), "0123456789<redacted>");
        assert_eq!(r.snippet(body, 10), "0123456789");
        assert_eq!(r.snippet(body, 100), "0123456789<redacted> tail");
        // Longest form first: a secret that contains another is redacted whole.
        let r = Redactor::new(["abc", "abcdef"], []);
        assert_eq!(r.redact("xabcdefx abc"), "x<redacted>x <redacted>");
    }

    #[test]
    fn non_utf8_and_multibyte_text_survives() {
        let r = Redactor::new(["名前"], []);
        assert_eq!(r.redact("Zoë 名前 ok"), "Zoë <redacted> ok");
        assert_eq!(r.snippet(b"\xff\xfeok", 10), "\u{fffd}\u{fffd}ok");
    }
}
