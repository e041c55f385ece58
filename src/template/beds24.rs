//! Beds24 `[NAME]` bracket variables: the names Beds24 defines and where they are found in a
//! booking, and rewriting `[NAME]` into `{{ beds24.NAME }}` placeholders.

use std::fmt::Write as _;

/// Beds24 notify-URL variables and where pollhook finds them in a Beds24 API v2 booking by
/// default (`variables` in an endpoint's config overrides or adds). `BOOKID` is always the
/// booking id pollhook tracks.
pub const BEDS24_VARIABLES: &[(&str, &str)] = &[
    ("PROPERTYID", "/propertyId"),
    ("ROOMID", "/roomId"),
    ("UNITID", "/unitId"),
    ("GROUPID", "/masterId"),
    ("STATUS", "/status"),
    ("FIRSTNIGHT", "/arrival"),
    ("LEAVINGDAY", "/departure"),
    ("NUMADULT", "/numAdult"),
    ("NUMCHILD", "/numChild"),
    ("GUESTTITLE", "/title"),
    ("GUESTFIRSTNAME", "/firstName"),
    ("GUESTNAME", "/lastName"),
    ("GUESTLASTNAME", "/lastName"),
    ("GUESTEMAIL", "/email"),
    ("GUESTPHONE", "/phone"),
    ("GUESTCOMPANY", "/company"),
    ("PRICE", "/price"),
    ("REFERENCE", "/reference"),
    ("REFERER", "/referer"),
    ("REFERRER", "/referer"),
    ("APISOURCE", "/apiSource"),
    ("BOOKID", ""),
    ("REFERENCENUMBER", ""),
];

/// Beds24's notify-URL variables: converts `[NAME]` tokens (NAME =
/// `[A-Z][A-Z0-9_]*`) for which `known(NAME)` is true into `{{ beds24.NAME }}`
/// placeholders; leaves everything else (e.g. `roomId[]=`, unknown names) untouched.
///
/// ```text
/// https://x/y?b=[BOOKID]&r=roomId[]   ->   https://x/y?b={{ beds24.BOOKID }}&r=roomId[]
/// ```
pub fn from_beds24_brackets(text: &str, known: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(rest.get(..open).unwrap_or(""));
        let after = rest.get(open + 1..).unwrap_or("");
        let len = after
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_uppercase() || (i > 0 && (c.is_ascii_digit() || c == '_')))
            })
            .map_or(after.len(), |(i, _)| i);
        let name = after.get(..len).unwrap_or("");
        if !name.is_empty() && after.get(len..).is_some_and(|r| r.starts_with(']')) && known(name) {
            let _ = write!(out, "{{{{ beds24.{name} }}}}");
            rest = after.get(len + 1..).unwrap_or("");
        } else {
            out.push('[');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::super::Template;
    use super::*;

    #[test]
    fn beds24_brackets() {
        let known = |n: &str| n == "BOOKID" || n == "GUESTNAME";
        let out = from_beds24_brackets(
            "https://x/y?b=[BOOKID]&r=roomId[]&g=[GUESTNAME]&u=[UNKNOWN]",
            &known,
        );
        assert_eq!(
            out,
            "https://x/y?b={{ beds24.BOOKID }}&r=roomId[]&g={{ beds24.GUESTNAME }}&u=[UNKNOWN]"
        );
        let t = Template::parse(&out).unwrap();
        assert_eq!(t.names(), ["beds24.BOOKID", "beds24.GUESTNAME"]);
        assert!(t.check_names(&["beds24"]).is_ok());
        for s in [
            "[",
            "]",
            "[[BOOKID]]",
            "[BOOKID",
            "é[BOOKID]é",
            "[bookid]",
            "[B0OKID]",
            "",
        ] {
            let _ = from_beds24_brackets(s, &known);
        }
        assert_eq!(
            from_beds24_brackets("[[BOOKID]]", &known),
            "[{{ beds24.BOOKID }}]"
        );
        assert_eq!(from_beds24_brackets("é[BOOKID", &known), "é[BOOKID");
    }
}
