//! One access line, formatted into a caller's buffer without an allocation:
//! integers through `itoa`, strings escaped in place, the timestamp from a
//! per-buffer cache of its date-and-seconds part.
//!
//! The two layouts are the ones the `tracing` subscriber wrote before the
//! access log had a writer of its own, so log pipelines keep parsing them.

use std::time::{SystemTime, UNIX_EPOCH};

/// What one access line says. None of it is a credential. `method`,
/// `code` and `cache` come from fixed sets (an extension method is an HTTP
/// token: no quote, backslash or control character), and `request_id`
/// passed `ids::request_id_value` (`[A-Za-z0-9_-]`, or a UUID): they are
/// written as they are. `route` (the config's route table), `org` and
/// `key_id` (the keys file, a token's claims) are escaped.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub code: &'a str,
    pub duration_us: u64,
    pub cache: &'a str,
    pub org: &'a str,
    pub key_id: &'a str,
}

/// `json` or `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "text" => Some(Format::Text),
            _ => None,
        }
    }
}

/// The formatted `YYYY-MM-DDTHH:MM:SS.` of the last second seen: the date
/// arithmetic runs once a second per buffer, not once a line.
#[derive(Default)]
pub struct Timestamps {
    second: u64,
    prefix: [u8; 20],
}

impl Timestamps {
    /// Appends `2026-11-27T12:32:17.226262Z` for `now`.
    fn write(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        if secs != self.second || self.prefix[0] == 0 {
            self.second = secs;
            self.prefix = date_time_prefix(secs);
        }
        out.extend_from_slice(&self.prefix);
        let micros = since.subsec_micros();
        let mut digits = [b'0'; 6];
        let mut m = micros;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (m % 10) as u8;
            m /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` for Unix seconds (UTC), by the days-to-civil
/// algorithm of Howard Hinnant's `chrono`-compatible date library.
fn date_time_prefix(secs: u64) -> [u8; 20] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut p = *b"0000-00-00T00:00:00.";
    let put = |p: &mut [u8; 20], at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            p[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut p, 0, 4, y.clamp(0, 9999) as u64);
    put(&mut p, 5, 2, m as u64);
    put(&mut p, 8, 2, d as u64);
    put(&mut p, 11, 2, h);
    put(&mut p, 14, 2, mi);
    put(&mut p, 17, 2, s);
    p
}

/// Appends `s` as the inside of a JSON string: `"` `\` and control
/// characters escaped, so a field can never end the line or the string.
fn escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    // Almost every field needs no escape: a branch-free scan (the compiler
    // vectorizes a fold, not a short-circuiting `any`) and one copy.
    let special = bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0x7f)
    });
    if !special {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escaped(out, s);
    out.push(b'"');
}

/// A field that cannot need an escape (see [`Line`]), copied as it is.
fn trusted(out: &mut Vec<u8>, s: &str) {
    debug_assert!(
        !s.bytes()
            .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f),
        "{s:?}"
    );
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends one line (with its newline) in `format`, stamped `now`.
pub fn write(format: Format, ts: &mut Timestamps, now: SystemTime, line: &Line<'_>, out: &mut Vec<u8>) {
    match format {
        Format::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            ts.write(now, out);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"request_id\":");
            trusted(out, line.request_id);
            out.extend_from_slice(b",\"route\":");
            quoted(out, line.route);
            out.extend_from_slice(b",\"method\":");
            trusted(out, line.method);
            out.extend_from_slice(b",\"status\":");
            number(out, line.status.into());
            out.extend_from_slice(b",\"code\":");
            trusted(out, line.code);
            out.extend_from_slice(b",\"duration_us\":");
            number(out, line.duration_us);
            out.extend_from_slice(b",\"cache\":");
            trusted(out, line.cache);
            out.extend_from_slice(b",\"org\":");
            quoted(out, line.org);
            out.extend_from_slice(b",\"key_id\":");
            quoted(out, line.key_id);
            out.extend_from_slice(b"},\"target\":\"access\"}\n");
        }
        Format::Text => {
            ts.write(now, out);
            out.extend_from_slice(b"  INFO access: request_id=");
            trusted(out, line.request_id);
            out.extend_from_slice(b" route=");
            quoted(out, line.route);
            out.extend_from_slice(b" method=");
            out.extend_from_slice(line.method.as_bytes());
            out.extend_from_slice(b" status=");
            number(out, line.status.into());
            out.extend_from_slice(b" code=");
            trusted(out, line.code);
            out.extend_from_slice(b" duration_us=");
            number(out, line.duration_us);
            out.extend_from_slice(b" cache=");
            trusted(out, line.cache);
            out.extend_from_slice(b" org=");
            quoted(out, line.org);
            out.extend_from_slice(b" key_id=");
            quoted(out, line.key_id);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Line<'static> {
        Line {
            request_id: "req_01M8EFVZA94VWRPEJ3WXH9WQMJ",
            route: "/v1/content/:containerId",
            method: "GET",
            status: 200,
            code: "",
            duration_us: 524,
            cache: "miss",
            org: "org \"a\"\n\u{1}",
            key_id: "DEM0ADM1N0000A01",
        }
    }

    #[test]
    fn timestamps_are_utc_rfc3339_with_microseconds() {
        // 2026-11-27T12:32:17.226262Z
        let t = UNIX_EPOCH + Duration::from_micros(1_795_782_737_226_262);
        let mut out = Vec::new();
        Timestamps::default().write(t, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "2026-11-27T12:32:17.226262Z");
        for (secs, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
        ] {
            let mut out = Vec::new();
            Timestamps::default().write(UNIX_EPOCH + Duration::from_secs(secs), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn a_json_line_parses_and_escapes_what_it_must() {
        let mut out = Vec::new();
        write(
            Format::Json,
            &mut Timestamps::default(),
            SystemTime::now(),
            &sample(),
            &mut out,
        );
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["target"], "access");
        assert_eq!(v["fields"]["org"], "org \"a\"\n\u{1}");
        assert_eq!(v["fields"]["status"], 200);
        assert_eq!(v["fields"]["duration_us"], 524);
    }

    #[test]
    fn a_text_line_is_one_line() {
        let mut out = Vec::new();
        write(
            Format::Text,
            &mut Timestamps::default(),
            SystemTime::now(),
            &sample(),
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        assert!(
            s.contains(" INFO access: request_id=\"req_01M8EFVZA94VWRPEJ3WXH9WQMJ\" route="),
            "{s}"
        );
        assert!(
            s.contains(" method=GET status=200 code=\"\" duration_us=524 cache=\"miss\""),
            "{s}"
        );
        assert!(s.contains("org=\"org \\\"a\\\"\\n\\u0001\""), "{s}");
    }
}
