//! Test helpers: a simulator on loopback, an application stand-in that checks
//! every webhook's signature with the project's validator, and a REST client.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::any;
use shared::secret::Secret;
use shared::twilio::signature::{SIGNATURE_HEADER, SignedRequest, WebhookValidator};
use twilio_sim::{DEFAULT_AUTH_TOKEN, SimConfig, SimHandle, Simulator};

pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub params: Vec<(String, String)>,
    pub signature_valid: bool,
}

impl Received {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct AppState {
    base: String,
    validator: WebhookValidator,
    log: Arc<Mutex<Vec<Received>>>,
    voice_twiml: Arc<Mutex<String>>,
}

/// The application under test, reduced to: answer TwiML on `/voice…`, accept
/// everything else, check every signature.
pub struct App {
    pub base: String,
    log: Arc<Mutex<Vec<Received>>>,
    voice_twiml: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(s): State<AppState>, uri: Uri, headers: HeaderMap, body: Bytes) -> String {
    let path_q = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let url = format!("{}{}", s.base, path_q);
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let valid = s
        .validator
        .validate(&SignedRequest {
            url: &url,
            body: &body,
            signature,
            settings: None,
        })
        .is_ok();
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    s.log.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        params,
        signature_valid: valid,
    });
    if uri.path().starts_with("/voice") {
        s.voice_twiml.lock().unwrap().clone()
    } else {
        "<Response/>".to_owned()
    }
}

impl App {
    pub async fn start() -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let voice_twiml = Arc::new(Mutex::new("<Response><Hangup/></Response>".to_owned()));
        let state = AppState {
            base: base.clone(),
            validator: WebhookValidator::new(Secret::new(DEFAULT_AUTH_TOKEN)),
            log: Arc::clone(&log),
            voice_twiml: Arc::clone(&voice_twiml),
        };
        let router = Router::new().fallback(any(handle)).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        App {
            base,
            log,
            voice_twiml,
            task,
        }
    }

    pub fn set_voice_twiml(&self, twiml: &str) {
        *self.voice_twiml.lock().unwrap() = twiml.to_owned();
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

pub async fn start_with(app: Option<&App>, tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig {
        voice_url: app.map(|a| format!("{}/voice/inbound", a.base)),
        ..SimConfig::default()
    };
    tweak(&mut config);
    Simulator::start(config).await.expect("simulator starts")
}

pub async fn start(app: Option<&App>) -> SimHandle {
    start_with(app, |_| {}).await
}

/// A REST client authenticating with the account SID and auth token.
pub struct Rest {
    pub client: reqwest::Client,
    pub base: String,
    pub account: String,
    pub user: String,
    pub pass: String,
}

impl Rest {
    pub fn new(sim: &SimHandle) -> Rest {
        Rest {
            client: reqwest::Client::new(),
            base: sim.base_url(),
            account: sim.config().account_sid.to_string(),
            user: sim.config().account_sid.to_string(),
            pass: sim.config().auth_token.expose().to_owned(),
        }
    }

    pub fn url(&self, tail: &str) -> String {
        format!("{}/2010-04-01/Accounts/{}{}", self.base, self.account, tail)
    }

    pub async fn get(&self, tail: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(self.url(tail))
            .basic_auth(&self.user, Some(&self.pass))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// GETs a `*_page_uri` (a path with query) as Twilio gives it.
    pub async fn get_uri(&self, uri: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}{}", self.base, uri))
            .basic_auth(&self.user, Some(&self.pass))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn post(&self, tail: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(tail))
            .basic_auth(&self.user, Some(&self.pass))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn delete(&self, tail: &str) -> u16 {
        self.client
            .delete(self.url(tail))
            .basic_auth(&self.user, Some(&self.pass))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}
