//! `cc-local`: run the contact center on loopback. See docs/local-stack.md.
//!
//! ```text
//! cc-local up       [--state-dir D] [--ports auto] [--prefix P] [--in-memory]
//! cc-local down     [--state-dir D]
//! cc-local gateway  [--state-dir D] [--port N] [--bin-dir D] [--instances N]
//!                   [--functions A,B] [--schedules] [--logs-dir D]
//! cc-local bridge   --listen tcp:HOST:PORT|unix:PATH --connect tcp:HOST:PORT|unix:PATH
//! cc-local routes
//! cc-local mint-token --user NAME --group agents|supervisors[,..] [--id-token] [--state-dir D]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use local_stack::bridge::{Endpoint, Listener};
use local_stack::runtime::ChildOutput;
use local_stack::stack::{self, UpOptions};
use local_stack::{Gateway, GatewayConfig, LocalEndpoints, Template, provision};

struct Args {
    flags: BTreeMap<String, String>,
}

impl Args {
    fn parse(rest: &[String]) -> anyhow::Result<Self> {
        let mut flags = BTreeMap::new();
        let mut it = rest.iter().peekable();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                bail!("unexpected argument {a}");
            };
            if let Some((k, v)) = name.split_once('=') {
                flags.insert(k.to_string(), v.to_string());
            } else if it.peek().is_some_and(|n| !n.starts_with("--")) {
                flags.insert(name.to_string(), it.next().cloned().unwrap_or_default());
            } else {
                flags.insert(name.to_string(), String::new());
            }
        }
        Ok(Self { flags })
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.flags.get(k).map(String::as_str)
    }
    fn has(&self, k: &str) -> bool {
        self.flags.contains_key(k)
    }
}

fn workspace() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    if cwd.join("template.yaml").is_file() {
        cwd
    } else {
        local_stack::workspace_dir()
    }
}

fn state_dir(a: &Args, ws: &std::path::Path) -> PathBuf {
    a.get("state-dir")
        .map(PathBuf::from)
        .or_else(|| std::env::var("CC_STATE_DIR").ok().map(PathBuf::from))
        .unwrap_or_else(|| ws.join(".local"))
}

fn template(a: &Args, ws: &std::path::Path) -> anyhow::Result<Template> {
    let path = a
        .get("template")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("template.yaml"));
    Ok(Template::load(&path)?)
}

async fn cmd_up(a: &Args) -> anyhow::Result<()> {
    let ws = workspace();
    let mut o = UpOptions::defaults(&ws);
    o.state_dir = state_dir(a, &ws);
    if a.get("ports") == Some("auto") {
        o.dynamodb_port = 0;
        o.s3_port = 0;
        o.sqs_port = 0;
        o.gateway_port = 0;
    }
    if let Some(p) = a.get("prefix") {
        o.prefix = p.to_string();
    }
    if a.has("in-memory") {
        o.persist = false;
    }
    if a.has("no-netns") {
        o.netns = false;
    }
    let t = template(a, &ws)?;
    let s = stack::up(&o, &t).await.context("cc-local up")?;
    println!("local stack is up (state: {})", o.state_dir.display());
    println!("  DynamoDB Local  {}", s.endpoints.dynamodb);
    println!("  S3 (s3s-fs)     {}", s.endpoints.s3);
    println!("  SQS+Cognito (moto) {}", s.endpoints.sqs);
    println!(
        "  table {}  bucket {}",
        s.provisioned.table_name, s.provisioned.bucket
    );
    println!("  queue {}", s.provisioned.queue_url);
    println!(
        "  env file: {}  (. {} )",
        s.env_file.display(),
        s.env_file.display()
    );
    Ok(())
}

fn cmd_down(a: &Args) -> anyhow::Result<()> {
    let ws = workspace();
    let dir = state_dir(a, &ws);
    let stopped = stack::down(&dir);
    println!(
        "stopped: {}",
        if stopped.is_empty() {
            "nothing".to_string()
        } else {
            stopped.join(", ")
        }
    );
    Ok(())
}

