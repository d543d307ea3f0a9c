//! Our Voice access tokens against tokens made by Twilio's official Python
//! library (`../shared/twilio-vectors/access_tokens.json`): for the same inputs,
//! the same header and the same claims; and they decode with a standard JWT
//! library using the API key secret.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use shared::ids::{AccountSid, ApiKeySid, ApplicationSid, ClientIdentity};
use shared::secret::Secret;
use shared::twilio::access_token::{AccessTokenRequest, VoiceGrant, mint};

fn vectors() -> Vec<Value> {
    common::load("access_tokens.json")
}

fn decode_segment(seg: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).expect("base64url")).expect("JSON")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} is a string"))
}

#[test]
fn every_vector_decodes_to_the_same_header_and_claims() {
    let vectors = vectors();
    assert!(!vectors.is_empty());
    for v in &vectors {
        let account = AccountSid::parse(s(v, "account_sid")).unwrap();
        let key = ApiKeySid::parse(s(v, "api_key_sid")).unwrap();
        let secret = Secret::new(s(v, "api_key_secret"));
        let identity = ClientIdentity::parse(s(v, "identity")).unwrap();
        let app = v["outgoing_application_sid"]
            .as_str()
            .map(|a| ApplicationSid::parse(a).unwrap());
        let token = mint(&AccessTokenRequest {
            account_sid: &account,
            api_key_sid: &key,
            api_key_secret: &secret,
            identity: &identity,
            voice: VoiceGrant {
                incoming_allow: v["incoming_allow"].as_bool().unwrap(),
                outgoing_application_sid: app,
            },
            issued_at: v["issued_at"].as_u64().unwrap(),
            ttl_seconds: v["ttl"].as_u64().unwrap(),
        })
        .unwrap();
        let parts: Vec<&str> = token.jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        // serde_json's Value compares objects regardless of key order.
        assert_eq!(
            decode_segment(parts[0]),
            v["header"],
            "header, {}",
            s(v, "identity")
        );
        assert_eq!(
            decode_segment(parts[1]),
            v["payload"],
            "claims, {}",
            s(v, "identity")
        );
        assert_eq!(token.expires_at, v["payload"]["exp"].as_u64().unwrap());

        // The official token decodes the same way as ours, under the same key.
        let official: Vec<&str> = s(v, "jwt").split('.').collect();
        assert_eq!(decode_segment(official[1]), decode_segment(parts[1]));

        // A standard JWT library accepts ours with the API key secret, and
        // refuses it with another key.
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<Value>(
            &token.jwt,
            &jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes()),
            &validation,
        )
        .expect("decodes with the API key secret");
        assert_eq!(decoded.claims, v["payload"]);
        assert_eq!(decoded.header.cty.as_deref(), Some("twilio-fpa;v=1"));
        assert!(
            jsonwebtoken::decode::<Value>(
                &token.jwt,
                &jsonwebtoken::DecodingKey::from_secret(b"another secret"),
                &validation,
            )
            .is_err()
        );
        // Same inputs, same key: the signature is deterministic, so equal
        // claims serialised in the same key order would give the same JWT; we
        // only require equal decoded content, as the vectors' README says.
    }
}
