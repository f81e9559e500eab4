//! JWT bearer tokens: the key (HS256 secret or an RS256/EdDSA public key), verification and minting.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Principal, Scope};
use crate::config::JwtSettings;
use crate::error::{Error, Result};

/// Environment variable holding the HS256 secret.
pub const SECRET_ENV: &str = "OUTPOST_JWT_SECRET";
/// Shortest HS256 secret accepted: shorter ones can be brute-forced from one token.
const MIN_SECRET_BYTES: usize = 32;
/// Longest lifetime of a minted token: 10 years (as `humantime` counts them, so `10y` passes).
/// A leaked token must not outlive every key rotation, and larger `exp` values stop being
/// dates other JWT libraries can read.
pub const MAX_LIFETIME: Duration = Duration::from_secs(10 * 31_557_600);

/// The claims outpost reads and writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Hosts and groups the holder may name (absent: any). Intersected with `serve.principals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Tools the holder may call (absent: any). Intersected with `serve.principals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
}

/// Checks bearer tokens against one key with one pinned algorithm.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier for `settings`: a public key file when one is set, else the HS256 secret
    /// from `secret_file` (the flag), `$OUTPOST_JWT_SECRET` or `settings.secret_file`.
    pub fn from_settings(settings: &JwtSettings, secret_file: Option<&Path>) -> Result<Self> {
        let (key, algorithm) = match &settings.public_key_file {
            Some(path) if secret_file.is_none() => public_key(path)?,
            _ => {
                let secret = secret(settings, secret_file)?;
                (DecodingKey::from_secret(&secret), Algorithm::HS256)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway_secs;
        validation.validate_nbf = true;
        // A configured claim must be present, not merely right when present.
        let mut required = vec!["exp", "sub"];
        match &settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self { key, validation })
    }

    /// The token's subject, limited to the hosts and tools it claims, when the token is valid
    /// now. A `hosts` or `tools` claim that is not a list of strings makes the token invalid.
    /// The reason for a refusal is for the server's own debug log only, never for the client.
    pub fn verify(&self, token: &str) -> std::result::Result<Principal, String> {
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) if !data.claims.sub.is_empty() => {
                let claims = data.claims;
                let scope = Scope::new(claims.hosts.as_deref(), claims.tools.as_deref());
                Ok(Principal::network(&claims.sub, scope))
            }
            Ok(_) => Err("empty subject".to_owned()),
            Err(e) => Err(format!("{:?}", e.kind())),
        }
    }
}

/// A new HS256 token for `subject`, valid for `lifetime`, with the configured issuer, the
/// given (or configured) audience, and `scope` as its `hosts` and `tools` claims.
pub fn mint(
    settings: &JwtSettings,
    secret_file: Option<&Path>,
    subject: &str,
    lifetime: Duration,
    audience: Option<String>,
    scope: &Scope,
) -> Result<String> {
    if settings.public_key_file.is_some() && secret_file.is_none() {
        return Err(auth_error(
            "the server checks tokens with a public key (`serve.jwt.public_key_file`): sign them with the matching private key instead",
        ));
    }
    if lifetime.is_zero() || lifetime > MAX_LIFETIME {
        return Err(auth_error(format!(
            "a token's lifetime (--expires) must be more than 0 and at most 10y (3652 days); {} is not: pass e.g. `--expires 30d`",
            humantime::format_duration(lifetime)
        )));
    }
    let secret = secret(settings, secret_file)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: subject.to_owned(),
        iat: now,
        exp: now.saturating_add(lifetime.as_secs()),
        iss: settings.issuer.clone(),
        aud: audience.or_else(|| settings.audience.clone()),
        hosts: scope.hosts.as_ref().map(|h| h.iter().cloned().collect()),
        tools: scope.tools.as_ref().map(|t| t.iter().cloned().collect()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&secret),
    )
    .map_err(|e| auth_error(format!("cannot sign the token: {e}")))
}

/// One place an HS256 secret can come from.
enum SecretSource<'a> {
    File(&'a Path),
    Env(std::ffi::OsString),
}

impl SecretSource<'_> {
    fn read(&self) -> Result<Vec<u8>> {
        match self {
            Self::File(path) => std::fs::read(path)
                .map(|bytes| bytes.trim_ascii().to_vec())
                .map_err(|e| {
                    auth_error(format!(
                        "cannot read the JWT secret file {}: {e}",
                        path.display()
                    ))
                }),
            Self::Env(value) => Ok(value.as_encoded_bytes().trim_ascii().to_vec()),
        }
    }
}

/// Every configured secret source, the one in force first: the `--jwt-secret-file` flag,
/// `$OUTPOST_JWT_SECRET`, then `serve.jwt.secret_file`.
fn secret_sources<'a>(settings: &'a JwtSettings, flag: Option<&'a Path>) -> Vec<SecretSource<'a>> {
    let env = std::env::var_os(SECRET_ENV).map(SecretSource::Env);
    let file = settings.secret_file.as_deref().map(SecretSource::File);
    flag.map(SecretSource::File)
        .into_iter()
        .chain(env)
        .chain(file)
        .collect()
}

/// Whether any way of checking tokens is configured (a secret or a public key).
pub fn is_configured(settings: &JwtSettings, flag: Option<&Path>) -> bool {
    settings.public_key_file.is_some() || !secret_sources(settings, flag).is_empty()
}

