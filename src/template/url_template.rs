//! URL templates: the shape a webhook URL template gives every request it renders (scheme, host,
//! port, user, the path segments with their literal parts, the query names), learnt once from
//! the template, and the check that a rendered URL kept it before anything is sent.

use url::Url;

use super::parse::Part;
use super::{Context, Escape, RenderError, Template};

/// A URL with placeholders in its path and query, and the shape every URL rendered from it must
/// keep: values fill in path segments and query values, and can never add, remove or resolve a
/// segment, add a parameter, or change where the request goes.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlTemplate {
    template: Template,
    shape: Shape,
}

/// Why a URL could not be rendered from its template.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum UrlTemplateError {
    /// A placeholder could not be filled in.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The text is not a URL.
    #[error("rendered URL is invalid: {0}")]
    Invalid(#[from] url::ParseError),
    /// The values changed the URL's structure.
    #[error(
        "{0}; values fill in path segments and query values but never add, remove or resolve them, so nothing was sent"
    )]
    Shape(String),
}

/// A path segment or query name: its literal pieces, with a value between each two (one piece:
/// no placeholder).
type Pattern = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
struct Shape {
    scheme: String,
    host: Option<String>,
    port: Option<u16>,
    username: String,
    password: Option<String>,
    /// The parsed path's segments.
    segments: Vec<Pattern>,
    /// The query's parameter names, in order (`None`: no query).
    keys: Option<Vec<Pattern>>,
    /// Which segments of the path as written (before URL parsing) a placeholder writes into.
    raw_holes: Vec<bool>,
}

/// A stand-in for every value, learnt from: letters and digits the URL parser leaves alone, that
/// do not occur in `text`, and that no proper prefix of which is also a suffix (so occurrences
/// can be found unambiguously next to literal text).
fn sentinel(text: &str) -> String {
    let mut n = 0u64;
    loop {
        let s = format!("H{n}q7wZpLkX");
        if !text.contains(&s) {
            return s;
        }
        n += 1;
    }
}

/// The path of `text` as written, split into segments (`/` and `\` separate them, as URL parsing
/// of http(s) URLs has it); empty when there is no path. Tabs and newlines are dropped, as URL
/// parsing drops them.
fn raw_segments(text: &str) -> Vec<String> {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return Vec::new();
    };
    let Some(path_start) = text[start..].find(['/', '\\', '?', '#']).map(|i| start + i) else {
        return Vec::new();
    };
    let rest = &text[path_start..];
    let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    if path.is_empty() {
        return Vec::new();
    }
    path.split(['/', '\\'])
        .skip(1)
        .map(|s| s.replace(['\t', '\n', '\r'], ""))
        .collect()
}

/// A segment URL parsing removes or turns into a step up (`.`, `..`, also percent-encoded).
fn is_dot_segment(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
    )
}

