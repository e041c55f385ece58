//! Templates in source and endpoint settings: parsing them against the names available where
//! they are used, checking that dotted names exist, query parameters and request bodies, and
//! asking which names a parameter or body uses.

use std::collections::BTreeMap;

use super::Validator;
use crate::config::ParamValue;
use crate::template::Template;

impl Validator {
    /// Parses `text` and checks it uses only `allowed` names, and only dotted names that exist.
    fn template(&mut self, key: &str, text: &str, allowed: &[&str]) -> Option<Template> {
        match Template::parse(text).and_then(|t| t.check_names(allowed).map(|()| t)) {
            Ok(t) => {
                self.known_names(key, &t.names());
                Some(t)
            }
            Err(e) => {
                self.bad(key, e.to_string());
                None
            }
        }
    }

    /// Dotted names must exist, not merely have an allowed root: `{{ secret.typo }}` would
    /// otherwise send an empty value.
    pub(super) fn known_names(&mut self, key: &str, names: &[String]) {
        for n in names {
            if let Some(s) = n.strip_prefix("secret.") {
                if !self.secret_names.contains(s) {
                    let known: Vec<&str> = self.secret_names.iter().map(String::as_str).collect();
                    self.bad(key, format!("`{{{{ {n} }}}}`: no secret `{s}` in this source's `secrets` table (defined: {})", if known.is_empty() { "none".into() } else { known.join(", ") }));
                }
            } else if n == "secret" {
                self.bad(key, "`{{ secret }}` needs a name: `{{ secret.NAME }}`");
            } else if let Some(e) = n.strip_prefix("event.") {
                if !crate::template::names::EVENT_NAMES.contains(&e) {
                    self.bad(
                        key,
                        format!(
                            "`{{{{ {n} }}}}` is not an event field; use one of: {}",
                            crate::template::names::EVENT_NAMES
                                .iter()
                                .map(|f| format!("event.{f}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            } else if let Some(v) = n.strip_prefix("beds24.")
                && !self.variable_names.contains(v)
            {
                self.bad(key, format!("`{{{{ {n} }}}}`: unknown variable `{v}`; add it to `variables` with the JSON Pointer it reads"));
            }
        }
    }

    /// A `query` table: each value a template (or a list of them), checked against `allowed`.
    pub(super) fn params(
        &mut self,
        key: &str,
        raw: &BTreeMap<String, serde_json::Value>,
        allowed: &[&str],
    ) -> Vec<(String, ParamValue)> {
        let mut out = Vec::new();
        for (name, v) in raw {
            let key = format!("{key}.{name}");
            let scalar = |v: &serde_json::Value| crate::json::scalar_string(v);
            match v {
                serde_json::Value::Array(items) => {
                    let mut ts = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match scalar(item) {
                            Some(s) => {
                                if let Some(t) = self.template(&format!("{key}[{i}]"), &s, allowed)
                                {
                                    ts.push(t);
                                }
                            }
                            None => self.bad(
                                format!("{key}[{i}]"),
                                "list items must be strings, numbers or booleans",
                            ),
                        }
                    }
                    out.push((name.clone(), ParamValue::Many(ts)));
                }
                other => match scalar(other) {
                    Some(s) => {
                        if let Some(t) = self.template(&key, &s, allowed) {
                            out.push((name.clone(), ParamValue::One(t)));
                        }
                    }
                    None => self.bad(key, "must be a string, number, boolean or a list of them"),
                },
            }
        }
        out
    }

    /// A request `body` table, whose strings may be templates checked against `allowed`.
    pub(super) fn body(
        &mut self,
        key: &str,
        body: serde_json::Value,
        allowed: &[&str],
    ) -> serde_json::Value {
        if !body.is_object() {
            self.bad(key, "must be a table (a JSON object)");
        }
        match crate::template::TemplateTree::parse(&body) {
            Ok(tree) => match tree.check_names(allowed) {
                Ok(()) => self.known_names(key, &tree.names()),
                Err(e) => self.bad(key, e.to_string()),
            },
            Err(e) => self.bad(key, e.to_string()),
        }
        body
    }
}

/// Whether a parameter's template(s) use `name`.
pub(super) fn param_uses(v: &ParamValue, name: &str) -> bool {
    let uses = |t: &Template| t.names().iter().any(|n| n == name);
    match v {
        ParamValue::One(t) => uses(t),
        ParamValue::Many(ts) => ts.iter().any(uses),
    }
}

/// Whether a body template tree uses `name`.
pub(super) fn tree_uses(tree: &serde_json::Value, name: &str) -> bool {
    crate::template::TemplateTree::parse(tree).is_ok_and(|t| t.names().iter().any(|n| n == name))
}
