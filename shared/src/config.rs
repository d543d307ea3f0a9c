//! Configuration, read once at cold start. A missing or malformed variable
//! stops the function before it serves anything, with a message naming it.
//!
//! Endpoints are overridable for local runs: `TWILIO_API_BASE_URL` for Twilio,
//! the AWS SDK's own `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` for AWS,
//! and `PUBLIC_BASE_URL` for the URL Twilio calls us on. In AWS the Twilio
//! secrets come from Secrets Manager (`TWILIO_SECRET_ARN`); locally they may be
//! plain variables (`TWILIO_AUTH_TOKEN`, `TWILIO_API_KEY_SECRET`).

use std::str::FromStr;

use serde::Deserialize;

use crate::ids::{AccountSid, ApiKeySid};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variable {0}")]
    Missing(&'static str),
    #[error("invalid environment variable {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read the Twilio secret from Secrets Manager: {0}")]
    SecretFetch(String),
    #[error("the Twilio secret is not the expected JSON: {0}")]
    SecretFormat(String),
}

/// A source of environment variables; the process environment in production,
/// a map in tests (so tests never mutate the global environment).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name)
            .cloned()
            .filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .filter(|v| !v.is_empty())
    }
}

pub fn required(env: &dyn Env, name: &'static str) -> Result<String, ConfigError> {
    env.get(name).ok_or(ConfigError::Missing(name))
}

/// Parses a required variable with `parse`, naming the variable on failure.
pub fn required_with<T, E: std::fmt::Display>(
    env: &dyn Env,
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ConfigError> {
    let raw = required(env, name)?;
    parse(&raw).map_err(|e| ConfigError::Invalid {
        name,
        reason: e.to_string(),
    })
}

/// Parses an optional variable, falling back to `default` when unset.
pub fn parse_or<T>(env: &dyn Env, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match env.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
    }
}

/// [`parse_or`], refusing values outside `range` (with why, e.g. "Twilio's
/// Timeout range").
pub fn parse_in_range<T>(
    env: &dyn Env,
    name: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
    why: &str,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    let v = parse_or(env, name, default)?;
    if range.contains(&v) {
        return Ok(v);
    }
    let bounds = format!("{}..={}", range.start(), range.end());
    Err(ConfigError::Invalid {
        name,
        reason: if why.is_empty() {
            format!("{v} is outside {bounds}")
        } else {
            format!("{v} is outside {bounds} ({why})")
        },
    })
}

/// An optional E.164 number (a caller ID); unset or empty is `None`.
pub fn optional_e164(env: &dyn Env, name: &'static str) -> Result<Option<String>, ConfigError> {
    match env.get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => crate::ids::E164::parse(v.trim())
            .map(|n| Some(n.to_string()))
            .map_err(|e| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
    }
}

/// Settings every function that writes call records or dials legs shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSettings {
    /// `CALL_RETENTION_DAYS` (1..=3650, default 400): finished calls and
    /// everything filed under them expire (TTL) this long after the call.
    pub retention_days: u32,
    /// `CALLER_ID` (E.164, optional): the `From` of the legs we dial.
    pub caller_id: Option<String>,
}

impl CallSettings {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(Self {
            retention_days: parse_in_range(env, "CALL_RETENTION_DAYS", 400, 1..=3650, "")?,
            caller_id: optional_e164(env, "CALLER_ID")?,
        })
    }

    pub fn retention(&self) -> time::Duration {
        time::Duration::days(i64::from(self.retention_days))
    }
}

/// The public URL Twilio reaches this deployment on, without a trailing slash,
/// e.g. `https://abc123.execute-api.us-east-1.amazonaws.com` or
/// `https://cc.example.com/prod`. Webhook signatures are checked against it,
/// never against a URL rebuilt from the Host header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicBaseUrl(String);

impl PublicBaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{raw:?} must be http or https"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{raw:?} must not have a query or fragment"));
        }
        if url.host_str().is_none() {
            return Err(format!("{raw:?} has no host"));
        }
        Ok(Self(raw.trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute URL of one of our routes, e.g. `url_for("/twilio/voice/inbound")`.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.0, path)
    }

    /// [`Self::url_for`] with a form-encoded query: a callback URL that
    /// names what it is about (Twilio signs the query with the rest).
    pub fn url_with_query(&self, path: &str, query: &[(&str, &str)]) -> String {
        let q = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        format!("{}{}?{q}", self.0, path)
    }
}

impl FromStr for PublicBaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The Twilio REST API's base URL (scheme and host, optionally a port).
pub const DEFAULT_TWILIO_API_BASE_URL: &str = "https://api.twilio.com";

/// Credentials and endpoints for one Twilio account.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub account_sid: AccountSid,
    pub api_key_sid: ApiKeySid,
    pub api_key_secret: Secret,
    /// Verifies webhook signatures.
    pub auth_token: Secret,
    /// Named webhook shared keys, for HMAC-SHA256 signatures.
    pub webhook_shared_keys: Vec<(String, Secret)>,
    pub api_base_url: url::Url,
}

