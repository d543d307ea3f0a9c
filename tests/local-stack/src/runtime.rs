//! The Lambda Runtime API (2018-06-01), one loopback server per function, and
//! the pool of real function processes polling it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// What an invocation produced.
#[derive(Debug)]
pub enum InvokeError {
    /// The function reported an error (`/response` never came; `/error` did). Body = error JSON.
    Function(Bytes),
    /// No response within the function's timeout.
    Timeout,
    /// The runtime API is shutting down.
    Unavailable,
}

struct Invocation {
    request_id: String,
    payload: Bytes,
    deadline_ms: u128,
    trace_id: String,
    reply: oneshot::Sender<Result<Bytes, InvokeError>>,
}

struct Shared {
    function_name: String,
    arn: String,
    rx: Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Bytes, InvokeError>>>>,
    init_errors: Mutex<Vec<String>>,
}

/// A function's Runtime API endpoint and invocation queue.
#[derive(Clone)]
pub struct RuntimeApi {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Invocation>,
    pub addr: SocketAddr,
    pub timeout: Duration,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

impl RuntimeApi {
    /// Binds 127.0.0.1:0 and serves the Runtime API for `function_name`.
    pub async fn start(
        function_name: &str,
        region: &str,
        timeout: Duration,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            function_name: function_name.to_string(),
            arn: format!("arn:aws:lambda:{region}:000000000000:function:{function_name}"),
            rx: Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            init_errors: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .layer(axum::extract::DefaultBodyLimit::max(20 * 1024 * 1024))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((
            Self {
                shared,
                tx,
                addr,
                timeout,
            },
            task,
        ))
    }

    pub fn function_name(&self) -> &str {
        &self.shared.function_name
    }

    /// Init errors reported by instances (`/runtime/init/error`).
    pub async fn init_errors(&self) -> Vec<String> {
        self.shared.init_errors.lock().await.clone()
    }

    /// Queues `payload` for the next free instance and waits for its result,
    /// at most `wait` (defaults to the function's timeout).
    pub async fn invoke(
        &self,
        payload: Bytes,
        wait: Option<Duration>,
    ) -> Result<Bytes, InvokeError> {
        let (reply, rx) = oneshot::channel();
        let request_id = uuid::Uuid::new_v4().to_string();
        let inv = Invocation {
            request_id: request_id.clone(),
            payload,
            deadline_ms: now_ms() + self.timeout.as_millis(),
            trace_id: format!(
                "Root=1-{:08x}-{};Sampled=0",
                now_ms() / 1000,
                &uuid::Uuid::new_v4().simple().to_string()[..24]
            ),
            reply,
        };
        self.tx
            .send(inv)
            .await
            .map_err(|_| InvokeError::Unavailable)?;
        let wait = wait.unwrap_or(self.timeout);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(InvokeError::Unavailable),
            Err(_) => {
                self.shared.pending.lock().await.remove(&request_id);
                Err(InvokeError::Timeout)
            }
        }
    }
}

async fn next(State(s): State<Arc<Shared>>) -> Response {
    loop {
        let inv = {
            let mut rx = s.rx.lock().await;
            rx.recv().await
        };
        let Some(inv) = inv else {
            return (StatusCode::GONE, "shutting down").into_response();
        };
        if inv.reply.is_closed() {
            continue; // the caller gave up before any instance took it
        }
        s.pending
            .lock()
            .await
            .insert(inv.request_id.clone(), inv.reply);
        let mut headers = HeaderMap::new();
        let mut put = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(k, v);
            }
        };
        put("lambda-runtime-aws-request-id", inv.request_id);
        put("lambda-runtime-deadline-ms", inv.deadline_ms.to_string());
        put("lambda-runtime-invoked-function-arn", s.arn.clone());
        put("lambda-runtime-trace-id", inv.trace_id);
        put("content-type", "application/json".into());
        return (StatusCode::OK, headers, inv.payload).into_response();
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "OK"})),
    )
        .into_response()
}

fn unknown(id: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({
            "errorMessage": format!("unknown or expired request id {id}"),
            "errorType": "InvalidRequestID"
        })),
    )
        .into_response()
}

async fn response(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    match s.pending.lock().await.remove(&id) {
        Some(tx) => {
            let _ = tx.send(Ok(body));
            accepted()
        }
        None => unknown(&id),
    }
}

async fn error(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    match s.pending.lock().await.remove(&id) {
        Some(tx) => {
            tracing::warn!(
                function = %s.function_name,
                "invocation error: {}",
                String::from_utf8_lossy(&body)
            );
            let _ = tx.send(Err(InvokeError::Function(body)));
            accepted()
        }
        None => unknown(&id),
    }
}

async fn init_error(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let msg = String::from_utf8_lossy(&body).to_string();
    tracing::error!(function = %s.function_name, "init error: {msg}");
    s.init_errors.lock().await.push(msg);
    accepted()
}

/// Where a function's stdout/stderr go.
#[derive(Debug, Clone)]
pub enum ChildOutput {
    Inherit,
    Null,
    /// `<dir>/<function>.log` (appended, all instances).
    Dir(PathBuf),
}

/// Spawns and keeps alive `instances` processes of `binary`, each polling `api`.
/// Aborting the returned tasks kills the processes (`kill_on_drop`).
pub fn spawn_instances(
    api: &RuntimeApi,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    instances: usize,
    output: ChildOutput,
) -> Vec<JoinHandle<()>> {
    (0..instances)
        .map(|i| {
            let mut env = env.clone();
            let name = api.function_name().to_string();
            env.insert("AWS_LAMBDA_RUNTIME_API".into(), api.addr.to_string());
            env.insert(
                "AWS_LAMBDA_LOG_STREAM_NAME".into(),
                format!("local/[$LATEST]{name}-{i}"),
            );
            let binary = binary.clone();
            let output = output.clone();
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(200);
                loop {
                    let mut cmd = tokio::process::Command::new(&binary);
                    cmd.env_clear().envs(&env).kill_on_drop(true);
                    cmd.stdin(Stdio::null());
                    match &output {
                        ChildOutput::Inherit => {}
                        ChildOutput::Null => {
                            cmd.stdout(Stdio::null()).stderr(Stdio::null());
                        }
                        ChildOutput::Dir(d) => {
                            let _ = std::fs::create_dir_all(d);
                            let f = std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(d.join(format!("{name}.log")));
                            if let Ok(f) = f {
                                if let Ok(f2) = f.try_clone() {
                                    cmd.stdout(f2);
                                }
                                cmd.stderr(f);
                            }
                        }
                    }
                    let started = std::time::Instant::now();
                    match cmd.spawn() {
                        Ok(mut child) => {
                            let status = child.wait().await;
                            tracing::warn!("{name}[{i}] exited: {status:?}; restarting");
                        }
                        Err(e) => {
                            tracing::error!("{name}[{i}]: cannot start {}: {e}", binary.display());
                        }
                    }
                    // Crash-loop backoff (not a readiness wait).
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = Duration::from_millis(200);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            })
        })
        .collect()
}
