//! `X-Twilio-Signature`: how Twilio signs every webhook, and how we check it.
//!
//! The string to sign is the full URL Twilio requested followed, for form
//! bodies, by every parameter name and value: names sorted, and for a repeated
//! name each distinct value once, values sorted. JSON bodies are not in the
//! string; instead the URL carries `bodySHA256`, the hex SHA-256 of the body.
//! The MAC is HMAC-SHA1 keyed by the account's auth token, or HMAC-SHA256 keyed
//! by a shared key when `X-Twilio-Webhooks-Signature-Settings` says so. Twilio
//! is not consistent about the default port, so a URL is accepted with or
//! without it, exactly as Twilio's own helper libraries do.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
pub const SIGNATURE_SETTINGS_HEADER: &str = "x-twilio-webhooks-signature-settings";

/// The MAC Twilio used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha1,
    HmacSha256,
}

/// Why a webhook was refused. Deliberately coarse: the caller answers 403 for
/// all of them and logs the variant, never the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Twilio-Signature header")]
    Missing,
    #[error("signature does not match the request")]
    Mismatch,
    #[error("body does not match bodySHA256")]
    BodyHashMismatch,
    #[error("signature settings name an unknown key or algorithm")]
    UnknownSettings,
    #[error("request URL is not a valid absolute URL")]
    BadUrl,
}

/// The key and algorithm a request's settings header selects.
fn parse_settings(header: &str) -> Option<(String, Algorithm)> {
    let mut key = None;
    let mut algorithm = None;
    for part in header.split(',') {
        let (name, value) = part.split_once('=')?;
        match name.trim() {
            "key" => key = Some(value.trim().to_owned()),
            "algorithm" => {
                algorithm = Some(match value.trim() {
                    "HMAC_SHA256" => Algorithm::HmacSha256,
                    "HMAC_SHA1" => Algorithm::HmacSha1,
                    _ => return None,
                })
            }
            _ => {}
        }
    }
    Some((key?, algorithm?))
}

/// The string Twilio signs for a form-encoded request.
fn string_to_sign(url: &str, params: &[(String, String)]) -> String {
    let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, value) in params {
        grouped.entry(name).or_default().push(value);
    }
    let mut out = String::from(url);
    for (name, mut values) in grouped {
        values.sort_unstable();
        values.dedup();
        for value in values {
            out.push_str(name);
            out.push_str(value);
        }
    }
    out
}