/// What the Twilio secret in Secrets Manager holds.
#[derive(Deserialize)]
struct TwilioSecretDocument {
    auth_token: String,
    api_key_secret: String,
    #[serde(default)]
    webhook_shared_keys: std::collections::BTreeMap<String, String>,
}

/// Where secrets come from; Secrets Manager in AWS.
pub trait SecretSource {
    /// The secret's string value.
    fn fetch(
        &self,
        arn: &str,
    ) -> impl std::future::Future<Output = Result<String, ConfigError>> + Send;
}

/// Reads secrets with the AWS SDK.
pub struct SecretsManager(pub aws_sdk_secretsmanager::Client);

impl SecretSource for SecretsManager {
    async fn fetch(&self, arn: &str) -> Result<String, ConfigError> {
        let out = self
            .0
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                ConfigError::SecretFetch(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        out.secret_string
            .ok_or_else(|| ConfigError::SecretFormat("the secret has no string value".into()))
    }
}

/// No secret store: used locally, where secrets are plain variables.
pub struct NoSecretStore;

impl SecretSource for NoSecretStore {
    async fn fetch(&self, _arn: &str) -> Result<String, ConfigError> {
        Err(ConfigError::SecretFetch(
            "TWILIO_SECRET_ARN is set but no secret store is available".into(),
        ))
    }
}

fn parse_shared_keys(raw: &str) -> Result<Vec<(String, Secret)>, String> {
    raw.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (name, key) = pair
                .split_once('=')
                .ok_or_else(|| "expected name=key pairs separated by commas".to_owned())?;
            Ok((name.trim().to_owned(), Secret::new(key.trim())))
        })
        .collect()
}

impl TwilioConfig {
    /// Reads the account and key SIDs from the environment, and the secrets
    /// from Secrets Manager when `TWILIO_SECRET_ARN` is set, else from
    /// `TWILIO_AUTH_TOKEN` / `TWILIO_API_KEY_SECRET` / `TWILIO_WEBHOOK_SHARED_KEYS`.
    pub async fn load(env: &dyn Env, secrets: &impl SecretSource) -> Result<Self, ConfigError> {
        let account_sid = required_with(env, "TWILIO_ACCOUNT_SID", AccountSid::parse)?;
        let api_key_sid = required_with(env, "TWILIO_API_KEY_SID", ApiKeySid::parse)?;
        let api_base_url = match env.get("TWILIO_API_BASE_URL") {
            None => url::Url::parse(DEFAULT_TWILIO_API_BASE_URL).expect("constant URL"),
            Some(raw) => url::Url::parse(&raw).map_err(|e| ConfigError::Invalid {
                name: "TWILIO_API_BASE_URL",
                reason: e.to_string(),
            })?,
        };
        let (auth_token, api_key_secret, webhook_shared_keys) = match env.get("TWILIO_SECRET_ARN") {
            Some(arn) => {
                let doc: TwilioSecretDocument =
                    serde_json::from_str(&secrets.fetch(&arn).await?)
                        .map_err(|e| ConfigError::SecretFormat(e.to_string()))?;
                (
                    Secret::new(doc.auth_token),
                    Secret::new(doc.api_key_secret),
                    doc.webhook_shared_keys
                        .into_iter()
                        .map(|(k, v)| (k, Secret::new(v)))
                        .collect(),
                )
            }
            None => (
                Secret::new(required(env, "TWILIO_AUTH_TOKEN")?),
                Secret::new(required(env, "TWILIO_API_KEY_SECRET")?),
                match env.get("TWILIO_WEBHOOK_SHARED_KEYS") {
                    None => Vec::new(),
                    Some(raw) => {
                        parse_shared_keys(&raw).map_err(|reason| ConfigError::Invalid {
                            name: "TWILIO_WEBHOOK_SHARED_KEYS",
                            reason,
                        })?
                    }
                },
            ),
        };
        if auth_token.expose().is_empty() || api_key_secret.expose().is_empty() {
            return Err(ConfigError::SecretFormat(
                "auth_token and api_key_secret must not be empty".into(),
            ));
        }
        Ok(Self {
            account_sid,
            api_key_sid,
            api_key_secret,
            auth_token,
            webhook_shared_keys,
            api_base_url,
        })
    }

    /// The validator for this account's webhooks.
    pub fn webhook_validator(&self) -> crate::twilio::signature::WebhookValidator {
        self.webhook_shared_keys.iter().fold(
            crate::twilio::signature::WebhookValidator::new(self.auth_token.clone()),
            |v, (name, key)| v.with_shared_key(name.clone(), key.clone()),
        )
    }
}

/// The AWS SDK configuration. The SDK itself honours `AWS_ENDPOINT_URL` and the
/// per-service `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_S3`, ... variables.
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// An S3 client. Emulators serve buckets by path, not by virtual host, so
/// path-style addressing is forced whenever an endpoint override is present.
pub fn s3_client(sdk: &aws_config::SdkConfig, env: &dyn Env) -> aws_sdk_s3::Client {
    let overridden =
        env.get("AWS_ENDPOINT_URL_S3").is_some() || env.get("AWS_ENDPOINT_URL").is_some();
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(overridden)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Loads what every function needs: the table, the public URL, Twilio.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub table_name: String,
    pub public_base_url: PublicBaseUrl,
    pub twilio: TwilioConfig,
}

