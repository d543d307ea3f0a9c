//! A local stand-in for API Gateway HTTP API (payload format 2.0) in front of
//! the real function binaries, plus their SQS and schedule event sources.
//!
//! Routes come from template.yaml's `HttpApi` events, so local routes equal the
//! template's by construction. JWT routes get no special treatment: the
//! functions verify tokens themselves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::provision::LocalEndpoints;
use crate::runtime::{ChildOutput, InvokeError, RuntimeApi, spawn_instances};
use crate::template::{Bindings, RouteSpec, Template, TemplateError, parse_rate};

/// API Gateway's maximum integration timeout for HTTP APIs.
const MAX_INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// API Gateway's request payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(
        "{function}: template environment variables without a local value: {names:?} (add them to .local/env or the gateway's env)"
    )]
    MissingEnv {
        function: String,
        names: Vec<String>,
    },
    #[error("{function}: binary not found at {path} (build it: cargo build -p {binary})")]
    MissingBinary {
        function: String,
        binary: String,
        path: String,
    },
    #[error("unknown function {0} (not in the template)")]
    UnknownFunction(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// How to run the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub template: Template,
    /// Where the function binaries are (e.g. `target/debug`).
    pub bin_dir: PathBuf,
    /// Per logical id, a binary to run instead of `bin_dir/<binary>` (tests).
    pub binary_overrides: BTreeMap<String, PathBuf>,
    /// Serve only these functions (logical ids); `None` = all.
    pub functions: Option<Vec<String>>,
    /// 127.0.0.1:3000, or 127.0.0.1:0 for tests.
    pub listen: SocketAddr,
    pub instances: usize,
    /// Local values of environment variables (override template resolution),
    /// AWS endpoint variables, credentials and local secrets.
    pub env: BTreeMap<String, String>,
    /// What template references resolve to (provisioned resources, pseudo parameters).
    pub bindings: Bindings,
    /// Poll SQS event sources (needs the SQS endpoint and queue names in `bindings`).
    pub sqs: Option<LocalEndpoints>,
    /// Fire Schedule events on their rate (they can always be fired on demand).
    pub schedules: bool,
    pub output: ChildOutput,
}

impl GatewayConfig {
    pub fn new(template: Template, bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            template,
            bin_dir: bin_dir.into(),
            binary_overrides: BTreeMap::new(),
            functions: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            instances: 4,
            env: BTreeMap::new(),
            bindings: Bindings::with_pseudo(crate::provision::LOCAL_REGION),
            sqs: None,
            schedules: false,
            output: ChildOutput::Inherit,
        }
    }
}

/// Variables passed to every function from `env` when present.
const PASS_THROUGH: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_SECRETSMANAGER",
    "AWS_S3_FORCE_PATH_STYLE",
    "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL",
    "RUST_BACKTRACE",
];