fn mac(algorithm: Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::HmacSha1 => {
            let mut m = Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::HmacSha256 => {
            let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

/// Signs a form-encoded request the way Twilio does. `url` is the full URL,
/// query string included; `params` are the decoded form fields in any order.
pub fn sign(algorithm: Algorithm, key: &[u8], url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(mac(algorithm, key, string_to_sign(url, params).as_bytes()))
}

/// Hex SHA-256 of a JSON body, the value Twilio puts in `bodySHA256`.
pub fn body_sha256(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends `bodySHA256` to a URL and signs it, for a JSON-bodied webhook.
/// Returns the URL to request and the signature.
pub fn sign_json(algorithm: Algorithm, key: &[u8], url: &str, body: &[u8]) -> (String, String) {
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}bodySHA256={}", body_sha256(body));
    let signature = sign(algorithm, key, &url, &[]);
    (url, signature)
}

/// The URL spellings Twilio may have signed: as requested, with the scheme's
/// default port added when none is given, and with the port removed.
fn url_variants(url: &str) -> Result<Vec<String>, SignatureError> {
    let parsed = url::Url::parse(url).map_err(|_| SignatureError::BadUrl)?;
    let scheme_end = url.find("://").ok_or(SignatureError::BadUrl)? + 3;
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    // Userinfo never appears in a webhook URL; an IPv6 literal keeps its colons.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let rest = &url[authority_end..];
    let head = &url[..scheme_end];
    let mut out = vec![url.to_owned()];
    match port {
        Some(_) => out.push(format!("{head}{host}{rest}")),
        None => {
            let default = parsed
                .port_or_known_default()
                .ok_or(SignatureError::BadUrl)?;
            out.push(format!("{head}{host}:{default}{rest}"));
        }
    }
    Ok(out)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Checks webhooks for one account. Holds the auth token and any webhook shared
/// keys (by the name Twilio gives them in the settings header).
#[derive(Clone)]
pub struct WebhookValidator {
    auth_token: Secret,
    shared_keys: Vec<(String, Secret)>,
}

impl std::fmt::Debug for WebhookValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookValidator")
            .field("shared_keys", &self.shared_keys.len())
            .finish_non_exhaustive()
    }
}

/// One received webhook, as the validator needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The public URL Twilio requested: configured base URL + raw path + raw query.
    pub url: &'a str,
    /// The raw body.
    pub body: &'a [u8],
    /// `X-Twilio-Signature`, if present.
    pub signature: Option<&'a str>,
    /// `X-Twilio-Webhooks-Signature-Settings`, if present.
    pub settings: Option<&'a str>,
}

impl WebhookValidator {
    pub fn new(auth_token: Secret) -> Self {
        Self {
            auth_token,
            shared_keys: Vec::new(),
        }
    }

    /// Adds a webhook shared key, named as Twilio names it in the settings header.
    pub fn with_shared_key(mut self, name: impl Into<String>, key: Secret) -> Self {
        self.shared_keys.push((name.into(), key));
        self
    }

    /// Validates a request whose form parameters are already decoded. For a
    /// JSON body (the URL carries `bodySHA256`) pass the raw body in `body`.
    pub fn validate(&self, req: &SignedRequest<'_>) -> Result<(), SignatureError> {
        let signature = req.signature.ok_or(SignatureError::Missing)?;
        let (algorithm, key) = match req.settings {
            None => (Algorithm::HmacSha1, self.auth_token.expose().as_bytes()),
            Some(header) => {
                let (name, algorithm) =
                    parse_settings(header).ok_or(SignatureError::UnknownSettings)?;
                let key = self
                    .shared_keys
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, k)| k.expose().as_bytes())
                    .ok_or(SignatureError::UnknownSettings)?;
                (algorithm, key)
            }
        };
        let parsed = url::Url::parse(req.url).map_err(|_| SignatureError::BadUrl)?;
        let body_hash = parsed
            .query_pairs()
            .find(|(k, _)| k == "bodySHA256")
            .map(|(_, v)| v.into_owned());
        let params: Vec<(String, String)> = match &body_hash {
            Some(expected) => {
                if !constant_time_eq(&body_sha256(req.body), expected) {
                    return Err(SignatureError::BodyHashMismatch);
                }
                Vec::new()
            }
            None => form_urlencoded::parse(req.body).into_owned().collect(),
        };
        // Evaluate every variant so timing does not reveal which one matched.
        let mut ok = false;
        for candidate in url_variants(req.url)? {
            ok |= constant_time_eq(&sign(algorithm, key, &candidate, &params), signature);
        }
        if ok {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn form(p: &[(String, String)]) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p)
            .finish()
            .into_bytes()
    }

    #[test]
    fn repeated_values_are_signed_once_each_sorted() {
        let a = string_to_sign(
            "https://x/y",
            &params(&[("B", "2"), ("A", "z"), ("A", "a"), ("A", "z")]),
        );
        assert_eq!(a, "https://x/yAaAzB2");
    }

    #[test]
    fn url_variants_add_and_remove_ports() {
        assert_eq!(
            url_variants("https://cc.example.com/a?b=1").unwrap(),
            vec![
                "https://cc.example.com/a?b=1".to_owned(),
                "https://cc.example.com:443/a?b=1".to_owned()
            ]
        );
        assert_eq!(
            url_variants("http://127.0.0.1:3000/a").unwrap(),
            vec![
                "http://127.0.0.1:3000/a".to_owned(),
                "http://127.0.0.1/a".to_owned()
            ]
        );
    }

    #[test]
    fn a_signature_for_one_url_fails_for_another() {
        let v = WebhookValidator::new(Secret::new("token"));
        let p = params(&[("CallSid", "CA1")]);
        let sig = sign(
            Algorithm::HmacSha1,
            b"token",
            "https://a.example/twilio/voice/inbound",
            &p,
        );
        let body = form(&p);
        let good = SignedRequest {
            url: "https://a.example/twilio/voice/inbound",
            body: &body,
            signature: Some(&sig),
            settings: None,
        };
        assert_eq!(v.validate(&good), Ok(()));
        let replayed = SignedRequest {
            url: "https://a.example/twilio/voice/outbound",
            ..good
        };
        assert_eq!(v.validate(&replayed), Err(SignatureError::Mismatch));
        let missing = SignedRequest {
            signature: None,
            ..good
        };
        assert_eq!(v.validate(&missing), Err(SignatureError::Missing));
    }

    #[test]
    fn unknown_shared_key_is_refused() {
        let v = WebhookValidator::new(Secret::new("token"))
            .with_shared_key("k1", Secret::new("shared"));
        let sig = sign(Algorithm::HmacSha256, b"shared", "https://a.example/x", &[]);
        let req = SignedRequest {
            url: "https://a.example/x",
            body: b"",
            signature: Some(&sig),
            settings: Some("key=k1,algorithm=HMAC_SHA256"),
        };
        assert_eq!(v.validate(&req), Ok(()));
        let other = SignedRequest {
            settings: Some("key=k2,algorithm=HMAC_SHA256"),
            ..req
        };
        assert_eq!(v.validate(&other), Err(SignatureError::UnknownSettings));
    }

    #[test]
    fn json_bodies_are_bound_by_their_hash() {
        let v = WebhookValidator::new(Secret::new("token"));
        let body = br#"{"a":1}"#;
        let (url, sig) = sign_json(Algorithm::HmacSha1, b"token", "https://a.example/e", body);
        let req = SignedRequest {
            url: &url,
            body,
            signature: Some(&sig),
            settings: None,
        };
        assert_eq!(v.validate(&req), Ok(()));
        let tampered = SignedRequest {
            body: br#"{"a":2}"#,
            ..req
        };
        assert_eq!(v.validate(&tampered), Err(SignatureError::BodyHashMismatch));
    }
}
