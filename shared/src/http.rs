//! The HTTP plumbing every function shares: routing by the template's route
//! keys, typed API errors with JSON bodies, Twilio webhook verification, and
//! response helpers. Handlers return `Result<Response<Body>, ApiError>` and
//! never panic on input.

use std::collections::BTreeMap;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use crate::config::PublicBaseUrl;
use crate::twilio::signature::{
    SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, SignedRequest, WebhookValidator,
};
use crate::twilio::twiml::VoiceResponse;

/// Larger bodies are refused before they are parsed. Twilio's webhooks are a
/// few kilobytes; agents' JSON bodies are smaller still.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error a handler answers with. The message is safe to show the caller:
/// it never carries secrets or internal details (those are logged instead).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Twilio (or another upstream) refused or failed.
    #[error("{message}")]
    Upstream {
        message: String,
        twilio_code: Option<u32>,
    },
    /// Logged in full; the caller sees a generic message.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Upstream { .. } => "upstream_error",
            Self::Internal(_) => "internal_error",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            twilio_code: Option<u32>,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let twilio_code = match &self {
            Self::Upstream { twilio_code, .. } => *twilio_code,
            _ => None,
        };
        let mut resp = json_response(
            self.status(),
            &Outer {
                error: Inner {
                    code: self.code(),
                    message: self.to_string(),
                    twilio_code,
                },
            },
        );
        if matches!(self, Self::Unauthorized(_)) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// A JSON response.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::Text(String::from_utf8_lossy(&bytes).into_owned()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A TwiML response.
pub fn twiml_response(twiml: &VoiceResponse) -> Response<Body> {
    let mut resp = Response::new(Body::Text(twiml.to_xml()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    resp
}

/// A response with no body.
pub fn empty_response(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = status;
    resp
}

/// Collapses a handler result into the response API Gateway sends.
pub fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(ApiError::into_response)
}

/// The request's path as the route table knows it: API Gateway's raw path,
/// with a named stage's prefix removed.
pub fn route_path(req: &Request) -> String {
    let raw = req.raw_http_path();
    let raw = if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    };
    let stage = match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    match stage.as_deref() {
        Some(stage) if stage != "$default" => {
            let prefix = format!("/{stage}");
            match raw.strip_prefix(&prefix) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
                _ => raw.to_owned(),
            }
        }
        _ => raw.to_owned(),
    }
}

/// Path parameters captured from a route key such as `/calls/{callId}/supervision`.
pub type PathParams = BTreeMap<String, String>;

/// Finds which of `routes` (API Gateway route keys, `"METHOD /path/{param}"`)
/// the request matches. Unknown path: 404. Known path, other method: 405.
pub fn match_route<'r>(
    routes: &[&'r str],
    method: &str,
    path: &str,
) -> Result<(&'r str, PathParams), ApiError> {
    let mut path_known = false;
    for route in routes {
        let Some((route_method, pattern)) = route.split_once(' ') else {
            continue;
        };
        if let Some(params) = match_path(pattern, path) {
            path_known = true;
            if route_method.eq_ignore_ascii_case(method) {
                return Ok((route, params));
            }
        }
    }
    if path_known {
        Err(ApiError::MethodNotAllowed)
    } else {
        Err(ApiError::NotFound(format!("no route for {path}")))
    }
}

fn match_path(pattern: &str, path: &str) -> Option<PathParams> {
    let mut params = PathParams::new();
    let mut want = pattern.trim_end_matches('/').split('/');
    let mut got = path.trim_end_matches('/').split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) => {
                if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                    if g.is_empty() {
                        return None;
                    }
                    let decoded = percent_encoding::percent_decode_str(g)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    params.insert(name.to_owned(), decoded);
                } else if w != g {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

fn header_str<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The body's bytes, refused when too large.
pub fn body_bytes(req: &Request) -> Result<&[u8], ApiError> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(body)
}

/// A Twilio webhook's form fields, available only after its signature checked out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TwilioForm(Vec<(String, String)>);

impl TwilioForm {
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::BadRequest(format!("missing parameter {name}")))
    }

    /// A required field parsed into a typed value (a SID, a number...).
    pub fn parse<T, E: std::fmt::Display>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, ApiError> {
        parse(self.require(name)?).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
    }

    /// An optional field parsed into a typed value; present but invalid is an error.
    pub fn parse_opt<T, E: std::fmt::Display>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| parse(v).map_err(|e| ApiError::BadRequest(format!("{name}: {e}"))))
            .transpose()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Checks `X-Twilio-Signature` against the configured public URL before
/// anything else happens, and returns the form fields. Any failure is a 403
/// (or 413 for an oversized body) and the handler must write nothing.
pub fn verify_twilio_webhook(
    req: &Request,
    validator: &WebhookValidator,
    base: &PublicBaseUrl,
) -> Result<TwilioForm, ApiError> {
    let body = body_bytes(req)?;
    let mut url = base.url_for(&route_path(req));
    if let Some(query) = req.uri().query().filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(query);
    }
    let signed = SignedRequest {
        url: &url,
        body,
        signature: header_str(req, SIGNATURE_HEADER),
        settings: header_str(req, SIGNATURE_SETTINGS_HEADER),
    };
    if let Err(e) = validator.validate(&signed) {
        tracing::warn!(reason = %e, path = %route_path(req), "refused a Twilio webhook");
        return Err(ApiError::Forbidden("invalid Twilio signature".into()));
    }
    Ok(TwilioForm(
        form_urlencoded::parse(body).into_owned().collect(),
    ))
}

/// Parses a JSON body into `T`, with a 415/400 that says what was wrong.
pub fn json_body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let body = body_bytes(req)?;
    if let Some(ct) = header_str(req, "content-type") {
        if !ct.to_ascii_lowercase().starts_with("application/json") {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            ));
        }
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest("request body is empty".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: [&str; 3] = [
        "POST /calls/{callId}/supervision",
        "DELETE /calls/{callId}/supervision",
        "GET /calls/live",
    ];

    #[test]
    fn routes_match_with_params() {
        let (route, params) = match_route(&ROUTES, "POST", "/calls/CA1/supervision").unwrap();
        assert_eq!(route, "POST /calls/{callId}/supervision");
        assert_eq!(params["callId"], "CA1");
        assert!(matches!(
            match_route(&ROUTES, "PUT", "/calls/CA1/supervision"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(
            match_route(&ROUTES, "GET", "/calls//supervision"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            match_route(&ROUTES, "GET", "/nope"),
            Err(ApiError::NotFound(_))
        ));
        assert_eq!(
            match_route(&ROUTES, "GET", "/calls/live").unwrap().0,
            "GET /calls/live"
        );
    }

    #[test]
    fn error_bodies_are_json_and_safe() {
        let resp = ApiError::Internal("db password wrong".into()).into_response();
        assert_eq!(resp.status(), 500);
        let body = std::str::from_utf8(resp.body().as_ref())
            .unwrap()
            .to_owned();
        assert!(!body.contains("password"), "{body}");
        let resp = ApiError::Unauthorized("no token".into()).into_response();
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }

    #[test]
    fn form_fields() {
        let f = TwilioForm::from_pairs([("A", "1"), ("E", ""), ("R", "x"), ("R", "y")]);
        assert_eq!(f.get("A"), Some("1"));
        assert_eq!(f.get("E"), None);
        assert!(f.require("Z").is_err());
        assert_eq!(f.get_all("R").collect::<Vec<_>>(), ["x", "y"]);
        assert!(f.parse("A", crate::ids::CallSid::parse).is_err());
    }
}