/// Computes one function's process environment: Lambda's own variables, the
/// template's variable names mapped to local values, local secrets.
pub fn function_env(
    config: &GatewayConfig,
    f: &crate::template::FunctionSpec,
    public_base_url: &str,
) -> Result<BTreeMap<String, String>, GatewayError> {
    let mut env = BTreeMap::new();
    for k in ["PATH", "HOME", "TMPDIR", "LANG"] {
        if let Ok(v) = std::env::var(k) {
            env.insert(k.to_string(), v);
        }
    }
    let region = config
        .env
        .get("AWS_REGION")
        .cloned()
        .unwrap_or_else(|| crate::provision::LOCAL_REGION.to_string());
    env.insert("AWS_REGION".into(), region.clone());
    env.insert("AWS_DEFAULT_REGION".into(), region);
    env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), f.logical_id.clone());
    env.insert(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
        f.memory_mb.to_string(),
    );
    env.insert("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into());
    env.insert(
        "AWS_LAMBDA_LOG_GROUP_NAME".into(),
        format!("/aws/lambda/{}", f.logical_id),
    );
    env.insert("AWS_LAMBDA_LOG_STREAM_NAME".into(), "local".into());
    env.insert("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "on-demand".into());
    for k in PASS_THROUGH {
        if let Some(v) = config.env.get(*k) {
            env.insert(k.to_string(), v.clone());
        }
    }
    let mut missing = Vec::new();
    for (name, value) in &f.environment {
        if name == "TWILIO_SECRET_ARN" {
            // Locally the secret's fields are plain variables; the ARN stays unset.
            for k in ["TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SECRET"] {
                match config.env.get(k) {
                    Some(v) => {
                        env.insert(k.to_string(), v.clone());
                    }
                    None => missing.push(k.to_string()),
                }
            }
            continue;
        }
        let local = config
            .env
            .get(name)
            .cloned()
            .or_else(|| (name == "PUBLIC_BASE_URL").then(|| public_base_url.to_string()))
            // An empty value (an optional parameter left empty) means "unset"
            // to the functions, as it does in AWS; only an unresolvable one
            // is missing.
            .or_else(|| config.template.resolve(value, &config.bindings));
        match local {
            Some(v) => {
                env.insert(name.clone(), v);
            }
            None => missing.push(name.clone()),
        }
    }
    if missing.is_empty() {
        Ok(env)
    } else {
        Err(GatewayError::MissingEnv {
            function: f.logical_id.clone(),
            names: missing,
        })
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Lit(String),
    Param(String),
    Greedy(String),
}

struct Route {
    spec: RouteSpec,
    segs: Vec<Seg>,
}

impl Route {
    fn new(spec: RouteSpec) -> Self {
        let segs = spec
            .path
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                if let Some(p) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    match p.strip_suffix('+') {
                        Some(g) => Seg::Greedy(g.to_string()),
                        None => Seg::Param(p.to_string()),
                    }
                } else {
                    Seg::Lit(s.to_string())
                }
            })
            .collect();
        Self { spec, segs }
    }

    fn literal_count(&self) -> usize {
        self.segs
            .iter()
            .filter(|s| matches!(s, Seg::Lit(_)))
            .count()
    }

    fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut params = BTreeMap::new();
        for (i, seg) in self.segs.iter().enumerate() {
            match seg {
                Seg::Greedy(name) => {
                    if i >= parts.len() {
                        return None;
                    }
                    params.insert(name.clone(), decode(&parts[i..].join("/")));
                    return Some(params);
                }
                _ if i >= parts.len() => return None,
                Seg::Lit(l) => {
                    if l != parts[i] {
                        return None;
                    }
                }
                Seg::Param(name) => {
                    if parts[i].is_empty() {
                        return None;
                    }
                    params.insert(name.clone(), decode(parts[i]));
                }
            }
        }
        (parts.len() == self.segs.len()).then_some(params)
    }
}

fn decode(s: &str) -> String {
    // Percent-decoding only (not '+'), as for path parameters.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Inner {
    routes: Vec<Route>,
    apis: BTreeMap<String, RuntimeApi>,
    schedules: BTreeMap<String, Vec<String>>,
    region: String,
}

/// A running gateway. Dropping it stops the servers and kills the function processes.
pub struct Gateway {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Runtime API of a function (tests can invoke it directly).
    pub fn runtime(&self, logical_id: &str) -> Option<&RuntimeApi> {
        self.inner.apis.get(logical_id)
    }

    /// Route keys served, sorted (`POST /twilio/voice/inbound`, ...).
    pub fn route_keys(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .routes
            .iter()
            .map(|r| r.spec.route_key())
            .collect();
        v.sort();
        v
    }

