//! `Accept-Encoding` negotiation (RFC 9110 section 12.5.3): which of the
//! representations a cached container has (identity, and the compressed
//! variants made at fill time) a request gets.
//!
//! The rules, and the choices the RFC leaves to the server:
//!
//! - No `Accept-Encoding` field, or an empty one: identity. (Absent means
//!   any coding is acceptable, but clients that send nothing often cannot
//!   decode anything; empty means "no coding, please".)
//! - Each listed coding has its weight (`q`, default 1; `q=0` means "not
//!   acceptable"). `x-gzip` is `gzip` (section 8.4.1.3). Names and the `q`
//!   parameter are case-insensitive. A member that does not parse (a bad
//!   weight, another parameter) is ignored, as if it were not listed.
//! - `*` gives its weight to every coding the field does not list,
//!   identity included.
//! - Identity not listed and not covered by `*` is acceptable, with the
//!   lowest weight of all: listing `gzip;q=0.5` still gets gzip.
//! - The highest weight wins; on a tie, the smaller variant (brotli, then
//!   gzip, then identity).
//! - Nothing acceptable (`identity;q=0` or `*;q=0` and no listed coding
//!   available): identity all the same. RFC 9110 allows either that or a
//!   406; the origin never answers 406, so neither does the gateway
//!   (promise 4: same status codes as the origin).

use http::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING};

/// A content coding the gateway can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    Br,
}

static GZIP: HeaderValue = HeaderValue::from_static("gzip");
static BR: HeaderValue = HeaderValue::from_static("br");

impl Encoding {
    /// The coding's token, as in `Content-Encoding` and config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Br => "br",
        }
    }

    /// A coding by its name (case-insensitive; `x-gzip` is gzip).
    pub fn from_name(name: &[u8]) -> Option<Encoding> {
        if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
            Some(Encoding::Gzip)
        } else if name.eq_ignore_ascii_case(b"br") {
            Some(Encoding::Br)
        } else if name.eq_ignore_ascii_case(b"identity") {
            Some(Encoding::Identity)
        } else {
            None
        }
    }

    /// The `Content-Encoding` value; `None` for identity (no header).
    pub fn content_encoding(self) -> Option<&'static HeaderValue> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some(&GZIP),
            Encoding::Br => Some(&BR),
        }
    }

    /// Order among equal weights: smaller representations first.
    fn tie_rank(self) -> u8 {
        match self {
            Encoding::Br => 0,
            Encoding::Gzip => 1,
            Encoding::Identity => 2,
        }
    }
}

/// Weight of identity when the field neither lists it nor has `*`:
/// acceptable, below any listed coding.
const IMPLICIT_IDENTITY: u16 = 0;

/// What a request accepts: a weight in thousandths per coding, `None`
/// when the field does not mention it (directly or through `*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    gzip: Option<u16>,
    br: Option<u16>,
    identity: Option<u16>,
    star: Option<u16>,
    /// Whether a field was present at all.
    present: bool,
}

impl Accepted {
    /// Reads every `Accept-Encoding` field of a request.
    pub fn from_headers(headers: &HeaderMap) -> Accepted {
        let mut a = Accepted::default();
        for v in headers.get_all(ACCEPT_ENCODING) {
            a.add_field(v.as_bytes());
        }
        a
    }

    /// Reads one field value (a comma-separated list); several fields add up.
    pub fn add_field(&mut self, value: &[u8]) {
        self.present = true;
        for member in value.split(|&b| b == b',') {
            let Some((name, q)) = parse_member(member) else {
                continue;
            };
            let slot = if name == b"*" {
                &mut self.star
            } else {
                match Encoding::from_name(name) {
                    Some(Encoding::Gzip) => &mut self.gzip,
                    Some(Encoding::Br) => &mut self.br,
                    Some(Encoding::Identity) => &mut self.identity,
                    None => continue,
                }
            };
            // The first mention of a coding counts.
            slot.get_or_insert(q);
        }
    }

    /// The weight of `e` in thousandths; `None`: not acceptable.
    pub fn weight(&self, e: Encoding) -> Option<u16> {
        let q = match e {
            Encoding::Gzip => self.gzip.or(self.star).unwrap_or(0),
            Encoding::Br => self.br.or(self.star).unwrap_or(0),
            Encoding::Identity => {
                if !self.present {
                    return Some(1000);
                }
                match self.identity.or(self.star) {
                    Some(q) => q,
                    None => return Some(IMPLICIT_IDENTITY),
                }
            }
        };
        (q > 0).then_some(q)
    }

    /// The coding to serve among `available` (identity is always
    /// available and need not be listed). Identity when nothing is
    /// acceptable (see the module doc).
    pub fn choose(&self, available: &[Encoding]) -> Encoding {
        if !self.present {
            return Encoding::Identity;
        }
        let mut best = (Encoding::Identity, self.weight(Encoding::Identity));
        for &e in available {
            let Some(q) = self.weight(e) else {
                continue;
            };
            let better = match best.1 {
                None => true,
                Some(b) => q > b || (q == b && e.tie_rank() < best.0.tie_rank()),
            };
            if better {
                best = (e, Some(q));
            }
        }
        best.0
    }
}

