//! Scopes as a bit set: deny by default, `*` grants all, checks are one AND.

use std::fmt;

/// The scopes of Layers Partner API v1, in a fixed order (bit i = SCOPES[i]).
pub const SCOPES: [&str; 9] = [
    "content:read",
    "content:write",
    "content:approve",
    "projects:read",
    "jobs:read",
    "jobs:cancel",
    "publish:write",
    "metrics:read",
    "org:admin",
];

/// One known scope.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope(u8);

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        SCOPES.iter().position(|k| *k == s).map(|i| Scope(i as u8))
    }

    pub fn as_str(self) -> &'static str {
        SCOPES[self.0 as usize]
    }

    pub const CONTENT_READ: Scope = Scope(0);
    pub const CONTENT_WRITE: Scope = Scope(1);
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes a principal holds. An empty set grants nothing.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeSet(u16);

impl ScopeSet {
    pub const ALL: ScopeSet = ScopeSet((1 << SCOPES.len()) - 1);

    /// Parses a scope list; `*` grants every scope. Unknown scope names are
    /// an error so a typo in a keys file cannot silently grant nothing.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ScopeSet, String> {
        let mut bits = 0u16;
        for n in names {
            if n == "*" {
                bits |= ScopeSet::ALL.0;
            } else {
                let s = Scope::parse(n)
                    .ok_or_else(|| format!("unknown scope {}", crate::config::field_path::shown_value(n)))?;
                bits |= 1 << s.0;
            }
        }
        Ok(ScopeSet(bits))
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & (1 << s.0) != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        (0..SCOPES.len())
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| SCOPES[i])
            .collect()
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_grants_all_and_empty_grants_none() {
        let all = ScopeSet::parse(["*"]).unwrap();
        let none = ScopeSet::parse([]).unwrap();
        for name in SCOPES {
            let s = Scope::parse(name).unwrap();
            assert!(all.contains(s));
            assert!(!none.contains(s));
        }
    }

    #[test]
    fn listed_scopes_only() {
        let s = ScopeSet::parse(["content:read"]).unwrap();
        assert!(s.contains(Scope::CONTENT_READ));
        assert!(!s.contains(Scope::CONTENT_WRITE));
        assert!(ScopeSet::parse(["content:reed"]).is_err());
    }
}