/// Whether `s` consists of `pattern`'s pieces in order, with anything in the gaps.
fn matches(pattern: &[String], s: &str) -> bool {
    let (Some(first), Some(last)) = (pattern.first(), pattern.last()) else {
        return s.is_empty();
    };
    if pattern.len() == 1 {
        return s == first;
    }
    if s.len() < first.len() + last.len()
        || !s.starts_with(first.as_str())
        || !s.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for piece in &pattern[1..pattern.len() - 1] {
        match rest.find(piece.as_str()) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    true
}

fn query_keys(url: &Url) -> Option<Vec<&str>> {
    url.query().map(|q| {
        q.split('&')
            .map(|p| p.split('=').next().unwrap_or(""))
            .collect()
    })
}

impl Shape {
    fn of(text: &str, sentinel: &str) -> Result<Shape, UrlTemplateError> {
        let url = Url::parse(text)?;
        let pattern = |s: &str| -> Pattern { s.split(sentinel).map(str::to_string).collect() };
        Ok(Shape {
            scheme: url.scheme().to_string(),
            host: url.host_str().map(str::to_string),
            port: url.port_or_known_default(),
            username: url.username().to_string(),
            password: url.password().map(str::to_string),
            segments: url
                .path_segments()
                .map(|s| s.map(pattern).collect())
                .unwrap_or_default(),
            keys: query_keys(&url).map(|keys| keys.into_iter().map(pattern).collect()),
            raw_holes: raw_segments(text)
                .iter()
                .map(|s| s.contains(sentinel))
                .collect(),
        })
    }

    /// Before parsing: no segment a value writes into may be a dot segment.
    fn check_text(&self, text: &str) -> Result<(), UrlTemplateError> {
        let segments = raw_segments(text);
        if segments.len() != self.raw_holes.len() {
            return Err(UrlTemplateError::Shape(format!(
                "the path has {} segments instead of {}",
                segments.len(),
                self.raw_holes.len()
            )));
        }
        for (i, (segment, hole)) in segments.iter().zip(&self.raw_holes).enumerate() {
            if *hole && is_dot_segment(segment) {
                return Err(UrlTemplateError::Shape(format!(
                    "a value makes path segment {} the dot segment `{segment}`, which URL rules resolve (even encoded) into another path",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    /// After parsing: where it goes, the segments and the query names are the template's.
    fn check_url(&self, url: &Url) -> Result<(), UrlTemplateError> {
        let bad = |what: String| Err(UrlTemplateError::Shape(what));
        if url.scheme() != self.scheme
            || url.host_str() != self.host.as_deref()
            || url.port_or_known_default() != self.port
            || url.username() != self.username
            || url.password() != self.password.as_deref()
        {
            return bad("the rendered URL changed its scheme, host, port or user".into());
        }
        let segments: Vec<&str> = url
            .path_segments()
            .map(Iterator::collect)
            .unwrap_or_default();
        if segments.len() != self.segments.len() {
            return bad(format!(
                "the path has {} segments instead of {}",
                segments.len(),
                self.segments.len()
            ));
        }
        for (i, (got, want)) in segments.iter().zip(&self.segments).enumerate() {
            if !matches(want, got) {
                return bad(format!("path segment {} lost its literal text", i + 1));
            }
        }
        match (query_keys(url), &self.keys) {
            (None, None) => Ok(()),
            (Some(got), Some(want))
                if got.len() == want.len() && got.iter().zip(want).all(|(g, w)| matches(w, g)) =>
            {
                Ok(())
            }
            _ => bad("the query's parameter names changed".into()),
        }
    }
}

impl UrlTemplate {
    /// Learns the shape of `template` (a URL with placeholders) by rendering it with a stand-in
    /// for every value.
    pub fn new(template: Template) -> Result<UrlTemplate, UrlTemplateError> {
        let stand_in = sentinel(template.text());
        let mut text = String::with_capacity(template.text().len() + 16);
        for part in &template.parts {
            match part {
                Part::Lit(s) => text.push_str(s),
                Part::Hole(_) => text.push_str(&stand_in),
            }
        }
        let shape = Shape::of(&text, &stand_in)?;
        Ok(UrlTemplate { template, shape })
    }

    /// The template.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Renders the URL (values percent-encoded) and checks that it kept the template's shape.
    pub fn render(&self, ctx: &dyn Context) -> Result<Url, UrlTemplateError> {
        let text = self.template.render(ctx, Escape::UrlComponent)?;
        self.shape.check_text(&text)?;
        let url = Url::parse(&text)?;
        self.shape.check_url(&url)?;
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::{Value, json};

    struct Values(Value);

    impl Context for Values {
        fn now(&self) -> DateTime<Utc> {
            DateTime::<Utc>::UNIX_EPOCH
        }
        fn name(&self, _: &str) -> Option<super::super::Val> {
            None
        }
        fn pointer(&self, root: &str, pointer: &str) -> Option<Value> {
            if root == "v" {
                self.0.pointer(pointer).cloned()
            } else {
                None
            }
        }
    }

    fn render(template: &str, x: &str) -> Result<Url, UrlTemplateError> {
        UrlTemplate::new(Template::parse(template).unwrap())
            .unwrap()
            .render(&Values(json!({ "x": x })))
    }

    #[test]
    fn values_stay_inside_their_segment_and_query_value() {
        let t = "https://h.test/a/{{ v/x }}/b?k={{ v/x }}&l=1";
        let u = render(t, "1/../x?y=2&z#f").unwrap();
        assert_eq!(u.path(), "/a/1%2F..%2Fx%3Fy%3D2%26z%23f/b");
        assert_eq!(u.query(), Some("k=1%2F..%2Fx%3Fy%3D2%26z%23f&l=1"));
        assert_eq!(render(t, "").unwrap().path(), "/a//b");
        assert_eq!(render(t, "a..").unwrap().path(), "/a/a../b");
        assert_eq!(
            render("https://h.test/{{ v/x }}", "%2e%2e").unwrap().path(),
            "/%252e%252e"
        );
    }

    #[test]
    fn dot_segments_from_values_are_refused() {
        for (t, x) in [
            ("https://h.test/a/{{ v/x }}/b", ".."),
            ("https://h.test/a/{{ v/x }}/b", "."),
            ("https://h.test/a/{{ v/x }}", "."),
            ("https://h.test/a/{{ v/x }}", ".."),
            ("https://h.test/a/{{ v/x }}./b", "."),
            ("https://h.test/a/{{ v/x }}./b", ""),
            ("https://h.test/a/.{{ v/x }}", ""),
            ("https://h.test/a\\{{ v/x }}\\b", ".."),
        ] {
            let e = render(t, x).unwrap_err();
            assert!(
                matches!(e, UrlTemplateError::Shape(_)) && e.to_string().contains("segment"),
                "{t} with {x:?}: {e}"
            );
        }
        // Literal dot segments are the template's own: resolved the same way every time.
        let u = render("https://h.test/a/../b/{{ v/x }}", "c").unwrap();
        assert_eq!(u.path(), "/b/c");
        // Dots in a query value are only text.
        let u = render("https://h.test/a?x={{ v/x }}", "..").unwrap();
        assert_eq!(u.query(), Some("x=%2E%2E"));
    }

    #[test]
    fn the_shape_check_compares_hosts_segments_and_names() {
        let shape = |t: &str| UrlTemplate::new(Template::parse(t).unwrap()).unwrap().shape;
        let s = shape("https://h.test/a/p{{ v/x }}q/{{ v/x }}?k={{ v/x }}&{{ v/x }}=1");
        let ok = |u: &str| s.check_url(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://h.test/a/pzq/w?k=v&n=1"));
        assert!(ok("https://h.test/a/pq/?k=&=1"));
        assert!(!ok("https://evil.test/a/pzq/w?k=v&n=1"));
        assert!(!ok("https://h.test:444/a/pzq/w?k=v&n=1"));
        assert!(!ok("http://h.test/a/pzq/w?k=v&n=1"));
        assert!(!ok("https://u@h.test/a/pzq/w?k=v&n=1"));
        assert!(!ok("https://h.test/a/pz/w?k=v&n=1"), "literal `q` lost");
        assert!(!ok("https://h.test/a/pzq/w/x?k=v&n=1"), "one segment more");
        assert!(!ok("https://h.test/pzq/w?k=v&n=1"), "one segment less");
        assert!(
            !ok("https://h.test/a/pzq/w?k=v&n=1&m=2"),
            "a parameter more"
        );
        assert!(!ok("https://h.test/a/pzq/w?j=v&n=1"), "a name changed");
        assert!(!ok("https://h.test/a/pzq/w"), "the query went");
        assert!(matches(&["a".into(), "b".into(), "c".into()], "axbyc"));
        assert!(matches(&["a".into(), "b".into(), "c".into()], "abc"));
        assert!(!matches(&["ab".into(), "ba".into()], "aba"));
        assert_eq!(sentinel("xH0q7wZpLkX"), "H1q7wZpLkX");
    }
}
