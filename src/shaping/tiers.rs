//! Rate-limit tiers: requests per minute for each endpoint class and a daily
//! write cap, as the Layers Partner API publishes them (DESIGN.md §1).
//!
//! A tier is looked up by the name on the caller's key (`Principal::tier`).
//! A name the config does not define falls back to [`FALLBACK_TIER`]
//! (`standard`): the most restrictive published tier, so a key file with a
//! typo or a tier added at the origin before the gateway learns of it is
//! shaped conservatively, never unlimited.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The tier an unknown tier name falls back to; it must be defined.
pub const FALLBACK_TIER: &str = "standard";

pub const DEFAULT_STANDARD: TierConfig = TierConfig::new(120, 60, 20, 10_000);
pub const DEFAULT_PILOT: TierConfig = TierConfig::new(1_200, 600, 60, 100_000);
pub const DEFAULT_PARTNER: TierConfig = TierConfig::new(6_000, 3_000, 300, 500_000);

/// The length of the per-minute window, in seconds (the `w` of `RateLimit-Policy`).
pub const WINDOW_SECS: u64 = 60;

/// Endpoint classes of the origin's rate limits. Every GET is read-light.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointClass {
    ReadLight,
    WriteLight,
    LongRunning,
}

impl EndpointClass {
    pub const ALL: [EndpointClass; 3] = [
        EndpointClass::ReadLight,
        EndpointClass::WriteLight,
        EndpointClass::LongRunning,
    ];

    /// The name used in `X-RateLimit-Endpoint-Class` and `RateLimit` headers.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointClass::ReadLight => "read-light",
            EndpointClass::WriteLight => "write-light",
            EndpointClass::LongRunning => "long-running",
        }
    }

    /// Dense index (0, 1, 2), for per-class arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EndpointClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One class's limit: `per_minute` sustained, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub per_minute: u32,
    pub burst: u32,
}

impl Limit {
    /// A limit whose burst is a full minute's allowance.
    pub const fn per_minute(per_minute: u32) -> Limit {
        Limit {
            per_minute,
            burst: per_minute,
        }
    }
}

/// One tier, as written under `[shaping.tiers.<name>]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub read_light_per_min: u32,
    pub write_light_per_min: u32,
    pub long_running_per_min: u32,
    /// Writes (write-light and long-running requests) per org per UTC day.
    pub daily_writes: u64,
    /// Requests admissible at once; default the per-minute limit (a full
    /// minute's allowance may be spent at once). At most the per-minute limit.
    #[serde(default)]
    pub read_light_burst: Option<u32>,
    #[serde(default)]
    pub write_light_burst: Option<u32>,
    #[serde(default)]
    pub long_running_burst: Option<u32>,
}

impl TierConfig {
    /// A tier with the default bursts.
    pub const fn new(read_light: u32, write_light: u32, long_running: u32, daily_writes: u64) -> TierConfig {
        TierConfig {
            read_light_per_min: read_light,
            write_light_per_min: write_light,
            long_running_per_min: long_running,
            daily_writes,
            read_light_burst: None,
            write_light_burst: None,
            long_running_burst: None,
        }
    }

    /// The limit of one endpoint class.
    pub fn limit(&self, class: EndpointClass) -> Limit {
        let (per_minute, burst) = match class {
            EndpointClass::ReadLight => (self.read_light_per_min, self.read_light_burst),
            EndpointClass::WriteLight => (self.write_light_per_min, self.write_light_burst),
            EndpointClass::LongRunning => (self.long_running_per_min, self.long_running_burst),
        };
        Limit {
            per_minute,
            burst: burst.unwrap_or(per_minute),
        }
    }

    /// Checks the tier named `name`; the message names the field
    /// (`shaping.tiers.<name>.<field>: ...`).
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let classes = [
            ("read_light", self.read_light_per_min, self.read_light_burst),
            ("write_light", self.write_light_per_min, self.write_light_burst),
            ("long_running", self.long_running_per_min, self.long_running_burst),
        ];
        for (class, per_min, burst) in classes {
            if per_min == 0 {
                return Err(format!(
                    "shaping.tiers.{name}.{class}_per_min: must be greater than 0"
                ));
            }
            match burst {
                Some(0) => {
                    return Err(format!(
                        "shaping.tiers.{name}.{class}_burst: must be greater than 0"
                    ));
                }
                Some(b) if b > per_min => {
                    return Err(format!(
                        "shaping.tiers.{name}.{class}_burst: must be at most {class}_per_min ({per_min})"
                    ));
                }
                _ => {}
            }
        }
        if self.daily_writes == 0 {
            return Err(format!(
                "shaping.tiers.{name}.daily_writes: must be greater than 0"
            ));
        }
        Ok(())
    }
}

/// The published Layers tiers: `standard`, `pilot`, `partner`.
pub fn default_tiers() -> BTreeMap<String, TierConfig> {
    BTreeMap::from([
        ("standard".to_owned(), DEFAULT_STANDARD),
        ("pilot".to_owned(), DEFAULT_PILOT),
        ("partner".to_owned(), DEFAULT_PARTNER),
    ])
}

/// Checks every tier of a `[shaping.tiers]` table, and that the fallback
/// tier is defined.
pub fn validate_tiers(tiers: &BTreeMap<String, TierConfig>) -> Result<(), String> {
    if !tiers.contains_key(FALLBACK_TIER) {
        return Err(format!(
            "shaping.tiers.{FALLBACK_TIER}: must be defined (unknown tier names fall back to it)"
        ));
    }
    for (name, tier) in tiers {
        if name.is_empty() {
            return Err("shaping.tiers: a tier name must not be empty".into());
        }
        tier.validate(name)?;
    }
    Ok(())
}

