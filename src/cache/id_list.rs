//! The asset ids of one cached fill, as its fence remembers them: one
//! allocation for all of them.
//!
//! A fence keeps up to `MAX_RECORDS` fills per container, for every cached
//! container, so this is per-container memory (issue 17's 2 KiB target).
//! A `Vec` of boxed ids cost one allocation per id plus one for the list
//! (about 224 bytes for four ids); this costs one of about 80.
//!
//! Each id is stored as its byte length in decimal, a `:`, then the id
//! (a netstring without the trailing comma). Any UTF-8 id round-trips,
//! including ids holding separators an origin could send (`\n`, `\0`, `:`).

use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdList(Arc<str>);

impl IdList {
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = String::new();
        for id in ids {
            s.push_str(itoa::Buffer::new().format(id.len()));
            s.push(':');
            s.push_str(id);
        }
        IdList(Arc::from(s))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let mut rest: &str = &self.0;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_once(':')?;
            // Written by `new`: the length is digits and ends on a char boundary.
            let len: usize = len.parse().ok()?;
            let (id, after) = (tail.get(..len)?, tail.get(len..)?);
            rest = after;
            Some(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_id_round_trips_in_order() {
        let ids = ["slide-1", "", "a:b", "12:x", "line\nbreak", "nul\0byte", "ü-日本"];
        let list = IdList::new(ids);
        assert_eq!(list.iter().collect::<Vec<_>>(), ids);
        assert_eq!(IdList::new([]).iter().count(), 0);
    }
}
