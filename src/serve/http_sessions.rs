//! Which principal opened each Streamable HTTP session: a session answers only that principal.
//! To anyone else it does not exist (404, as for an unknown or ended session), so another
//! token cannot ride on it nor learn that it exists, and a client that gets 404 starts its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Method};
use rmcp::transport::common::http_header::HEADER_SESSION_ID;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::auth::Principal;

/// The owner of every live session, beside rmcp's session manager.
pub struct SessionOwners {
    owners: Mutex<HashMap<Arc<str>, Principal>>,
    manager: Arc<LocalSessionManager>,
}

impl SessionOwners {
    pub fn new(manager: Arc<LocalSessionManager>) -> Self {
        Self {
            owners: Mutex::new(HashMap::new()),
            manager,
        }
    }

    /// The session a request names in `Mcp-Session-Id`, if any.
    pub fn named(headers: &HeaderMap) -> Option<Arc<str>> {
        let value = headers.get(HEADER_SESSION_ID)?.to_str().ok()?;
        Some(Arc::from(value))
    }

    /// Whether `principal` may use `session`: one it opened, or one not known here (rmcp
    /// answers those itself).
    pub fn permits(&self, session: &str, principal: &Principal) -> bool {
        let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners.get(session).is_none_or(|owner| owner == principal)
    }

    /// After rmcp answered a request: a request naming no session that got a session id back
    /// opened that session for `principal`; a successful `DELETE` ended the session it named.
    pub async fn note(
        &self,
        method: &Method,
        named: Option<Arc<str>>,
        principal: &Principal,
        answer: &HeaderMap,
        succeeded: bool,
    ) {
        match named {
            None => {
                let Some(opened) = Self::named(answer) else {
                    return;
                };
                // Forget the owners of sessions that ended (idle, deleted) since the last one opened.
                let live = self.manager.sessions.read().await;
                let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
                owners.retain(|id, _| live.contains_key(id));
                owners.insert(opened, principal.clone());
            }
            Some(ended) if method == Method::DELETE && succeeded => {
                let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
                owners.remove(&ended);
            }
            Some(_) => {}
        }
    }
}
