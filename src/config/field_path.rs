//! TOML errors that name the dotted field (`origin.max_inflight`,
//! `keys[2].tier`), not only a line and column.
//!
//! serde reports a type error ("invalid type: string, expected usize") with
//! the byte span of the offending value but no field path; the path is
//! found by parsing the same text again into toml's spanned tree and
//! taking the innermost key or value whose span holds the error's span.

use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One line: `<dotted.path>: <what serde said> (line L, column C)`. Without
/// a span (or for a syntax error that keeps the document from parsing) the
/// path is left out, the line and column kept.
pub fn describe(text: &str, err: &toml::de::Error) -> String {
    let message = without_quoted_values(err.message().trim_end());
    let message = message.as_str();
    let Some(span) = err.span() else {
        return message.to_owned();
    };
    let at = line_column(text, span.start);
    match path_at(text, &span) {
        Some(path) if !path.is_empty() => format!("{path}: {message} ({at})"),
        _ => format!("{message} ({at})"),
    }
}

/// serde quotes a mistyped string value in its message (`invalid type:
/// string "whsec_…", expected a sequence`); the value may be a secret put
/// in the wrong field, and this line reaches `check-config`, the reload
/// log and the admin reload answer. The field path and the position say
/// where the mistake is without repeating it.
fn without_quoted_values(message: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(QUOTED) {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let value = &rest[at + QUOTED.len()..];
        // serde writes the value with Debug escapes, so the closing quote
        // is the first one not preceded by a backslash.
        let mut end = value.len();
        let mut escaped = false;
        for (i, c) in value.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = i + 1;
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// A value a validator names in its error: quoted when it looks like the
/// name it should have been (a scope, a level, an encoding, an algorithm:
/// short, lower case, or a short upper-case code like `ES256`), so a typo
/// is easy to see; otherwise only its length, because a long or mixed-case
/// value may be a secret put in the wrong field, and the error reaches
/// `check-config`, the reload log and the admin answer.
pub fn shown_value(value: &str) -> String {
    // No digits: none of the names these fields take has one, and a
    // generated secret (hex, base64) almost always does.
    let name_like = value.len() <= 20
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b":_.*-=,[] ".contains(&b));
    // `ES256`, or an environment variable's name (`LAYERS_JWT_SECRET`).
    let upper = value
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    let code_like = upper
        && value.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && (value.len() <= 8 || (value.len() <= 64 && value.contains('_')));
    if name_like || code_like {
        format!("{value:?}")
    } else {
        format!("(a value of {} characters, not shown)", value.chars().count())
    }
}

/// `line L, column C`, both counted from 1, for a byte offset.
fn line_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// The dotted path of the innermost key or value whose span holds `span`.
fn path_at(text: &str, span: &Range<usize>) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<(usize, String)> = None;
    visit_table(root.get_ref(), "", span, &mut best);
    best.map(|(_, path)| path)
}

fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

/// Keeps the candidate with the smallest span: the most specific field.
fn offer(best: &mut Option<(usize, String)>, at: &Range<usize>, span: &Range<usize>, path: &str) {
    if holds(at, span) && best.as_ref().is_none_or(|(len, _)| at.len() <= *len) {
        *best = Some((at.len(), path.to_owned()));
    }
}

fn visit_table(t: &DeTable<'_>, prefix: &str, span: &Range<usize>, best: &mut Option<(usize, String)>) {
    for (key, value) in t.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        offer(best, &key.span(), span, &path);
        visit_value(value, &path, span, best);
    }
}

fn visit_value(
    v: &Spanned<DeValue<'_>>,
    path: &str,
    span: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    offer(best, &v.span(), span, path);
    match v.get_ref() {
        DeValue::Table(t) => visit_table(t, path, span, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                visit_value(item, &format!("{path}[{i}]"), span, best);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        describe(text, &toml::from_str::<T>(text).unwrap_err())
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Origin {
        max_inflight: usize,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        origin: Origin,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Key {
        tier: String,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Keys {
        keys: Vec<Key>,
    }

    #[test]
    fn a_type_error_names_the_dotted_field_and_the_line() {
        let e = err_of::<Doc>("[origin]\nmax_inflight = \"many\"\n");
        assert!(e.starts_with("origin.max_inflight: invalid type"), "{e}");
        assert!(e.ends_with("(line 2, column 16)"), "{e}");
    }

    #[test]
    fn an_error_in_an_array_of_tables_names_the_index() {
        let e = err_of::<Keys>("[[keys]]\ntier = \"a\"\n[[keys]]\ntier = \"b\"\n[[keys]]\ntier = 3\n");
        assert!(e.starts_with("keys[2].tier: invalid type"), "{e}");
    }

    #[test]
    fn inline_tables_and_dotted_keys_are_paths_too() {
        let e = err_of::<Doc>("origin = { max_inflight = -1 }\n");
        assert!(e.starts_with("origin.max_inflight: invalid value"), "{e}");
        let e = err_of::<Doc>("origin.max_inflight = true\n");
        assert!(e.starts_with("origin.max_inflight: invalid type"), "{e}");
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Webhooks {
        secrets: Vec<String>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Hooks {
        webhooks: Webhooks,
    }

    #[test]
    fn a_mistyped_secret_is_not_repeated_in_the_error() {
        let e = err_of::<Hooks>("[webhooks]\nsecrets = \"whsec_s3cr\\\"et_value\"\n");
        assert!(!e.contains("whsec") && !e.contains("et_value"), "{e}");
        assert!(
            e.starts_with("webhooks.secrets: invalid type: a string, expected a sequence"),
            "{e}"
        );
        assert!(e.ends_with("(line 2, column 11)"), "{e}");
    }

    #[test]
    fn a_validator_shows_a_name_but_not_a_secret() {
        assert_eq!(shown_value("contnet:read"), "\"contnet:read\"");
        assert_eq!(shown_value("ES256"), "\"ES256\"");
        assert_eq!(shown_value("gzipp"), "\"gzipp\"");
        assert!(!shown_value("whsec_PLANTEDSECRET1234").contains("PLANTED"));
        assert!(!shown_value("lp_live_0123456789abcdefghijklmnopqrstuvwxyz").contains("lp_live"));
        assert!(
            !shown_value("3f9a0c1e77b24d58aa01").contains("3f9a"),
            "20 hex digits"
        );
        assert_eq!(shown_value("LAYERS_JWT_SECRET"), "\"LAYERS_JWT_SECRET\"");
        assert!(!shown_value("Zm9vYmFyYmF6cXV4=").contains("Zm9v"));
    }

    #[test]
    fn a_syntax_error_keeps_line_and_column() {
        let e = err_of::<Doc>("[origin\n");
        assert!(e.contains("line 1"), "{e}");
    }
}
