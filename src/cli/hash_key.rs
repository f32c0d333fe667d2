//! `hash-key`: read a key on stdin, print its keys-file entry. Refuses what
//! `check-config` would then refuse: an empty org, an unknown scope or tier.

use super::exit;
use crate::auth::keys::keys_file_entry;
use crate::auth::scopes::ScopeSet;
use crate::config::Config;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

/// Longest stdin read: a key is about 70 bytes.
const MAX_INPUT_BYTES: u64 = 4096;

pub fn run(org: &str, scopes: &str, tier: &str, config: Option<&Path>) -> ExitCode {
    match entry(org, scopes, tier, config) {
        Ok(entry) => {
            print!("{entry}");
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(exit::BAD_CONFIG)
        }
    }
}

fn entry(org: &str, scopes: &str, tier: &str, config: Option<&Path>) -> Result<String, String> {
    if org.trim().is_empty() {
        return Err("--org: must not be empty (the organization the key belongs to)".into());
    }
    let tiers = match config {
        Some(p) => Config::load(p)?.shaping.effective_tiers(),
        None => crate::shaping::default_tiers(),
    };
    if !tiers.contains_key(tier) {
        let known: Vec<&str> = tiers.keys().map(String::as_str).collect();
        let more = if config.is_none() {
            "; for a tier your config defines under [shaping.tiers], pass --config FILE"
        } else {
            ""
        };
        return Err(format!(
            "--tier: unknown tier {tier:?} (known: {}{more})",
            known.join(", ")
        ));
    }
    let scopes: Vec<&str> = scopes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    ScopeSet::parse(scopes.iter().copied()).map_err(|e| format!("--scopes: {e}"))?;
    let mut key = String::new();
    std::io::stdin()
        .take(MAX_INPUT_BYTES)
        .read_to_string(&mut key)
        .map_err(|_| "could not read a key on stdin".to_owned())?;
    keys_file_entry(key.trim(), org, &scopes, tier)
}