    /// Starts the Runtime APIs, the function processes, the event pollers and
    /// the HTTP server. Fails before spawning anything if a binary or a local
    /// environment value is missing.
    pub async fn start(config: GatewayConfig) -> Result<Self, GatewayError> {
        let mut functions = config.template.functions()?;
        if let Some(only) = &config.functions {
            for o in only {
                if !functions.iter().any(|f| &f.logical_id == o) {
                    return Err(GatewayError::UnknownFunction(o.clone()));
                }
            }
            functions.retain(|f| only.contains(&f.logical_id));
        }
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let public = config
            .env
            .get("PUBLIC_BASE_URL")
            .cloned()
            .unwrap_or_else(|| format!("http://{addr}"));

        // Validate everything first.
        let mut plans = Vec::new();
        for f in &functions {
            let env = function_env(&config, f, &public)?;
            let bin = config
                .binary_overrides
                .get(&f.logical_id)
                .cloned()
                .unwrap_or_else(|| config.bin_dir.join(&f.binary));
            if !bin.is_file() {
                return Err(GatewayError::MissingBinary {
                    function: f.logical_id.clone(),
                    binary: f.binary.clone(),
                    path: bin.display().to_string(),
                });
            }
            plans.push((f.clone(), env, bin));
        }

        let region = config
            .env
            .get("AWS_REGION")
            .cloned()
            .unwrap_or_else(|| crate::provision::LOCAL_REGION.to_string());
        let mut tasks = Vec::new();
        let mut apis = BTreeMap::new();
        let mut routes = Vec::new();
        let mut schedules = BTreeMap::new();
        for (f, env, bin) in plans {
            let (api, task) = RuntimeApi::start(
                &f.logical_id,
                &region,
                Duration::from_secs(f.timeout_seconds),
            )
            .await?;
            tasks.push(task);
            tasks.extend(spawn_instances(
                &api,
                bin,
                env,
                config.instances.max(1),
                config.output.clone(),
            ));
            for r in &f.routes {
                routes.push(Route::new(r.clone()));
            }
            schedules.insert(
                f.logical_id.clone(),
                f.schedule_events
                    .iter()
                    .map(|s| s.expression.clone())
                    .collect(),
            );
            if let Some(ep) = &config.sqs {
                for ev in &f.sqs_events {
                    let url = config
                        .bindings
                        .values
                        .get(&ev.queue_logical_id)
                        .cloned()
                        .ok_or_else(|| GatewayError::MissingEnv {
                            function: f.logical_id.clone(),
                            names: vec![format!("queue {}", ev.queue_logical_id)],
                        })?;
                    let arn = config
                        .bindings
                        .values
                        .get(&format!("{}.Arn", ev.queue_logical_id))
                        .cloned()
                        .unwrap_or_default();
                    tasks.push(tokio::spawn(crate::sqs_poller::poll(
                        ep.sqs_client(),
                        api.clone(),
                        url,
                        arn,
                        ev.clone(),
                        region.clone(),
                    )));
                }
            }
            if config.schedules {
                for s in &f.schedule_events {
                    if let Some(period) = parse_rate(&s.expression) {
                        let api = api.clone();
                        let region = region.clone();
                        let name = s.event.clone();
                        tasks.push(tokio::spawn(async move {
                            let mut tick = tokio::time::interval(period);
                            tick.tick().await; // first tick is immediate: skip it
                            loop {
                                tick.tick().await;
                                let ev = scheduled_event(&region, &name);
                                if let Err(e) = api.invoke(Bytes::from(ev.to_string()), None).await
                                {
                                    tracing::warn!("schedule {name}: {e:?}");
                                }
                            }
                        }));
                    } else {
                        tracing::warn!(
                            "{}: schedule {} is not a rate(); fire it with POST /_local/schedule/{}",
                            f.logical_id,
                            s.expression,
                            f.logical_id
                        );
                    }
                }
            }
            apis.insert(f.logical_id.clone(), api);
        }
        // Most specific first: more literal segments win over parameters.
        routes.sort_by_key(|r| std::cmp::Reverse(r.literal_count()));

        let inner = Arc::new(Inner {
            routes,
            apis,
            schedules,
            region,
        });
        let app = Router::new()
            .route("/_local/health", get(|| async { "ok" }))
            .route("/_local/schedule/{function}", post(fire_schedule))
            .route("/_local/invoke/{function}", post(invoke_raw))
            .fallback(api_route)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(inner.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        }));
        Ok(Self { addr, inner, tasks })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn scheduled_event(region: &str, rule: &str) -> Value {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": now,
        "region": region,
        "resources": [format!("arn:aws:events:{region}:000000000000:rule/{rule}")],
        "detail": {}
    })
}

fn message(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "message": msg }))).into_response()
}

fn invoke_error_response(e: InvokeError) -> Response {
    match e {
        InvokeError::Function(_) => message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
        InvokeError::Timeout => message(StatusCode::GATEWAY_TIMEOUT, "Service Unavailable"),
        InvokeError::Unavailable => message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
    }
}

