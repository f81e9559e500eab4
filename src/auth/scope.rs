//! What a principal may reach: the hosts and tools named by its token's claims or by
//! `serve.principals` of the config. `None` means no limit; an empty list allows nothing.

use std::collections::BTreeSet;

/// One limit on hosts and tools (a token's claims, or one `serve.principals` entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Host and group names that may be named; `None`: any.
    pub hosts: Option<BTreeSet<String>>,
    /// Tool names that may be called; `None`: any.
    pub tools: Option<BTreeSet<String>>,
}

impl Scope {
    /// The scope of these lists (`None`: that side is not limited).
    pub fn new(hosts: Option<&[String]>, tools: Option<&[String]>) -> Self {
        let set = |names: &[String]| names.iter().map(|n| n.trim().to_owned()).collect();
        Self {
            hosts: hosts.map(set),
            tools: tools.map(set),
        }
    }

    /// Whether neither hosts nor tools are limited.
    pub fn is_unlimited(&self) -> bool {
        self.hosts.is_none() && self.tools.is_none()
    }

    /// Whether `tool` may be called.
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.tools.as_ref().is_none_or(|tools| tools.contains(tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_no_limit_and_empty_allows_nothing() {
        assert!(Scope::default().is_unlimited());
        assert!(Scope::default().allows_tool("remote_exec"));
        let tools = ["job_output".to_owned(), " list_jobs ".to_owned()];
        let scope = Scope::new(None, Some(&tools));
        assert!(scope.allows_tool("list_jobs") && !scope.allows_tool("remote_exec"));
        assert!(!Scope::new(None, Some(&[])).allows_tool("list_jobs"));
    }
}
