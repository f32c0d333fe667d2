//! What `serve` and `check-config` check in a keys file beyond its syntax
//! (which [`KeyStore::parse`] checks): checks that need the config.
//!
//! - `keys[N].tier` must name a tier the config defines (at start and on
//!   every reload, see `reload.rs`). At request time an
//!   unknown tier falls back to `standard`, which is right for a tier named
//!   by the origin or a JWT, but in a file the operator wrote it is a typo
//!   that would silently give a partner the smallest limits.
//! - The published demo keys (`config/demo-keys.toml`) are refused unless
//!   the caller allows them (`--allow-demo-keys`, or the demo itself).
//! - Warnings: a key whose env `auth.env` never accepts; no keys at all.

use super::KeyStore;
use crate::config::Config;
use serde::Deserialize;
use std::collections::BTreeSet;

/// The fields these checks read, in file order (the file's syntax was
/// checked by `KeyStore::parse`; other fields are ignored here).
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    env: String,
    tier: Option<String>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    keys: Vec<Entry>,
}

fn entries(text: &str) -> Result<Vec<Entry>, String> {
    let file: File = toml::from_str(text).map_err(|e| crate::config::describe_toml_error(text, &e))?;
    Ok(file.keys)
}

/// Every `keys[N].tier` is one of `known` (the config's tier names). Also
/// run on every reload, so a typo in a new file keeps the old keys in force.
pub fn check_tiers(text: &str, known: &BTreeSet<String>) -> Result<(), String> {
    for (i, k) in entries(text)?.iter().enumerate() {
        if let Some(tier) = k.tier.as_ref().filter(|t| !known.contains(*t)) {
            let names: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(format!(
                "keys[{i}].tier: unknown tier {} (known: {}; [shaping.tiers] in the config adds more)",
                crate::config::field_path::shown_value(tier),
                names.join(", ")
            ));
        }
    }
    Ok(())
}

/// Checks a parsed keys file against the config. `Ok` carries warnings.
pub fn check_keys(
    text: &str,
    store: &KeyStore,
    cfg: &Config,
    allow_demo_keys: bool,
) -> Result<Vec<String>, String> {
    check_tiers(text, &cfg.shaping.effective_tiers().into_keys().collect())?;
    let mut warnings = Vec::new();
    for (i, k) in entries(text)?.iter().enumerate() {
        if let Some(env) = cfg.auth.env.as_deref() {
            if k.env != env {
                warnings.push(format!(
                    "keys[{i}].env: {:?} while auth.env = {env:?}: key {} can never authenticate",
                    k.env, k.key_id
                ));
            }
        }
    }
    // Whatever auth.env says: a file holding published keys is a mistake.
    let demo = demo_keys_in(store);
    if !demo.is_empty() && !allow_demo_keys {
        return Err(format!(
            "auth.keys_file: holds the published demo keys ({}; plain text in config/demo-keys.toml, \
             one with every scope); refused. Use a keys file of your own (entries from \
             `layers-gateway hash-key`), or pass --allow-demo-keys for a local trial",
            demo.join(", ")
        ));
    }
    if store.is_empty() && cfg.auth.source == "file" && cfg.auth.jwt.issuers.is_empty() {
        warnings.push("auth.keys_file: holds no keys, so every request is refused (401)".to_owned());
    }
    Ok(warnings)
}

/// Names of the published demo keys that `store` holds (and would accept
/// wherever their env is accepted).
pub fn demo_keys_in(store: &KeyStore) -> Vec<String> {
    crate::demo::demo_keys()
        .into_iter()
        .filter(|k| store.authenticate(&k.key, None).is_ok())
        .map(|k| k.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::keys_file_entry;
    use std::path::PathBuf;

    const KEY: &str = "lp_live_01HZDEM00000000A_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

    fn check(keys: &str, config: &str, allow: bool) -> Result<Vec<String>, String> {
        let store = KeyStore::parse(keys)?;
        check_keys(
            keys,
            &store,
            &Config::parse(config, PathBuf::new()).unwrap(),
            allow,
        )
    }

    #[test]
    fn an_unknown_tier_is_refused_naming_the_entry() {
        let good = keys_file_entry(KEY, "org_a", &["content:read"], "pilot").unwrap();
        let bad = keys_file_entry(&KEY.replace("00A", "00B"), "org_a", &[], "gold").unwrap();
        let e = check(&format!("{good}{bad}"), "", false).unwrap_err();
        assert!(e.starts_with("keys[1].tier: unknown tier \"gold\""), "{e}");
        let gold = "[shaping.tiers.gold]\nread_light_per_min = 1\nwrite_light_per_min = 1\n\
                    long_running_per_min = 1\ndaily_writes = 1\n";
        check(&format!("{good}{bad}"), gold, false).expect("a tier the config defines");
    }

    #[test]
    fn the_demo_keys_are_refused_unless_allowed() {
        let e = check(crate::demo::DEMO_KEYS_FILE, "", false).unwrap_err();
        assert!(
            e.starts_with("auth.keys_file: holds the published demo keys (admin"),
            "{e}"
        );
        check(crate::demo::DEMO_KEYS_FILE, "", true).expect("allowed");
        // Refused with auth.env = "live" too, where these test keys could
        // not authenticate: the file itself is the mistake.
        check(crate::demo::DEMO_KEYS_FILE, "[auth]\nenv = \"live\"\n", false).unwrap_err();
        let w = check(crate::demo::DEMO_KEYS_FILE, "[auth]\nenv = \"live\"\n", true).unwrap();
        assert!(w.iter().any(|l| l.starts_with("keys[0].env: ")), "{w:?}");
    }

    #[test]
    fn a_type_error_in_the_keys_file_names_the_entry_and_field() {
        let good = keys_file_entry(KEY, "org_a", &["content:read"], "pilot").unwrap();
        let bad = good.replace("00A", "00B").replace("tier = \"pilot\"", "tier = 3");
        let e = check(&format!("{good}{bad}"), "", false).unwrap_err();
        assert!(e.starts_with("keys[1].tier: invalid type"), "{e}");
    }

    #[test]
    fn an_empty_keys_file_warns() {
        let w = check("", "", false).unwrap();
        assert!(
            w.iter().any(|l| l.starts_with("auth.keys_file: holds no keys")),
            "{w:?}"
        );
    }
}
