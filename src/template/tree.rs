//! JSON body trees: a JSON value whose strings may be templates, parsed once and rendered to typed values, with errors that carry the string's JSON Pointer.

use serde_json::Value;

use super::{Context, Template, TreeError};

/// A JSON tree (e.g. a request body) whose strings containing `{{` are
/// parsed once, to be rendered many times; see [`render_tree`].
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateTree {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Plain(Value),
    Tpl { pointer: String, template: Template },
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Node {
    fn build(v: &Value, pointer: &str) -> Result<Node, TreeError> {
        let node = match v {
            Value::String(s) if s.contains("{{") => {
                let template = Template::parse(s).map_err(|source| TreeError::Parse {
                    pointer: pointer.into(),
                    source,
                })?;
                return Ok(Node::Tpl {
                    pointer: pointer.into(),
                    template,
                });
            }
            Value::Array(items) => Node::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Node::build(item, &format!("{pointer}/{i}")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Node::Object(
                map.iter()
                    .map(|(k, item)| {
                        let child = format!("{pointer}/{}", pointer_token(k));
                        Ok((k.clone(), Node::build(item, &child)?))
                    })
                    .collect::<Result<_, TreeError>>()?,
            ),
            other => return Ok(Node::Plain(other.clone())),
        };
        let plain = match &node {
            Node::Array(items) => items.iter().all(|n| matches!(n, Node::Plain(_))),
            Node::Object(entries) => entries.iter().all(|(_, n)| matches!(n, Node::Plain(_))),
            Node::Plain(_) | Node::Tpl { .. } => false,
        };
        Ok(if plain { Node::Plain(v.clone()) } else { node })
    }

    fn visit<'n>(&'n self, out: &mut Vec<(&'n str, &'n Template)>) {
        match self {
            Node::Plain(_) => {}
            Node::Tpl { pointer, template } => out.push((pointer, template)),
            Node::Array(items) => items.iter().for_each(|n| n.visit(out)),
            Node::Object(entries) => entries.iter().for_each(|(_, n)| n.visit(out)),
        }
    }

    fn render(&self, ctx: &dyn Context) -> Result<Value, TreeError> {
        Ok(match self {
            Node::Plain(v) => v.clone(),
            Node::Tpl { pointer, template } => {
                template
                    .render_value(ctx)
                    .map_err(|source| TreeError::Render {
                        pointer: pointer.clone(),
                        source,
                    })?
            }
            Node::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|n| n.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, n)| Ok((k.clone(), n.render(ctx)?)))
                    .collect::<Result<_, TreeError>>()?,
            ),
        })
    }
}

impl TemplateTree {
    /// Parses every string in `tree` that contains `{{`; errors carry the string's JSON Pointer.
    pub fn parse(tree: &Value) -> Result<TemplateTree, TreeError> {
        Ok(TemplateTree {
            root: Node::build(tree, "")?,
        })
    }

    /// The names used by all templates in the tree, each once (see [`Template::names`]).
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, t) in self.templates() {
            for n in t.names() {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// [`Template::check_names`] on every template; the error names the string's JSON Pointer.
    pub fn check_names(&self, allowed: &[&str]) -> Result<(), TreeError> {
        for (pointer, t) in self.templates() {
            t.check_names(allowed).map_err(|source| TreeError::Parse {
                pointer: pointer.into(),
                source,
            })?;
        }
        Ok(())
    }

    /// The tree with every template string replaced by [`Template::render_value`]'s result.
    pub fn render(&self, ctx: &dyn Context) -> Result<Value, TreeError> {
        self.root.render(ctx)
    }

    fn templates(&self) -> Vec<(&str, &Template)> {
        let mut out = Vec::new();
        self.root.visit(&mut out);
        out
    }
}

/// Renders every string inside a JSON tree that contains a placeholder (keys
/// untouched) with [`Template::render_value`]; non-strings untouched. Returns parse
/// errors with the JSON Pointer of the bad string. Parses on every call: to
/// render the same tree repeatedly, parse it once with [`TemplateTree::parse`].
pub fn render_tree(tree: &Value, ctx: &dyn Context) -> Result<Value, TreeError> {
    TemplateTree::parse(tree)?.render(ctx)
}

/// Parses every string in `tree` that contains `{{` and checks its names
/// against `allowed` (see [`Template::check_names`]); the error names the
/// string's JSON Pointer.
pub fn check_tree(tree: &Value, allowed: &[&str]) -> Result<(), TreeError> {
    TemplateTree::parse(tree)?.check_names(allowed)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{GUEST, ctx};
    use super::*;
    use serde_json::json;

    #[test]
    fn render_tree_types_values() {
        let tree = json!({"a": "{{ booking/guest/name }}", "b": 1, "c": ["x {{ page }}"], "d": {"e": "{{ page }}"}, "{{ k }}": "k"});
        let out = render_tree(&tree, &ctx()).unwrap();
        assert_eq!(
            out,
            json!({"a": GUEST, "b": 1, "c": ["x 3"], "d": {"e": 3}, "{{ k }}": "k"})
        );
        let parsed = TemplateTree::parse(&tree).unwrap();
        assert_eq!(parsed.render(&ctx()).unwrap(), out);
        assert_eq!(parsed.names(), ["booking", "page"]);
        let plain = json!({"x": [1, "y"]});
        assert_eq!(render_tree(&plain, &ctx()).unwrap(), plain);
        let err = render_tree(&json!({"a": [0, "{{ page | iso }}"]}), &ctx()).unwrap_err();
        assert!(matches!(&err, TreeError::Render { pointer, .. } if pointer == "/a/1"));
        let err = render_tree(&json!({"a/b": {"c~": "{{ }}"}}), &ctx()).unwrap_err();
        assert!(matches!(&err, TreeError::Parse { pointer, .. } if pointer == "/a~1b/c~0"));
    }
}
