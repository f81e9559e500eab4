//! Removing secrets from text before it is written to the audit log.

use regex::{Regex, RegexSet};

/// What a removed secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";
/// Known secret values shorter than this are not searched for (too many false hits).
const MIN_SECRET_LEN: usize = 8;

/// Replaces known secret values and anything shaped like a credential.
pub struct Redactor {
    /// Exact values to remove: forwarded API keys, the JWT secret.
    secrets: Vec<String>,
    /// Patterns whose first group is kept and the rest replaced.
    patterns: Vec<Regex>,
    any: RegexSet,
}

/// `(kept)(secret)` patterns: key=value pairs, bearer headers, URL passwords, flags.
const KEYED: &[&str] = &[
    r"(?i)(authorization:\s*(?:bearer|basic|token)\s+)\S+",
    r#"(?i)(\b[a-z0-9_.-]*(?:password|passwd|secret|token|_key|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)[a-z0-9_.-]*["']?\s*[=:]\s*)("[^"]*"|'[^']*'|\S+)"#,
    r"(?i)(--?(?:password|passwd|token|secret|api-key|apikey|access-key)[= ]\s*)\S+",
    r"(://[^/\s:@]+:)[^@\s/]+@",
];

/// Secrets recognisable by their shape alone (the kept group is empty).
const SHAPED: &[&str] = &[
    r"()sk-ant-[A-Za-z0-9_-]{8,}",
    r"()\bsk-[A-Za-z0-9_-]{20,}",
    r"()\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"()\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"()\bAKIA[0-9A-Z]{16}\b",
    r"()\bxox[abprs]-[A-Za-z0-9-]{10,}",
    r"()\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    r"()-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
];

impl Redactor {
    /// A redactor removing `secrets` (values shorter than 8 characters are ignored) and
    /// credential-shaped text.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret containing another is removed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let sources: Vec<&str> = KEYED.iter().chain(SHAPED).copied().collect();
        // The patterns are constants, tested below; one that failed to compile would only be skipped.
        let patterns = sources.iter().filter_map(|p| Regex::new(p).ok()).collect();
        let any = RegexSet::new(&sources).unwrap_or_else(|_| RegexSet::empty());
        Self {
            secrets,
            patterns,
            any,
        }
    }

    /// `text` with every secret replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        if !self.any.is_match(&out) {
            return out;
        }
        for pattern in &self.patterns {
            out = pattern
                .replace_all(&out, |caps: &regex::Captures| {
                    format!("{}{REDACTED}", caps.get(1).map_or("", |m| m.as_str()))
                })
                .into_owned();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        Redactor::new(["the-forwarded-value-123".to_owned(), "short".to_owned()]).redact(text)
    }

    #[test]
    fn every_pattern_compiles() {
        let redactor = Redactor::new([]);
        assert_eq!(redactor.patterns.len(), KEYED.len() + SHAPED.len());
        assert_eq!(redactor.any.len(), KEYED.len() + SHAPED.len());
    }

    #[test]
    fn known_values_and_credential_shapes_go() {
        let cases = [
            ("echo the-forwarded-value-123", "echo [REDACTED]"),
            (
                "export API_KEY=abc123 && run",
                "export API_KEY=[REDACTED] && run",
            ),
            (
                "mysql --password=hunter2 db",
                "mysql --password=[REDACTED] db",
            ),
            ("DB_PASSWORD='p a s s' x", "DB_PASSWORD=[REDACTED] x"),
            (
                "curl -H 'Authorization: Bearer abc.def' u",
                "curl -H 'Authorization: Bearer [REDACTED] u",
            ),
            (
                "git clone https://bob:pw@example.com/r",
                "git clone https://bob:[REDACTED]example.com/r",
            ),
            ("key sk-ant-api03-abcdefghijkl end", "key [REDACTED] end"),
            ("t ghp_abcdefghijklmnopqrstuvwxyz012345", "t [REDACTED]"),
            ("aws AKIAABCDEFGHIJKLMNOP", "aws [REDACTED]"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn ordinary_text_and_short_values_stay() {
        for text in [
            "ls -la /tmp",
            "grep short file",
            "cargo build --release",
            "tokens.rs",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn private_keys_and_jwts_go() {
        let key = "cat <<EOF\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\nEOF";
        assert_eq!(redact(key), "cat <<EOF\n[REDACTED]\nEOF");
        let jwt = "use eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbmEifQ.c2lnbmF0dXJl now";
        assert_eq!(redact(jwt), "use [REDACTED] now");
    }
}