async fn fire_schedule(State(s): State<Arc<Inner>>, Path(function): Path<String>) -> Response {
    let Some(api) = s.apis.get(&function) else {
        return message(StatusCode::NOT_FOUND, "no such function");
    };
    let rule = s
        .schedules
        .get(&function)
        .and_then(|v| v.first().cloned())
        .unwrap_or_else(|| "on-demand".into());
    let ev = scheduled_event(&s.region, &format!("{function}-{rule}"));
    match api.invoke(Bytes::from(ev.to_string()), None).await {
        Ok(b) => (StatusCode::OK, [("content-type", "application/json")], b).into_response(),
        Err(e) => invoke_error_response(e),
    }
}

async fn invoke_raw(
    State(s): State<Arc<Inner>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Response {
    let Some(api) = s.apis.get(&function) else {
        return message(StatusCode::NOT_FOUND, "no such function");
    };
    match api.invoke(body, None).await {
        Ok(b) => (StatusCode::OK, [("content-type", "application/json")], b).into_response(),
        Err(e) => invoke_error_response(e),
    }
}

fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.ends_with("/json")
        || ct.ends_with("+json")
        || ct.ends_with("/xml")
        || ct.ends_with("+xml")
        || ct == "application/x-www-form-urlencoded"
        || ct == "application/javascript"
        || ct == "application/graphql"
}