/// The text of every configured secret that can be read, for redaction.
pub fn known_secrets(settings: &JwtSettings, flag: Option<&Path>) -> Vec<String> {
    secret_sources(settings, flag)
        .iter()
        .filter_map(|source| source.read().ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect()
}

/// The secret in force, checked to be long enough.
fn secret(settings: &JwtSettings, flag: Option<&Path>) -> Result<Vec<u8>> {
    let Some(source) = secret_sources(settings, flag).into_iter().next() else {
        return Err(auth_error(format!(
            "no JWT secret: set ${SECRET_ENV}, pass --jwt-secret-file, or set `serve.jwt.secret_file` (e.g. `mkdir -p ~/.config/outpost && openssl rand -hex 32 > ~/.config/outpost/jwt-secret`)"
        )));
    };
    let secret = source.read()?;
    if secret.len() < MIN_SECRET_BYTES {
        return Err(auth_error(format!(
            "the JWT secret is {} bytes; use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
            secret.len()
        )));
    }
    Ok(secret)
}

/// An RSA public key means RS256 tokens; an Ed25519 one, EdDSA.
fn public_key(path: &Path) -> Result<(DecodingKey, Algorithm)> {
    let pem = std::fs::read(path).map_err(|e| {
        auth_error(format!(
            "cannot read the JWT public key {}: {e}",
            path.display()
        ))
    })?;
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    DecodingKey::from_rsa_pem(&pem)
        .map(|key| (key, Algorithm::RS256))
        .map_err(|_| {
            auth_error(format!(
                "{} is not a PEM RSA or Ed25519 public key",
                path.display()
            ))
        })
}

fn auth_error(reason: impl Into<String>) -> Error {
    Error::Auth(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_with_secret(dir: &tempfile::TempDir) -> JwtSettings {
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        JwtSettings {
            secret_file: Some(path),
            leeway_secs: 0,
            ..JwtSettings::default()
        }
    }

    /// An unlimited token for `ana`, valid for a minute.
    fn ana_for_a_minute(settings: &JwtSettings) -> String {
        mint(
            settings,
            None,
            "ana",
            Duration::from_secs(60),
            None,
            &Scope::default(),
        )
        .unwrap()
    }

    #[test]
    fn minted_tokens_verify_and_tampered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_with_secret(&dir);
        let verifier = Verifier::from_settings(&settings, None).unwrap();
        let token = ana_for_a_minute(&settings);
        assert_eq!(verifier.verify(&token).unwrap().as_str(), "ana");
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(verifier.verify(&tampered).is_err());
        assert!(verifier.verify("garbage").is_err());
    }

    #[test]
    fn audience_and_issuer_are_enforced_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings_with_secret(&dir);
        settings.audience = Some("build-box".into());
        settings.issuer = Some("outpost".into());
        let verifier = Verifier::from_settings(&settings, None).unwrap();
        let good = ana_for_a_minute(&settings);
        assert!(verifier.verify(&good).is_ok());
        let wrong = mint(
            &settings,
            None,
            "ana",
            Duration::from_secs(60),
            Some("other".into()),
            &Scope::default(),
        );
        assert!(verifier.verify(&wrong.unwrap()).is_err());
        let mut no_issuer = settings.clone();
        no_issuer.issuer = None;
        let unissued = ana_for_a_minute(&no_issuer);
        assert!(verifier.verify(&unissued).is_err());
        let mut no_audience = settings.clone();
        no_audience.audience = None;
        let unaddressed = ana_for_a_minute(&no_audience);
        assert!(verifier.verify(&unaddressed).is_err());
    }

    #[test]
    fn lifetime_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_with_secret(&dir);
        let verifier = Verifier::from_settings(&settings, None).unwrap();
        let longest = mint(
            &settings,
            None,
            "ana",
            MAX_LIFETIME,
            None,
            &Scope::default(),
        )
        .unwrap();
        assert_eq!(verifier.verify(&longest).unwrap().as_str(), "ana");
        let ten_years = humantime::parse_duration("10y").unwrap();
        assert!(mint(&settings, None, "ana", ten_years, None, &Scope::default()).is_ok());
        for lifetime in ["1000000y", "10y 1s", "0s"] {
            let lifetime = humantime::parse_duration(lifetime).unwrap();
            let e = mint(&settings, None, "ana", lifetime, None, &Scope::default()).unwrap_err();
            assert!(e.to_string().contains("at most 10y (3652 days)"), "{e}");
        }
    }

    #[test]
    fn scope_claims_round_trip_and_malformed_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_with_secret(&dir);
        let verifier = Verifier::from_settings(&settings, None).unwrap();
        let scope = Scope::new(Some(&["gpu1".into(), "gpu2".into()]), Some(&[]));
        let token = mint(
            &settings,
            None,
            "ana",
            Duration::from_secs(60),
            None,
            &scope,
        )
        .unwrap();
        assert_eq!(verifier.verify(&token).unwrap().claimed(), Some(&scope));
        let unlimited = mint(
            &settings,
            None,
            "ana",
            Duration::from_secs(60),
            None,
            &Scope::default(),
        );
        let claimed = verifier.verify(&unlimited.unwrap()).unwrap();
        assert!(claimed.claimed().unwrap().is_unlimited());
        let secret = std::fs::read(settings.secret_file.as_ref().unwrap()).unwrap();
        let malformed = serde_json::json!({"sub": "ana", "exp": u32::MAX, "hosts": "gpu1"});
        let key = EncodingKey::from_secret(secret.trim_ascii());
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &malformed, &key).unwrap();
        assert!(
            verifier.verify(&token).is_err(),
            "a claim that is not a list fails closed"
        );
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, "tiny").unwrap();
        let settings = JwtSettings {
            secret_file: Some(path),
            ..JwtSettings::default()
        };
        let e = Verifier::from_settings(&settings, None).unwrap_err();
        assert!(e.to_string().contains("at least 32"), "{e}");
    }
}
