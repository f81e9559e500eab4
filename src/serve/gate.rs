//! Who may open an MCP session on a network server (path, browser origin, bearer token), and the
//! HTTP answer to those who may not: the same for a WebSocket upgrade and a Streamable HTTP request.

use http::{HeaderMap, HeaderValue, StatusCode};

use crate::auth::{Authenticator, Principal, Refused};

/// What a client without a working token must do; it goes in the 401's challenge, so a client
/// does not take the 401 for an OAuth server and report a failed OAuth discovery instead.
const WHAT_TO_SEND: &str =
    "send Authorization: Bearer <token>, made on the server with outpost auth generate-token";

/// Why a request is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not the MCP path.
    NotFound,
    /// From a browser page whose origin is not allowed.
    Forbidden,
    /// No usable bearer token.
    Unauthorized(Refused),
    /// Every connection slot is taken.
    Busy,
    /// A request that could not be read.
    BadRequest,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest => StatusCode::BAD_REQUEST,
        }
    }

    /// A 401's `error` code (none when no token was sent, as RFC 6750 asks) and description.
    /// Which check a token failed is logged at debug level only, never told to the client.
    fn explanation(self) -> Option<(Option<&'static str>, String)> {
        match self {
            Self::Unauthorized(Refused::NoToken) => Some((
                None,
                format!("this server needs a bearer token: {WHAT_TO_SEND}"),
            )),
            Self::Unauthorized(Refused::BadToken) => Some((
                Some("invalid_token"),
                format!(
                    "the bearer token was refused (expired, signed with another key, or for another audience or issuer): {WHAT_TO_SEND}"
                ),
            )),
            _ => None,
        }
    }
}

/// The answer to a refused request: its status and, for a 401, a `WWW-Authenticate` challenge
/// whose description is also the body (else the body is the reason phrase). `body` wraps the
/// text in the response body type of the server at hand.
pub fn refusal<B>(refusal: Refusal, body: impl FnOnce(String) -> B) -> http::Response<B> {
    let status = refusal.status();
    let explanation = refusal.explanation();
    let text = match &explanation {
        Some((_, description)) => description.clone(),
        None => status.canonical_reason().unwrap_or("").to_owned(),
    };
    let mut response = http::Response::new(body(format!("{text}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some((error, description)) = explanation {
        let error = error
            .map(|e| format!(", error=\"{e}\""))
            .unwrap_or_default();
        let challenge =
            format!("Bearer realm=\"outpost\"{error}, error_description=\"{description}\"");
        let value = HeaderValue::from_str(&challenge);
        let value = value.unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        headers.insert(http::header::WWW_AUTHENTICATE, value);
    }
    if refusal == Refusal::Busy {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Decides, from a request's path and headers, whether it may open an MCP session, and as whom.
pub struct Gate {
    pub path: String,
    pub auth: Authenticator,
    /// Extra names browsers may send in `Origin` (loopback names always pass).
    pub allowed_hosts: Vec<String>,
}

impl Gate {
    /// The principal of an admitted request, or why it is refused. A request from a browser
    /// page (an `Origin` header) is refused unless that origin's host is allowed, so a web page
    /// cannot drive a server that has no authentication.
    pub fn check(&self, path: &str, headers: &HeaderMap) -> Result<Principal, Refusal> {
        if path != self.path {
            return Err(Refusal::NotFound);
        }
        if let Some(origin) = headers.get(http::header::ORIGIN)
            && !self.origin_allowed(origin.to_str().unwrap_or(""))
        {
            return Err(Refusal::Forbidden);
        }
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        self.auth
            .admit(authorization)
            .map_err(Refusal::Unauthorized)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let Ok(uri) = origin.parse::<http::Uri>() else {
            return false;
        };
        let (Some(name), Some(authority)) = (uri.host(), uri.authority()) else {
            return false;
        };
        ["localhost", "127.0.0.1", "[::1]"].contains(&name)
            || (self.allowed_hosts.iter()).any(|h| h == name || h == authority.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate {
            path: "/mcp".into(),
            auth: Authenticator::None,
            allowed_hosts: vec!["box.example".into()],
        }
    }

    #[test]
    fn path_and_browser_origins_are_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(gate().check("/other", &headers), Err(Refusal::NotFound));
        assert!(gate().check("/mcp", &headers).is_ok());
        for refused in [
            "https://evil.example",
            "null",
            "http://localhost.evil.example",
        ] {
            headers.insert("origin", refused.parse().unwrap());
            assert_eq!(
                gate().check("/mcp", &headers),
                Err(Refusal::Forbidden),
                "{refused}"
            );
        }
        for allowed in [
            "http://localhost:3000",
            "https://box.example",
            "http://127.0.0.1",
            "http://[::1]:8080",
        ] {
            headers.insert("origin", allowed.parse().unwrap());
            assert!(gate().check("/mcp", &headers).is_ok(), "{allowed}");
        }
    }

    #[test]
    fn a_401_says_what_to_send_in_its_challenge_and_body() {
        for refused in [Refused::NoToken, Refused::BadToken] {
            let response = refusal(Refusal::Unauthorized(refused), |text| text);
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let challenge = &response.headers()[http::header::WWW_AUTHENTICATE];
            let challenge = challenge.to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"outpost\", "),
                "{challenge}"
            );
            let body = response.body();
            assert!(
                body.contains("send Authorization: Bearer <token>"),
                "{body}"
            );
            assert!(
                challenge.contains(body.trim_end()) && !body.contains('"'),
                "{body}"
            );
        }
        let busy = refusal(Refusal::Busy, |text| text);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.body(), "Service Unavailable\n");
    }
}