/// Builds the API Gateway HTTP API v2 event for a request.
pub fn build_v2_event(
    route: &RouteSpec,
    path_params: &BTreeMap<String, String>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    source_ip: &str,
) -> Value {
    let mut hdrs: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for (k, v) in headers {
        let name = k.as_str().to_ascii_lowercase();
        let val = String::from_utf8_lossy(v.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(
                val.split(';')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        hdrs.entry(name)
            .and_modify(|e| {
                e.push(',');
                e.push_str(&val);
            })
            .or_insert(val);
    }
    let raw_query = uri.query().unwrap_or_default().to_string();
    let mut qs: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        qs.entry(k.into_owned())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v.into_owned());
    }
    let now = time::OffsetDateTime::now_utc();
    let time_str = now
        .format(time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    let host = hdrs.get("host").cloned().unwrap_or_default();
    let mut ev = json!({
        "version": "2.0",
        "routeKey": route.route_key(),
        "rawPath": uri.path(),
        "rawQueryString": raw_query,
        "headers": hdrs,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default(),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route.route_key(),
            "stage": "$default",
            "time": time_str,
            "timeEpoch": (now.unix_timestamp_nanos() / 1_000_000) as i64,
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        ev["cookies"] = json!(cookies);
    }
    if !qs.is_empty() {
        ev["queryStringParameters"] = json!(qs);
    }
    if !path_params.is_empty() {
        ev["pathParameters"] = json!(path_params);
    }
    if !body.is_empty() {
        let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
        match std::str::from_utf8(body) {
            Ok(text) if is_text(ct) => ev["body"] = json!(text),
            _ => {
                ev["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
                ev["isBase64Encoded"] = json!(true);
            }
        }
    }
    ev
}

/// Translates a function's v2 response (or a bare value) into HTTP.
pub fn translate_response(payload: &[u8]) -> Response {
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) => return message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
    };
    let structured = v.as_object().is_some_and(|o| o.contains_key("statusCode"));
    if !structured {
        // API Gateway infers: 200, JSON, the value as body.
        let body = match &v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    let status = v["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    if let Some(h) = v.get("headers").and_then(Value::as_object) {
        for (k, val) in h {
            let s = match val {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(n), Ok(hv)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(&s)) {
                headers.insert(n, hv);
            }
        }
    }
    if let Some(h) = v.get("multiValueHeaders").and_then(Value::as_object) {
        for (k, vals) in h {
            if let (Ok(n), Some(vals)) = (HeaderName::try_from(k.as_str()), vals.as_array()) {
                headers.remove(&n);
                for val in vals.iter().filter_map(Value::as_str) {
                    if let Ok(hv) = HeaderValue::from_str(val) {
                        headers.append(n.clone(), hv);
                    }
                }
            }
        }
    }
    if let Some(c) = v.get("cookies").and_then(Value::as_array) {
        for cookie in c.iter().filter_map(Value::as_str) {
            if let Ok(hv) = HeaderValue::from_str(cookie) {
                headers.append(axum::http::header::SET_COOKIE, hv);
            }
        }
    }
    let body = match v.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => {
            if v.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                match base64::engine::general_purpose::STANDARD.decode(s) {
                    Ok(b) => b,
                    Err(_) => return message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
                }
            } else {
                s.clone().into_bytes()
            }
        }
        Some(other) => other.to_string().into_bytes(),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

async fn api_route(
    State(s): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let found = s.routes.iter().find_map(|r| {
        if r.spec.method != method.as_str() && r.spec.method != "ANY" {
            return None;
        }
        r.matches(uri.path()).map(|p| (r, p))
    });
    let Some((route, params)) = found else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some(api) = s.apis.get(&route.spec.function) else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let ev = build_v2_event(
        &route.spec,
        &params,
        &method,
        &uri,
        &headers,
        &body,
        &peer.ip().to_string(),
    );
    let wait = api.timeout.min(MAX_INTEGRATION_TIMEOUT);
    match api.invoke(Bytes::from(ev.to_string()), Some(wait)).await {
        Ok(payload) => translate_response(&payload),
        Err(e) => invoke_error_response(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> RouteSpec {
        RouteSpec {
            method: "POST".into(),
            path: path.into(),
            function: "F".into(),
            event: "E".into(),
            authorizer: None,
        }
    }

    #[test]
    fn path_params_match() {
        let r = Route::new(spec("/calls/{callId}/supervision"));
        let p = r.matches("/calls/CA123/supervision").unwrap();
        assert_eq!(p["callId"], "CA123");
        assert!(r.matches("/calls/CA123").is_none());
        assert!(r.matches("/calls//supervision").is_none());
        assert!(
            Route::new(spec("/calls/live"))
                .matches("/calls/live")
                .is_some()
        );
        let g = Route::new(spec("/files/{proxy+}"));
        assert_eq!(g.matches("/files/a/b%20c").unwrap()["proxy"], "a/b c");
    }

    #[test]
    fn v2_event_shape() {
        let mut h = HeaderMap::new();
        h.insert("Content-Type", "application/octet-stream".parse().unwrap());
        h.append("X-Multi", "a".parse().unwrap());
        h.append("X-Multi", "b".parse().unwrap());
        h.insert("Cookie", "a=1; b=2".parse().unwrap());
        let uri: Uri = "/calls/CA1/supervision?x=1&x=2".parse().unwrap();
        let mut params = BTreeMap::new();
        params.insert("callId".to_string(), "CA1".to_string());
        let ev = build_v2_event(
            &spec("/calls/{callId}/supervision"),
            &params,
            &Method::POST,
            &uri,
            &h,
            &[0xff, 0x00],
            "127.0.0.1",
        );
        assert_eq!(ev["version"], "2.0");
        assert_eq!(ev["routeKey"], "POST /calls/{callId}/supervision");
        assert_eq!(ev["rawQueryString"], "x=1&x=2");
        assert_eq!(ev["queryStringParameters"]["x"], "1,2");
        assert_eq!(ev["headers"]["x-multi"], "a,b");
        assert_eq!(ev["cookies"], json!(["a=1", "b=2"]));
        assert!(ev["headers"].get("cookie").is_none());
        assert_eq!(ev["pathParameters"]["callId"], "CA1");
        assert_eq!(ev["isBase64Encoded"], true);
        assert_eq!(ev["body"], "/wA=");
        assert_eq!(ev["requestContext"]["http"]["method"], "POST");
        assert_eq!(ev["requestContext"]["stage"], "$default");
    }

    #[tokio::test]
    async fn response_translation() {
        let r = translate_response(
            br#"{"statusCode":201,"headers":{"content-type":"text/xml"},"multiValueHeaders":{"x-a":["1","2"]},"cookies":["s=1"],"body":"aGk=","isBase64Encoded":true}"#,
        );
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["content-type"], "text/xml");
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(r.headers()["set-cookie"], "s=1");
        let b = axum::body::to_bytes(r.into_body(), 100).await.unwrap();
        assert_eq!(&b[..], b"hi");
        let r = translate_response(br#"{"hello":"world"}"#);
        assert_eq!(r.status(), 200);
    }
}
