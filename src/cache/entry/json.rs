//! Reading the origin's JSON without judging what the gateway does not read,
//! and leaving array elements out of it by splicing its bytes.
//!
//! The origin may send any legal JSON (RFC 8259): a number past f64's range
//! (`1e400`), a lone escaped surrogate in a caption (`"\ud83d"`), an integer
//! past u64. Parsed into `serde_json::Value` such a body is refused, and one
//! re-serialized from a `Value` changes number spellings. So only the members
//! the gateway needs are read, each kept as its span of the origin's text
//! (`&RawValue`) and decoded on demand; everything else is skipped with
//! serde_json's `ignore_value`, which checks the grammar but neither surrogate
//! pairs nor number range (serde_json 1.0.154 `de.rs` `ignore_value`,
//! `read.rs` `ignore_escape`). A body the gateway changes is the origin's
//! bytes with whole elements cut out ([`remove_elements`]).

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// One JSON value, as its span of the text it was read from.
pub type Raw<'a> = &'a RawValue;

/// The members `names` of a JSON object, each the value of its last
/// occurrence (as `serde_json::Value` and JavaScript read a repeated name).
pub struct Members<'a, const N: usize> {
    pub values: [Option<Raw<'a>>; N],
    /// Whether one of `names` occurred more than once. A caller that serves
    /// the bytes refuses such a body: a client that reads the first
    /// occurrence would see what the gateway did not check.
    pub repeated: bool,
}

/// Reads the members `names` of the JSON text `text`. `Err` when `text` is
/// not JSON, `Ok(None)` when it is JSON but not an object. Names are
/// compared after their escapes are decoded (`"\u0069d"` is `id`).
pub fn members<'a, const N: usize>(
    text: &'a str,
    names: [&str; N],
) -> Result<Option<Members<'a, N>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    if text.trim_start_matches(JSON_WS).starts_with('{') {
        let m = Pick(&names).deserialize(&mut de)?;
        de.end()?;
        Ok(Some(m))
    } else {
        IgnoredAny::deserialize(&mut de)?;
        de.end()?;
        Ok(None)
    }
}

/// [`members`] of a value already read (so known to be JSON): `None` when
/// it is not an object.
pub fn object_members<'a, const N: usize>(raw: Raw<'a>, names: [&str; N]) -> Option<Members<'a, N>> {
    members(raw.get(), names).ok().flatten()
}

/// The text of a JSON string, escapes decoded (borrowed when it has none).
/// `None` for any other value, and for a string that is not Unicode (a lone
/// surrogate): no id or date the gateway reads can be such a string.
pub fn string(raw: Raw<'_>) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<Text<'_>>(raw.get()).ok().map(|t| t.0)
}

