//! Bearer-token access control of the REST API (`rest.auth.token`).
//!
//! Without a token the API is open, as Flink's is; config validation allows that only on
//! a loopback `rest.address`. With one, every request, whatever its route or method
//! (unknown routes too, so their existence does not leak), except the dashboard's static
//! page and assets ([`super::dashboard`]), must carry
//! `Authorization: Bearer <token>`; any other request is answered 401 with Flink's
//! error body and a `WWW-Authenticate: Bearer` header, and nothing else happens.
//!
//! The presented token is compared in constant time: the comparison's duration depends
//! on the two lengths only, never on where the tokens first differ.

/// The configured token, if any.
#[derive(Clone, Default)]
pub struct Access {
    token: Option<Vec<u8>>,
}

/// Shows whether a token is set, never the token.
impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization` header, or not a bearer one.
    #[error("Unauthorized: this REST API needs an \"Authorization: Bearer <token>\" header (rest.auth.token)")]
    Missing,
    /// A bearer token that is not the configured one.
    #[error("Unauthorized: the bearer token is not valid")]
    WrongToken,
}

impl Access {
    /// Access with `token` required, or open without one.
    pub fn new(token: Option<&str>) -> Self {
        Access {
            token: token.map(|t| t.as_bytes().to_vec()),
        }
    }

    /// Whether a request with the `Authorization` header value `header` (raw bytes, if
    /// present) may proceed.
    pub fn check(&self, header: Option<&[u8]>) -> Result<(), Denied> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let presented = header.and_then(bearer).ok_or(Denied::Missing)?;
        if constant_time_eq(presented, expected) {
            Ok(())
        } else {
            Err(Denied::WrongToken)
        }
    }
}

/// The token of a `Bearer <token>` header value (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii())
}

/// `a == b`, looking at every byte of the longer input whatever the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(std::hint::black_box(x ^ y));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_everything_passes() {
        let open = Access::new(None);
        assert_eq!(open.check(None), Ok(()));
        assert_eq!(open.check(Some(b"Bearer whatever")), Ok(()));
    }

    #[test]
    fn with_a_token_only_the_right_bearer_passes() {
        let a = Access::new(Some("s3cret"));
        assert_eq!(a.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(a.check(Some(b"bearer  s3cret ")), Ok(()));
        assert_eq!(a.check(None), Err(Denied::Missing));
        assert_eq!(a.check(Some(b"Basic czNjcmV0")), Err(Denied::Missing));
        assert_eq!(a.check(Some(b"Bearers3cret")), Err(Denied::Missing));
        assert_eq!(a.check(Some(b"Bearer")), Err(Denied::Missing));
        assert_eq!(a.check(Some(b"Bearer s3cre")), Err(Denied::WrongToken));
        assert_eq!(a.check(Some(b"Bearer s3cret2")), Err(Denied::WrongToken));
        assert_eq!(a.check(Some(b"Bearer S3CRET")), Err(Denied::WrongToken));
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