/// Tier name -> config, built once from validated config and shared
/// read-only (no lock: it is replaced whole, never mutated).
///
/// Unknown tier names resolve to the `standard` tier ([`FALLBACK_TIER`]).
#[derive(Clone, Debug)]
pub struct Tiers {
    by_name: BTreeMap<Box<str>, Arc<TierConfig>>,
    fallback: Arc<TierConfig>,
}

impl Tiers {
    /// Validates `tiers` (see [`validate_tiers`]) and indexes them.
    pub fn new(tiers: BTreeMap<String, TierConfig>) -> Result<Tiers, String> {
        validate_tiers(&tiers)?;
        let by_name: BTreeMap<Box<str>, Arc<TierConfig>> = tiers
            .into_iter()
            .map(|(name, tier)| (name.into_boxed_str(), Arc::new(tier)))
            .collect();
        let fallback = by_name[FALLBACK_TIER].clone();
        Ok(Tiers { by_name, fallback })
    }

    /// The tier named `name`, or the `standard` tier when no tier has that name.
    pub fn get(&self, name: &str) -> &Arc<TierConfig> {
        self.by_name.get(name).unwrap_or(&self.fallback)
    }

    /// Whether `name` is a defined tier (for logging keys whose tier falls back).
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Tier names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(|k| &**k)
    }
}

impl Default for Tiers {
    fn default() -> Self {
        Tiers::new(default_tiers()).expect("default tiers are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tiers_match_the_published_limits() {
        let t = Tiers::default();
        let per_min = |tier: &str| {
            let c = t.get(tier);
            EndpointClass::ALL.map(|class| c.limit(class).per_minute)
        };
        assert_eq!(per_min("standard"), [120, 60, 20]);
        assert_eq!(per_min("pilot"), [1_200, 600, 60]);
        assert_eq!(per_min("partner"), [6_000, 3_000, 300]);
        assert_eq!(t.get("standard").daily_writes, 10_000);
        assert_eq!(t.get("pilot").daily_writes, 100_000);
        assert_eq!(t.get("partner").daily_writes, 500_000);
        assert_eq!(t.names().collect::<Vec<_>>(), ["partner", "pilot", "standard"]);
    }

    #[test]
    fn burst_defaults_to_the_per_minute_limit() {
        let c = DEFAULT_PILOT;
        assert_eq!(c.limit(EndpointClass::WriteLight), Limit::per_minute(600));
        let c = TierConfig {
            write_light_burst: Some(10),
            ..DEFAULT_PILOT
        };
        assert_eq!(
            c.limit(EndpointClass::WriteLight),
            Limit {
                per_minute: 600,
                burst: 10
            }
        );
        assert_eq!(c.limit(EndpointClass::ReadLight).burst, 1_200);
    }

    #[test]
    fn unknown_tier_falls_back_to_standard() {
        let t = Tiers::default();
        assert!(!t.contains("platinum"));
        assert!(Arc::ptr_eq(t.get("platinum"), t.get("standard")));
        assert!(Arc::ptr_eq(t.get(""), t.get("standard")));
        assert!(!Arc::ptr_eq(t.get("partner"), t.get("standard")));
    }

    #[test]
    fn class_names() {
        let names = EndpointClass::ALL.map(EndpointClass::as_str);
        assert_eq!(names, ["read-light", "write-light", "long-running"]);
        assert_eq!(EndpointClass::LongRunning.to_string(), "long-running");
        assert_eq!(EndpointClass::ALL.map(EndpointClass::index), [0, 1, 2]);
    }

    #[test]
    fn parses_from_toml_and_rejects_unknown_fields() {
        let text = "[gold]\nread_light_per_min = 10\nwrite_light_per_min = 5\n\
                    long_running_per_min = 1\ndaily_writes = 50\nwrite_light_burst = 2\n";
        let m: BTreeMap<String, TierConfig> = toml::from_str(text).unwrap();
        assert_eq!(m["gold"].limit(EndpointClass::WriteLight).burst, 2);
        assert_eq!(m["gold"].limit(EndpointClass::ReadLight).burst, 10);
        let bad = "[gold]\nread_light_per_min = 10\nwrite_light_per_min = 5\n\
                   long_running_per_min = 1\ndaily_writes = 50\nburst = 2\n";
        let e = toml::from_str::<BTreeMap<String, TierConfig>>(bad).unwrap_err();
        assert!(e.to_string().contains("unknown field `burst`"), "{e}");
    }

    #[test]
    fn invalid_tiers_name_the_field() {
        let with = |f: fn(&mut TierConfig)| {
            let mut m = default_tiers();
            f(m.get_mut("pilot").unwrap());
            validate_tiers(&m).unwrap_err()
        };
        assert_eq!(
            with(|t| t.read_light_per_min = 0),
            "shaping.tiers.pilot.read_light_per_min: must be greater than 0"
        );
        assert!(with(|t| t.long_running_per_min = 0).starts_with("shaping.tiers.pilot.long_running_per_min:"));
        assert!(with(|t| t.daily_writes = 0).starts_with("shaping.tiers.pilot.daily_writes:"));
        assert!(with(|t| t.write_light_burst = Some(0)).starts_with("shaping.tiers.pilot.write_light_burst:"));
        assert_eq!(
            with(|t| t.long_running_burst = Some(61)),
            "shaping.tiers.pilot.long_running_burst: must be at most long_running_per_min (60)"
        );
        let mut m = default_tiers();
        m.remove("standard");
        assert!(Tiers::new(m).unwrap_err().starts_with("shaping.tiers.standard:"));
        assert!(validate_tiers(&default_tiers()).is_ok());
    }
}