/// The elements of a JSON array, `None` for any other value.
pub fn elements(raw: Raw<'_>) -> Option<Vec<Raw<'_>>> {
    if !raw.get().starts_with('[') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// Whether the value is a JSON object.
pub fn is_object(raw: Raw<'_>) -> bool {
    raw.get().starts_with('{')
}

/// Where `part` (a value read from `text`) lies in `text`.
pub fn span_in(text: &str, part: Raw<'_>) -> Range<usize> {
    let start = part.get().as_ptr() as usize - text.as_ptr() as usize;
    debug_assert!(
        start + part.get().len() <= text.len(),
        "a value from another text"
    );
    start..start + part.get().len()
}

/// JSON's insignificant whitespace (RFC 8259 section 2).
const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

/// Leaves elements out of one JSON array in `text`, byte for byte keeping the
/// rest. `items` are the spans of all the array's elements in order (as
/// [`span_in`] gives them), `remove` says which go. Returns the new text and
/// the new start of each kept element.
///
/// Between two elements there is only whitespace and one comma, so a kept
/// element is written with the separator that preceded it in the original,
/// except the first kept one, which follows the `[` and its whitespace: the
/// commas stay right whichever elements go. With none kept, the whitespace
/// inside the brackets goes too (`[]`).
pub fn remove_elements(text: &str, items: &[Range<usize>], remove: &[bool]) -> (String, Vec<usize>) {
    debug_assert_eq!(items.len(), remove.len());
    let (Some(first), Some(last)) = (items.first(), items.last()) else {
        return (text.to_owned(), Vec::new());
    };
    let head = &text[..first.start];
    let tail = &text[last.end..];
    let mut out = String::with_capacity(text.len());
    let mut starts = Vec::new();
    let mut previous_end = None;
    out.push_str(head);
    for (i, item) in items.iter().enumerate() {
        if remove[i] {
            continue;
        }
        if previous_end.is_some() {
            // The separator just before this element: `<ws>,<ws>`.
            out.push_str(&text[items[i - 1].end..item.start]);
        }
        starts.push(out.len());
        out.push_str(&text[item.clone()]);
        previous_end = Some(item.end);
    }
    if previous_end.is_none() {
        out.truncate(head.trim_end_matches(JSON_WS).len());
        out.push_str(tail.trim_start_matches(JSON_WS));
    } else {
        out.push_str(tail);
    }
    (out, starts)
}

/// Reads an object's members `names` (see [`members`]).
struct Pick<'n, const N: usize>(&'n [&'n str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for Pick<'_, N> {
    type Value = Members<'de, N>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Pick<'_, N> {
    type Value = Members<'de, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Members {
            values: [None; N],
            repeated: false,
        };
        // The key is taken raw too, so an unusual name the gateway does not
        // read (a lone surrogate) is skipped like an unusual value.
        while let Some(key) = map.next_key::<Raw<'de>>()? {
            match self.0.iter().position(|n| key_is(key, n)) {
                Some(i) => {
                    out.repeated |= out.values[i].is_some();
                    out.values[i] = Some(map.next_value()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// Whether a raw key (a JSON string) is `name`.
fn key_is(key: Raw<'_>, name: &str) -> bool {
    let k = key.get();
    match k.get(1..k.len() - 1) {
        Some(inner) if !inner.contains('\\') => inner == name,
        _ => string(key).is_some_and(|s| s == name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings<'a, const N: usize>(m: &Members<'a, N>) -> Vec<Option<String>> {
        m.values
            .iter()
            .map(|v| v.and_then(string).map(Cow::into_owned))
            .collect()
    }

    #[test]
    fn unusual_values_the_gateway_does_not_read_are_skipped() {
        let text = r#"{"a":1e400,"b":-1E+999,"c":"cut \ud83d","d":123456789012345678901234567890,"\ud83d":0,"id":"x","e":[{"f":"\udc00"}]}"#;
        let m = members(text, ["id", "missing"]).unwrap().unwrap();
        assert_eq!(strings(&m), [Some("x".to_string()), None]);
        assert!(!m.repeated);
    }

    #[test]
    fn grammar_is_still_checked() {
        for bad in [
            "",
            "{",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":"\x"}"#,
            "{} x",
            "[1,]",
        ] {
            assert!(members(bad, ["a"]).is_err(), "{bad:?}");
        }
        for not_object in ["[]", "1e400", r#""s""#, " null "] {
            assert!(members(not_object, ["a"]).unwrap().is_none(), "{not_object:?}");
        }
    }

    #[test]
    fn escapes_are_decoded_in_names_and_strings() {
        let m = members(r#"{"\u0069d":"v\u002d1","t":"plain"}"#, ["id", "t"])
            .unwrap()
            .unwrap();
        assert_eq!(strings(&m), [Some("v-1".to_string()), Some("plain".to_string())]);
        assert!(matches!(
            m.values[1].and_then(string),
            Some(Cow::Borrowed("plain"))
        ));
        let lone = members(r#"{"c":"cut \ud83d"}"#, ["c"]).unwrap().unwrap();
        assert_eq!(lone.values[0].and_then(string), None, "not Unicode");
    }

    #[test]
    fn the_last_occurrence_wins_and_repetition_is_reported() {
        let m = members(r#"{"a":"1","b":"x","a":"2"}"#, ["a", "b"])
            .unwrap()
            .unwrap();
        assert_eq!(strings(&m)[0].as_deref(), Some("2"));
        assert!(m.repeated);
    }

    #[test]
    fn null_is_present_and_not_a_string() {
        let m = members(r#"{"a":null}"#, ["a"]).unwrap().unwrap();
        assert_eq!(m.values[0].map(RawValue::get), Some("null"));
        assert_eq!(m.values[0].and_then(string), None);
    }

    #[test]
    fn elements_and_spans() {
        let text = r#"{"xs": [ 1e400 , {"k":"v"},"s" ]}"#;
        let m = members(text, ["xs"]).unwrap().unwrap();
        let xs = elements(m.values[0].unwrap()).unwrap();
        let spans: Vec<&str> = xs.iter().map(|x| &text[span_in(text, x)]).collect();
        assert_eq!(spans, ["1e400", r#"{"k":"v"}"#, r#""s""#]);
        assert!(is_object(xs[1]) && !is_object(xs[0]));
        assert!(elements(xs[1]).is_none());
    }

    /// Removes the elements of the one array in `text` whose index is in `gone`.
    fn splice(text: &str, gone: &[usize]) -> String {
        let m = members(text, ["xs"]).unwrap().unwrap();
        let xs = elements(m.values[0].unwrap()).unwrap();
        let spans: Vec<Range<usize>> = xs.iter().map(|x| span_in(text, x)).collect();
        let remove: Vec<bool> = (0..spans.len()).map(|i| gone.contains(&i)).collect();
        let (out, starts) = remove_elements(text, &spans, &remove);
        // Every kept element starts where it says, with its original bytes.
        let kept = spans.iter().zip(&remove).filter(|(_, r)| !**r);
        for ((span, _), start) in kept.zip(&starts) {
            assert_eq!(&out[*start..*start + span.len()], &text[span.clone()]);
        }
        serde_json::from_str::<IgnoredAny>(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
        out
    }

    #[test]
    fn removing_first_middle_last_only_and_all() {
        let t = r#"{"a":1.10,"xs":[{"n":1},{"n":2},{"n":3}],"z":1e2}"#;
        assert_eq!(splice(t, &[0]), r#"{"a":1.10,"xs":[{"n":2},{"n":3}],"z":1e2}"#);
        assert_eq!(splice(t, &[1]), r#"{"a":1.10,"xs":[{"n":1},{"n":3}],"z":1e2}"#);
        assert_eq!(splice(t, &[2]), r#"{"a":1.10,"xs":[{"n":1},{"n":2}],"z":1e2}"#);
        assert_eq!(splice(t, &[0, 2]), r#"{"a":1.10,"xs":[{"n":2}],"z":1e2}"#);
        assert_eq!(splice(t, &[0, 1, 2]), r#"{"a":1.10,"xs":[],"z":1e2}"#);
        assert_eq!(splice(t, &[]), t);
        let only = r#"{"xs":[{"n":1}]}"#;
        assert_eq!(splice(only, &[0]), r#"{"xs":[]}"#);
    }

    #[test]
    fn removing_keeps_whitespace_and_newlines_between_elements() {
        let t = "{\"xs\": [\n  {\"n\": 1},\n  {\"n\": 2} ,\t{\"n\": 3}\n],\n\"big\": 123456789012345678901234567890}";
        assert_eq!(
            splice(t, &[0]),
            "{\"xs\": [\n  {\"n\": 2} ,\t{\"n\": 3}\n],\n\"big\": 123456789012345678901234567890}"
        );
        assert_eq!(
            splice(t, &[1]),
            "{\"xs\": [\n  {\"n\": 1} ,\t{\"n\": 3}\n],\n\"big\": 123456789012345678901234567890}"
        );
        assert_eq!(
            splice(t, &[2]),
            "{\"xs\": [\n  {\"n\": 1},\n  {\"n\": 2}\n],\n\"big\": 123456789012345678901234567890}"
        );
        assert_eq!(
            splice(t, &[0, 1, 2]),
            "{\"xs\": [],\n\"big\": 123456789012345678901234567890}"
        );
    }
}