/// One list member: `coding [ OWS ";" OWS "q=" qvalue ]`, its name and
/// weight in thousandths. `None` for an empty or malformed member.
fn parse_member(member: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = member.splitn(2, |&b| b == b';');
    let name = trim(parts.next()?);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    let q = match parts.next() {
        None => 1000,
        Some(param) => {
            let param = trim(param);
            let (key, value) = (param.get(..2)?, &param[2..]);
            if !key.eq_ignore_ascii_case(b"q=") {
                return None;
            }
            parse_qvalue(value)?
        }
    };
    Some((name, q))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (&first, rest) = v.split_first()?;
    let frac = match rest {
        [] => &[][..],
        [b'.', digits @ ..] if digits.len() <= 3 => digits,
        _ => return None,
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match first {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::{Br, Gzip, Identity};

    const BOTH: [Encoding; 2] = [Br, Gzip];

    fn chosen(field: &str, available: &[Encoding]) -> Encoding {
        let mut a = Accepted::default();
        a.add_field(field.as_bytes());
        a.choose(available)
    }

    #[test]
    fn no_field_gets_identity_and_an_empty_field_too() {
        assert_eq!(Accepted::default().choose(&BOTH), Identity);
        assert_eq!(chosen("", &BOTH), Identity);
        assert_eq!(chosen(" , ", &BOTH), Identity);
    }

    #[test]
    fn listed_codings_win_over_implicit_identity_and_ties_go_to_the_smaller() {
        assert_eq!(chosen("gzip", &BOTH), Gzip);
        assert_eq!(chosen("br", &BOTH), Br);
        assert_eq!(chosen("gzip, br", &BOTH), Br);
        assert_eq!(chosen("gzip, deflate, br, zstd", &BOTH), Br);
        assert_eq!(chosen("gzip;q=0.5", &BOTH), Gzip);
        assert_eq!(chosen("x-gzip", &BOTH), Gzip);
        assert_eq!(chosen("GZIP", &BOTH), Gzip);
        assert_eq!(chosen("gzip, br", &[Gzip]), Gzip);
        assert_eq!(chosen("br", &[Gzip]), Identity);
        assert_eq!(chosen("gzip, br", &[]), Identity);
    }

    #[test]
    fn higher_weights_win() {
        assert_eq!(chosen("br;q=0.5, gzip;q=0.8", &BOTH), Gzip);
        assert_eq!(chosen("br;q=1.0, gzip;q=0.999", &BOTH), Br);
        assert_eq!(chosen("gzip;q=0.5, identity", &BOTH), Identity);
        assert_eq!(chosen("gzip;Q=0.9, identity;q=0.8", &BOTH), Gzip);
        assert_eq!(chosen("deflate, gzip;q=0.001", &BOTH), Gzip);
    }

    #[test]
    fn zero_weights_exclude() {
        assert_eq!(chosen("gzip;q=0", &BOTH), Identity);
        assert_eq!(chosen("gzip;q=0, br", &BOTH), Br);
        assert_eq!(chosen("br;q=0, gzip;q=0.000", &BOTH), Identity);
        assert_eq!(
            chosen("*;q=0", &BOTH),
            Identity,
            "nothing acceptable: identity anyway"
        );
        assert_eq!(
            chosen("identity;q=0", &BOTH),
            Identity,
            "nothing listed is available"
        );
        assert_eq!(chosen("identity;q=0, gzip", &BOTH), Gzip);
        assert_eq!(chosen("*;q=0, br", &BOTH), Br);
        assert_eq!(chosen("*;q=0, identity", &BOTH), Identity);
    }

    #[test]
    fn star_covers_what_is_not_listed() {
        assert_eq!(chosen("*", &BOTH), Br);
        assert_eq!(chosen("*", &[Gzip]), Gzip);
        assert_eq!(chosen("*;q=0.5, br;q=0", &BOTH), Gzip);
        assert_eq!(chosen("*;q=0.5, identity", &BOTH), Identity);
        assert_eq!(chosen("*;q=0.5, identity;q=0.4", &BOTH), Br);
    }

    #[test]
    fn malformed_members_are_ignored() {
        for field in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.1234",
            "gzip;q=",
            "gzip;level=1",
            "gzip;q=.5",
            "gzip;q=-0",
            "gz ip",
            "\"gzip\"",
            ";q=1",
        ] {
            assert_eq!(chosen(field, &BOTH), Identity, "{field:?}");
        }
        assert_eq!(chosen("gzip;q=2, br", &BOTH), Br);
    }

    #[test]
    fn the_first_mention_counts_and_fields_add_up() {
        assert_eq!(chosen("gzip;q=0, gzip", &BOTH), Identity);
        let mut a = Accepted::default();
        a.add_field(b"gzip;q=0.2");
        a.add_field(b"br;q=0.3");
        assert_eq!(a.choose(&BOTH), Br);
    }

    #[test]
    fn qvalues_parse_to_thousandths() {
        for (v, want) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.123", Some(123)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0.1234", None),
            ("2", None),
            ("", None),
            ("0x", None),
        ] {
            assert_eq!(parse_qvalue(v.as_bytes()), want, "{v:?}");
        }
    }
}