impl CommonConfig {
    pub async fn load(env: &dyn Env, secrets: &impl SecretSource) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, "TABLE_NAME")?,
            public_base_url: required_with(env, "PUBLIC_BASE_URL", PublicBaseUrl::parse)?,
            twilio: TwilioConfig::load(env, secrets).await?,
        })
    }

    /// Loads from the process environment, using Secrets Manager only when
    /// `TWILIO_SECRET_ARN` is set.
    pub async fn from_process(sdk: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        if ProcessEnv.get("TWILIO_SECRET_ARN").is_some() {
            Self::load(
                &ProcessEnv,
                &SecretsManager(aws_sdk_secretsmanager::Client::new(sdk)),
            )
            .await
        } else {
            Self::load(&ProcessEnv, &NoSecretStore).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_settings_defaults_and_bounds() {
        let env = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let c = CallSettings::load(&env(&[])).expect("defaults");
        assert_eq!((c.retention_days, c.caller_id), (400, None));
        let c = CallSettings::load(&env(&[("CALLER_ID", "")])).expect("empty caller id");
        assert_eq!(c.caller_id, None);
        assert!(CallSettings::load(&env(&[("CALL_RETENTION_DAYS", "0")])).is_err());
        assert!(CallSettings::load(&env(&[("CALL_RETENTION_DAYS", "x")])).is_err());
        assert!(CallSettings::load(&env(&[("CALLER_ID", "sam")])).is_err());
        let c = CallSettings::load(&env(&[("CALLER_ID", "+15559870000")])).expect("E.164");
        assert_eq!(c.caller_id.as_deref(), Some("+15559870000"));
        assert_eq!(c.retention(), time::Duration::days(400));
    }

    const BASE: [(&str, &str); 6] = [
        ("TABLE_NAME", "cc-state"),
        ("PUBLIC_BASE_URL", "https://cc.example.com/"),
        ("TWILIO_ACCOUNT_SID", "AC17149d439536b3216fdaeeb975729fae"),
        ("TWILIO_API_KEY_SID", "SK33545a3c0202219ec0605e636d32b327"),
        ("TWILIO_AUTH_TOKEN", "token"),
        ("TWILIO_API_KEY_SECRET", "secret"),
    ];

    fn without(name: &str) -> std::collections::HashMap<String, String> {
        BASE.iter()
            .filter(|(k, _)| *k != name)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn loads_and_normalises() {
        let c = CommonConfig::load(&BASE, &NoSecretStore).await.unwrap();
        assert_eq!(
            c.public_base_url.url_for("/twilio/x"),
            "https://cc.example.com/twilio/x"
        );
        assert_eq!(c.twilio.api_base_url.as_str(), "https://api.twilio.com/");
        assert_eq!(format!("{:?}", c.twilio.auth_token), "Secret(***)");
    }

    #[tokio::test]
    async fn every_missing_variable_is_named() {
        for (name, _) in BASE {
            let err = CommonConfig::load(&without(name), &NoSecretStore)
                .await
                .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[tokio::test]
    async fn malformed_values_are_named() {
        let mut env = without("");
        env.insert("TWILIO_ACCOUNT_SID".into(), "XX1".into());
        let err = CommonConfig::load(&env, &NoSecretStore).await.unwrap_err();
        assert!(err.to_string().contains("TWILIO_ACCOUNT_SID"), "{err}");
        let mut env = without("");
        env.insert("PUBLIC_BASE_URL".into(), "ftp://x".into());
        let err = CommonConfig::load(&env, &NoSecretStore).await.unwrap_err();
        assert!(err.to_string().contains("PUBLIC_BASE_URL"), "{err}");
    }

    struct FakeSecrets(&'static str);
    impl SecretSource for FakeSecrets {
        async fn fetch(&self, arn: &str) -> Result<String, ConfigError> {
            assert_eq!(arn, "arn:aws:secretsmanager:us-east-1:1:secret:t");
            Ok(self.0.to_owned())
        }
    }

    #[tokio::test]
    async fn secrets_come_from_the_store_when_an_arn_is_set() {
        let mut env = without("TWILIO_AUTH_TOKEN");
        env.remove("TWILIO_API_KEY_SECRET");
        env.insert(
            "TWILIO_SECRET_ARN".into(),
            "arn:aws:secretsmanager:us-east-1:1:secret:t".into(),
        );
        let c = CommonConfig::load(
            &env,
            &FakeSecrets(
                r#"{"auth_token":"a","api_key_secret":"b","webhook_shared_keys":{"k1":"s"}}"#,
            ),
        )
        .await
        .unwrap();
        assert_eq!(c.twilio.auth_token.expose(), "a");
        assert_eq!(c.twilio.api_key_secret.expose(), "b");
        assert_eq!(c.twilio.webhook_shared_keys.len(), 1);
        let err = CommonConfig::load(&env, &FakeSecrets(r#"{"auth_token":"a"}"#))
            .await
            .unwrap_err();
        assert!(matches!(err, ConfigError::SecretFormat(_)));
    }
}
