//! The template's Cognito user pool, app client and groups, created in moto
//! (which serves the pool's JWKS and issues RS256 tokens with the real
//! `https://cognito-idp.<region>.amazonaws.com/<pool>` issuer).

use serde_json::{Value, json};

use crate::template::Template;

/// A user pool created locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUserPool {
    pub pool_id: String,
    pub client_id: String,
    pub issuer: String,
    pub jwks_url: String,
    pub groups: Vec<String>,
}

/// Calls one Cognito Identity Provider action on moto (`endpoint`).
pub async fn call(endpoint: &str, action: &str, body: Value) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .post(format!("{endpoint}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header(
            "x-amz-target",
            format!("AWSCognitoIdentityProviderService.{action}"),
        )
        // moto routes by the credential scope's service name; it checks no signature.
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=cclocal/20260101/us-east-1/cognito-idp/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("{action}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{action}: HTTP {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{action}: {e}: {text}"))
}

/// Creates (idempotently) the template's first user pool with its client and
/// groups. `None` if the template declares no user pool.
pub async fn provision_cognito(
    template: &Template,
    endpoint: &str,
    prefix: &str,
) -> Result<Option<LocalUserPool>, String> {
    let resources = template
        .raw()
        .get("Resources")
        .and_then(serde_yaml::Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    let of_type = |ty: &str| -> Vec<(String, serde_yaml::Value)> {
        resources
            .iter()
            .filter(|(_, v)| v.get("Type").and_then(|t| t.as_str()) == Some(ty))
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
            .collect()
    };
    let Some((pool_logical, _)) = of_type("AWS::Cognito::UserPool").into_iter().next() else {
        return Ok(None);
    };
    let pool_name = format!("{prefix}{pool_logical}");
    let pools = call(endpoint, "ListUserPools", json!({"MaxResults": 60})).await?;
    let existing = pools["UserPools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["Name"] == pool_name.as_str())
        .and_then(|p| p["Id"].as_str().map(str::to_string));
    let pool_id = match existing {
        Some(id) => id,
        None => call(endpoint, "CreateUserPool", json!({"PoolName": pool_name})).await?["UserPool"]
            ["Id"]
            .as_str()
            .ok_or("CreateUserPool: no Id")?
            .to_string(),
    };
    let client_name = of_type("AWS::Cognito::UserPoolClient")
        .into_iter()
        .next()
        .map(|(k, _)| format!("{prefix}{k}"))
        .unwrap_or_else(|| format!("{prefix}client"));
    let clients = call(
        endpoint,
        "ListUserPoolClients",
        json!({"UserPoolId": pool_id, "MaxResults": 60}),
    )
    .await?;
    let existing = clients["UserPoolClients"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["ClientName"] == client_name.as_str())
        .and_then(|c| c["ClientId"].as_str().map(str::to_string));
    let client_id = match existing {
        Some(id) => id,
        None => call(
            endpoint,
            "CreateUserPoolClient",
            json!({
                "UserPoolId": pool_id,
                "ClientName": client_name,
                "GenerateSecret": false,
                // Locally, password flows let tests obtain tokens directly.
                "ExplicitAuthFlows": [
                    "ALLOW_ADMIN_USER_PASSWORD_AUTH",
                    "ALLOW_USER_PASSWORD_AUTH",
                    "ALLOW_USER_SRP_AUTH",
                    "ALLOW_REFRESH_TOKEN_AUTH"
                ]
            }),
        )
        .await?["UserPoolClient"]["ClientId"]
            .as_str()
            .ok_or("CreateUserPoolClient: no ClientId")?
            .to_string(),
    };
    let mut groups = Vec::new();
    for (_, g) in of_type("AWS::Cognito::UserPoolGroup") {
        let Some(name) = g
            .get("Properties")
            .and_then(|p| p.get("GroupName"))
            .and_then(|n| n.as_str())
        else {
            continue;
        };
        match call(
            endpoint,
            "CreateGroup",
            json!({"UserPoolId": pool_id, "GroupName": name}),
        )
        .await
        {
            Ok(_) => {}
            Err(e) if e.contains("GroupExists") => {}
            Err(e) => return Err(e),
        }
        groups.push(name.to_string());
    }
    Ok(Some(LocalUserPool {
        issuer: format!("https://cognito-idp.us-east-1.amazonaws.com/{pool_id}"),
        jwks_url: format!("{endpoint}/{pool_id}/.well-known/jwks.json"),
        pool_id,
        client_id,
        groups,
    }))
}
