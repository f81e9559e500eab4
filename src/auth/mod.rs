//! Who is calling: the principal of a connection, and the bearer-token check that establishes it.

pub mod jwt;

use std::fmt;
use std::sync::Arc;

pub use jwt::Verifier;

/// The caller a tool call is attributed to: a JWT `sub`, or `stdio`, or `anonymous` when a
/// network server runs without authentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(Arc<str>);

impl Principal {
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The local client of `outpost mcp serve` on stdio.
    pub fn stdio() -> Self {
        Self::new("stdio")
    }

    /// Any client of a network server started with `--auth none`.
    pub fn anonymous() -> Self {
        Self::new("anonymous")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a network server admits a connection.
#[derive(Debug)]
pub enum Authenticator {
    /// Everyone, as `anonymous`.
    None,
    /// Holders of a valid bearer token, as its `sub`.
    Jwt(Box<Verifier>),
}

/// Why a request was not admitted (answered 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization: Bearer <token>` header.
    NoToken,
    /// A bearer token that does not verify (signature, expiry, audience, issuer…).
    BadToken,
}

impl Authenticator {
    /// The principal for a request's `Authorization` header value, or why it is refused.
    /// Why a token was refused is logged at debug level without the token itself.
    pub fn admit(&self, authorization: Option<&[u8]>) -> Result<Principal, Refused> {
        let verifier = match self {
            Self::None => return Ok(Principal::anonymous()),
            Self::Jwt(verifier) => verifier,
        };
        let token = authorization
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(bearer_token);
        let Some(token) = token else {
            tracing::debug!("refused a request without a bearer token");
            return Err(Refused::NoToken);
        };
        match verifier.verify(token) {
            Ok(subject) => Ok(Principal::new(&subject)),
            Err(reason) => {
                tracing::debug!(%reason, "refused a bearer token");
                Err(Refused::BadToken)
            }
        }
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_required() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn no_auth_admits_everyone_as_anonymous() {
        assert_eq!(Authenticator::None.admit(None), Ok(Principal::anonymous()));
    }
}
