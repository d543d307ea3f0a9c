//! The issuer's signing keys, fetched once per cold start and cached.
//!
//! Cognito rotates keys rarely and publishes the new key before signing with
//! it, so a token with an unknown `kid` triggers one refetch, and refetches are
//! spaced by [`JWKS_REFETCH_INTERVAL`]: garbage `kid`s from the internet cannot
//! turn every request into a call to the JWKS endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use tokio::sync::{Mutex, RwLock};

/// At most one refetch per this interval.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch the JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the JWKS at {url} holds no usable RSA signing key")]
    Empty { url: String },
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    /// When the last fetch was attempted (successful or not).
    fetched_at: Option<Instant>,
}

/// A cache of RSA verification keys by `kid`.
pub struct JwksCache {
    url: String,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// Serialises fetches so concurrent requests with a new `kid` fetch once.
    fetching: Mutex<()>,
    refetch_interval: Duration,
}

#[derive(serde::Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl JwksCache {
    pub fn new(url: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            url: url.into(),
            http,
            keys: RwLock::new(Keys::default()),
            fetching: Mutex::new(()),
            refetch_interval: JWKS_REFETCH_INTERVAL,
        }
    }

    /// Tests shorten the interval to observe refetching without waiting.
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// The key for `kid`: from the cache, or after one (rate-limited) refetch.
    /// `Ok(None)`: the issuer does not publish that key.
    pub async fn key(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>, JwksError> {
        if let Some(k) = self.keys.read().await.by_kid.get(kid) {
            return Ok(Some(k.clone()));
        }
        let _guard = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        let due = {
            let keys = self.keys.read().await;
            if let Some(k) = keys.by_kid.get(kid) {
                return Ok(Some(k.clone()));
            }
            // With no key at all (the issuer was unreachable) every request
            // retries: refusing everyone for a minute would be worse.
            keys.by_kid.is_empty()
                || keys
                    .fetched_at
                    .is_none_or(|at| at.elapsed() >= self.refetch_interval)
        };
        if !due {
            return Ok(None);
        }
        let fetched = self.fetch().await;
        let mut keys = self.keys.write().await;
        keys.fetched_at = Some(Instant::now());
        let fetched = fetched?;
        // A failed fetch keeps the old keys; a successful one replaces them,
        // so revoked keys stop working after the next refetch.
        keys.by_kid = fetched;
        Ok(keys.by_kid.get(kid).cloned())
    }

    /// How many keys are cached (for tests and diagnostics).
    pub async fn len(&self) -> usize {
        self.keys.read().await.by_kid.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, JwksError> {
        let err = |reason: String| JwksError::Fetch {
            url: self.url.clone(),
            reason,
        };
        let resp = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let set: RawSet = resp.json().await.map_err(|e| err(e.to_string()))?;
        tracing::info!(url = %self.url, keys = set.keys.len(), "fetched the JWKS");
        let keys: HashMap<_, _> = set
            .keys
            .into_iter()
            // One key this library cannot parse must not hide the others.
            .filter_map(|raw| serde_json::from_value::<Jwk>(raw).ok())
            .filter_map(usable)
            .collect();
        if keys.is_empty() {
            return Err(JwksError::Empty {
                url: self.url.clone(),
            });
        }
        Ok(keys)
    }
}

/// RSA signing keys with a `kid`; encryption keys are skipped.
fn usable(jwk: Jwk) -> Option<(String, Arc<DecodingKey>)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(
        jwk.common.public_key_use,
        Some(ref u) if *u != PublicKeyUse::Signature
    ) {
        return None;
    }
    if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, Arc::new(key)))
}
