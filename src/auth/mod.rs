//! Who is calling: the principal of a connection, and the bearer-token check that establishes it.

pub mod jwt;
mod scope;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use jwt::Verifier;
pub use scope::Scope;

/// The caller a tool call is attributed to: a JWT `sub`, or `stdio`, or `anonymous` when a
/// network server runs without authentication.
///
/// Two principals are the same caller when their names are, and both are local or both come
/// over the network: the scope a token carries does not change who owns a job or whose rate
/// limit a call counts against.
#[derive(Debug, Clone)]
pub struct Principal {
    name: Arc<str>,
    /// `None` for the local client (stdio); over the network, the limit its token claims.
    network: Option<Arc<Scope>>,
}

impl Principal {
    /// A network caller whose token set no limit.
    pub fn new(name: &str) -> Self {
        Self::network(name, Scope::default())
    }

    /// A network caller limited to `claimed` by its token.
    pub fn network(name: &str, claimed: Scope) -> Self {
        Self {
            name: Arc::from(name),
            network: Some(Arc::new(claimed)),
        }
    }

    /// The local client of `outpost mcp serve` on stdio: never limited, sees every session.
    pub fn stdio() -> Self {
        Self {
            name: Arc::from("stdio"),
            network: None,
        }
    }

    /// Any client of a network server started with `--auth none`.
    pub fn anonymous() -> Self {
        Self::new("anonymous")
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Whether this is the local client rather than a network one.
    pub fn is_local(&self) -> bool {
        self.network.is_none()
    }

    /// The limit the token claims (`None` for the local client).
    pub fn claimed(&self) -> Option<&Scope> {
        self.network.as_deref()
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.is_local() == other.is_local()
    }
}

impl Eq for Principal {}

impl Hash for Principal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.is_local().hash(state);
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
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
            Ok(principal) => Ok(principal),
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

    #[test]
    fn principals_are_the_same_by_name_and_origin_whatever_their_scope() {
        let limited = Principal::network("ana", Scope::new(Some(&["gpu".into()]), None));
        assert_eq!(limited, Principal::new("ana"));
        assert_ne!(Principal::new("stdio"), Principal::stdio());
        assert!(Principal::stdio().claimed().is_none());
        assert_eq!(limited.claimed().unwrap().hosts.as_ref().unwrap().len(), 1);
    }
}
