//! Log-safe display: a value from outside (a booking id, an error carrying a remote body) shown
//! with its control characters escaped, so it can never end a log line or start a forged one.

use std::fmt::{self, Display, Write as _};

/// Shows `T` with every control character (C0, DEL, C1) and the Unicode line and paragraph
/// separators written as `\u{..}`: `"a\nb"` is shown as `a\u{a}b`. Everything else is shown as
/// it is. For `tracing` fields: `booking = %Escaped(&id)`, `error = %Escaped(&e)`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

/// Whether `c` is escaped by [`Escaped`].
pub fn is_escaped(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A writer that escapes as it passes text on.
struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if is_escaped(c) {
                self.0.write_str(&s[start..i])?;
                write!(self.0, "\\u{{{:x}}}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let shown = |s: &str| Escaped(s).to_string();
        assert_eq!(shown("a\nb"), "a\\u{a}b");
        assert_eq!(shown("x\r\n"), "x\\u{d}\\u{a}");
        assert_eq!(
            shown("\u{0}\u{7}\u{1b}[31m\u{7f}\u{85}\u{9f}"),
            "\\u{0}\\u{7}\\u{1b}[31m\\u{7f}\\u{85}\\u{9f}"
        );
        assert_eq!(shown("l\u{2028}p\u{2029}"), "l\\u{2028}p\\u{2029}");
        assert_eq!(
            shown("Zoë \"Ann\" 名前 \\ tab-free"),
            "Zoë \"Ann\" 名前 \\ tab-free"
        );
        assert_eq!(shown("\t"), "\\u{9}");
        assert_eq!(shown(""), "");
    }

    #[test]
    fn any_display_is_escaped_through_formatting() {
        struct Remote(&'static str);
        impl Display for Remote {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "page {}: {}", 1, self.0)
            }
        }
        let shown = Escaped(Remote("body\nFORGED")).to_string();
        assert_eq!(shown, "page 1: body\\u{a}FORGED");
        assert!(!shown.chars().any(is_escaped));
        assert_eq!(format!("{}", Escaped(&42)), "42");
    }
}
