//! What the gateway forwards to the origin of a caller's credentials:
//! exactly the one it checked (`auth::presented_credential`'s choice: the
//! first `X-Api-Key`, else the first `Authorization`), never a second one
//! the origin might prefer.

use http::header::{HeaderMap, HeaderName, AUTHORIZATION};

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Replaces every credential header in `dst` by the one checked in `src`.
pub(super) fn checked_credential_only(dst: &mut HeaderMap, src: &HeaderMap) {
    dst.remove(&X_API_KEY);
    dst.remove(AUTHORIZATION);
    if let Some(v) = src.get(&X_API_KEY) {
        dst.insert(X_API_KEY.clone(), v.clone());
    } else if let Some(v) = src.get(AUTHORIZATION) {
        dst.insert(AUTHORIZATION, v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_winning_credential_is_forwarded() {
        let mut src = HeaderMap::new();
        src.append("x-api-key", "first".parse().unwrap());
        src.append("x-api-key", "second".parse().unwrap());
        src.append("authorization", "Bearer other".parse().unwrap());
        let mut dst = src.clone();
        checked_credential_only(&mut dst, &src);
        assert_eq!(dst.get_all("x-api-key").iter().collect::<Vec<_>>(), ["first"]);
        assert!(dst.get("authorization").is_none());

        let mut src = HeaderMap::new();
        src.append("authorization", "Bearer a".parse().unwrap());
        src.append("authorization", "Bearer b".parse().unwrap());
        let mut dst = src.clone();
        checked_credential_only(&mut dst, &src);
        assert_eq!(
            dst.get_all("authorization").iter().collect::<Vec<_>>(),
            ["Bearer a"]
        );
    }
}