async fn cmd_gateway(a: &Args) -> anyhow::Result<()> {
    let ws = workspace();
    let dir = state_dir(a, &ws);
    let t = template(a, &ws)?;
    let env_file = dir.join("env");
    let mut env = stack::read_env_file(&env_file)
        .with_context(|| format!("read {} (run `cc-local up` first)", env_file.display()))?;
    // Values exported in this shell win (e.g. TWILIO_API_BASE_URL=https://api.twilio.com).
    for (k, v) in env.iter_mut() {
        if !k.starts_with("AWS_") && !k.starts_with("CC_") {
            if let Ok(x) = std::env::var(k) {
                *v = x;
            }
        }
    }
    let port: u16 = match a.get("port") {
        Some(p) => p.parse().context("--port")?,
        None => env
            .get("CC_GATEWAY_PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000),
    };
    let endpoints = LocalEndpoints {
        dynamodb: env
            .get("AWS_ENDPOINT_URL_DYNAMODB")
            .cloned()
            .unwrap_or_default(),
        s3: env.get("AWS_ENDPOINT_URL_S3").cloned().unwrap_or_default(),
        sqs: env.get("AWS_ENDPOINT_URL_SQS").cloned().unwrap_or_default(),
        region: env
            .get("AWS_REGION")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into()),
        access_key: env.get("AWS_ACCESS_KEY_ID").cloned().unwrap_or_default(),
        secret_key: env
            .get("AWS_SECRET_ACCESS_KEY")
            .cloned()
            .unwrap_or_default(),
    };
    let prefix = env.get("CC_PREFIX").cloned().unwrap_or_default();
    // Idempotent: returns the names and ARNs the template's references resolve to.
    let provisioned = provision(&t, &endpoints, &prefix).await?;
    let mut c = GatewayConfig::new(
        t.clone(),
        a.get("bin-dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| ws.join("target/debug")),
    );
    c.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if !env.contains_key("PUBLIC_BASE_URL") {
        env.insert("PUBLIC_BASE_URL".into(), format!("http://127.0.0.1:{port}"));
    }
    c.env = env.clone();
    c.bindings = provisioned.bindings(&endpoints.region);
    c.sqs = Some(endpoints);
    c.schedules = a.has("schedules");
    if let Some(n) = a.get("instances") {
        c.instances = n.parse().context("--instances")?;
    }
    if let Some(f) = a.get("functions") {
        c.functions = Some(f.split(',').map(str::to_string).collect());
    }
    if let Some(d) = a.get("logs-dir") {
        c.output = ChildOutput::Dir(d.into());
    }
    let gw = Gateway::start(c).await?;
    let base = gw.url();
    println!(
        "gateway listening on {base}  (functions: {} instance(s) each)",
        a.get("instances").unwrap_or("4")
    );
    for rk in gw.route_keys() {
        let (m, p) = rk.split_once(' ').unwrap_or_default();
        println!("  {m:<6} {base}{p}");
    }
    for f in t.functions()? {
        if !f.schedule_events.is_empty() {
            println!(
                "  POST   {base}/_local/schedule/{}   (fire its schedule now)",
                f.logical_id
            );
        }
    }
    println!("  POST   {base}/_local/invoke/<FunctionLogicalId>   (raw event)");
    if let Some(tw) = env.get("TWILIO_API_BASE_URL") {
        println!("Twilio REST base: {tw}");
    }
    println!("Ctrl-C to stop.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {},
    }
    // Dropping the gateway kills the function processes.
    drop(gw);
    Ok(())
}

async fn cmd_bridge(a: &Args) -> anyhow::Result<()> {
    let listen: Endpoint = a
        .get("listen")
        .context("--listen")?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let connect: Endpoint = a
        .get("connect")
        .context("--connect")?
        .parse()
        .map_err(anyhow::Error::msg)?;
    if let Endpoint::Tcp(addr) = &listen {
        let ip: std::net::SocketAddr = addr.parse().context("--listen tcp address")?;
        if !ip.ip().is_loopback() {
            bail!("the bridge listens on loopback only, not {ip}");
        }
    }
    let l = Listener::bind(&listen).await?;
    tokio::select! {
        r = l.serve(connect) => r?,
        _ = tokio::signal::ctrl_c() => {},
        _ = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => { s.recv().await; }
                Err(_) => std::future::pending::<()>().await,
            }
        } => {},
    }
    Ok(())
}

fn cmd_routes(a: &Args) -> anyhow::Result<()> {
    let ws = workspace();
    for r in template(a, &ws)?.routes()? {
        println!(
            "{:<6} {:<34} -> {} ({})",
            r.method,
            r.path,
            r.function,
            r.authorizer.as_deref().unwrap_or("no authorizer")
        );
    }
    Ok(())
}

/// Prints a Cognito token (access token, or `--id-token`) of the local user
/// pool for `--user` in `--group`s on stdout; details on stderr. See docs/auth.md.
async fn cmd_mint_token(a: &Args) -> anyhow::Result<()> {
    let ws = workspace();
    let env_file = state_dir(a, &ws).join("env");
    let env = stack::read_env_file(&env_file)
        .with_context(|| format!("read {} (run `cc-local up` first)", env_file.display()))?;
    let pool = local_stack::users::PoolRef::from_env(&env).map_err(anyhow::Error::msg)?;
    let user = a
        .get("user")
        .filter(|u| !u.is_empty())
        .context("--user NAME")?;
    let groups: Vec<&str> = a
        .get("group")
        .unwrap_or("agents")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    let t = local_stack::users::mint_token(&pool, user, &groups)
        .await
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "user {} (sub {}) in [{}]; valid {} s",
        t.username,
        t.subject,
        groups.join(", "),
        t.expires_in
    );
    println!(
        "{}",
        if a.has("id-token") {
            t.id_token
        } else {
            t.access_token
        }
    );
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        bail!(
            "usage: cc-local up|down|gateway|bridge|routes|mint-token [--options]; see docs/local-stack.md"
        );
    };
    let a = Args::parse(&argv[1..])?;
    match cmd.as_str() {
        "up" => cmd_up(&a).await,
        "down" => cmd_down(&a),
        "gateway" => cmd_gateway(&a).await,
        "bridge" => cmd_bridge(&a).await,
        "routes" => cmd_routes(&a),
        "mint-token" => cmd_mint_token(&a).await,
        other => bail!("unknown command {other}"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cc-local: {e:#}");
            ExitCode::FAILURE
        }
    }
}
