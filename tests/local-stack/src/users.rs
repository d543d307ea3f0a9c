//! Test users in the local (moto) Cognito user pool, and their tokens.
//!
//! moto signs RS256 tokens with the real Cognito claims (`iss`
//! `https://cognito-idp.us-east-1.amazonaws.com/<pool>`, `token_use`,
//! `client_id` / `aud`, `username` / `cognito:username`, `cognito:groups`) and
//! serves the pool's JWKS, so the functions verify these tokens with the same
//! code as in AWS. moto's signing key is a fixed, public test key: the local
//! functions trust it only because `.local/env` points `AUTH_JWKS_URL` at moto.

use serde_json::{Value, json};

use crate::cognito::call;

/// What `mint_token` needs to know about the local pool (`.local/env` has it:
/// `AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER`, `COGNITO_USER_POOL_ID`,
/// `COGNITO_CLIENT_ID`).
#[derive(Debug, Clone)]
pub struct PoolRef {
    pub endpoint: String,
    pub pool_id: String,
    pub client_id: String,
}

impl PoolRef {
    /// From an environment map such as `.local/env`.
    pub fn from_env(env: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .ok_or_else(|| format!("{k} is not set (run `cc-local up` first)"))
        };
        Ok(Self {
            endpoint: get("AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER")?,
            pool_id: get("COGNITO_USER_POOL_ID")?,
            client_id: get("COGNITO_CLIENT_ID")?,
        })
    }
}

/// A user's tokens.
#[derive(Debug, Clone)]
pub struct MintedTokens {
    pub username: String,
    /// Cognito's `sub` for the user.
    pub subject: String,
    pub access_token: String,
    pub id_token: String,
    pub expires_in: u64,
}

/// Creates `username` if needed, makes their groups exactly `groups`, and
/// signs them in (admin password flow) with a fresh random password.
pub async fn mint_token(
    pool: &PoolRef,
    username: &str,
    groups: &[&str],
) -> Result<MintedTokens, String> {
    let p = &pool.pool_id;
    match call(
        &pool.endpoint,
        "AdminCreateUser",
        json!({"UserPoolId": p, "Username": username, "MessageAction": "SUPPRESS"}),
    )
    .await
    {
        Ok(_) => {}
        Err(e) if e.contains("UsernameExists") => {}
        Err(e) => return Err(e),
    }
    let password = format!("Local-{}-Aa1!", uuid::Uuid::new_v4().simple());
    call(
        &pool.endpoint,
        "AdminSetUserPassword",
        json!({"UserPoolId": p, "Username": username, "Password": password, "Permanent": true}),
    )
    .await?;
    let current = call(
        &pool.endpoint,
        "AdminListGroupsForUser",
        json!({"UserPoolId": p, "Username": username}),
    )
    .await?;
    for g in current["Groups"].as_array().into_iter().flatten() {
        let Some(name) = g["GroupName"].as_str() else {
            continue;
        };
        if !groups.contains(&name) {
            call(
                &pool.endpoint,
                "AdminRemoveUserFromGroup",
                json!({"UserPoolId": p, "Username": username, "GroupName": name}),
            )
            .await?;
        }
    }
    for g in groups {
        call(
            &pool.endpoint,
            "AdminAddUserToGroup",
            json!({"UserPoolId": p, "Username": username, "GroupName": g}),
        )
        .await?;
    }
    let auth = call(
        &pool.endpoint,
        "AdminInitiateAuth",
        json!({
            "UserPoolId": p,
            "ClientId": pool.client_id,
            "AuthFlow": "ADMIN_USER_PASSWORD_AUTH",
            "AuthParameters": {"USERNAME": username, "PASSWORD": password},
        }),
    )
    .await?;
    let result = &auth["AuthenticationResult"];
    let text = |k: &str| -> Result<String, String> {
        result[k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("AdminInitiateAuth: no {k} in {auth}"))
    };
    let access_token = text("AccessToken")?;
    let subject = jwt_claims(&access_token)
        .and_then(|c| c["sub"].as_str().map(str::to_owned))
        .ok_or("the access token has no sub")?;
    Ok(MintedTokens {
        username: username.to_owned(),
        subject,
        id_token: text("IdToken")?,
        expires_in: result["ExpiresIn"].as_u64().unwrap_or(0),
        access_token,
    })
}

/// The (unverified) claims of a JWT, for display.
pub fn jwt_claims(jwt: &str) -> Option<Value> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
