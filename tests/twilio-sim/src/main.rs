//! `twilio-sim`: runs the Twilio simulator on loopback until interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use shared::ids::{AccountSid, ApiKeySid};
use shared::secret::Secret;
use twilio_sim::{
    DEFAULT_ACCOUNT_SID, DEFAULT_API_KEY_SECRET, DEFAULT_API_KEY_SID, DEFAULT_AUTH_TOKEN,
    DEFAULT_MEDIA_PORT, DEFAULT_PORT, SimConfig, Simulator,
};

const USAGE: &str = "usage: twilio-sim [--port N] [--media-port N] [--account-sid AC…] \
[--auth-token T] [--api-key-sid SK…] [--api-key-secret S] [--voice-url URL] [--spec PATH] \
[--max-concurrent N]

Secrets may also come from TWILIO_SIM_AUTH_TOKEN and TWILIO_SIM_API_KEY_SECRET.
The spec defaults to $TWILIO_OPENAPI_SPEC, else the npm cache path.";

fn parse_args() -> Result<SimConfig, String> {
    let mut config = SimConfig {
        port: DEFAULT_PORT,
        media_port: DEFAULT_MEDIA_PORT,
        ..SimConfig::default()
    };
    let mut account = DEFAULT_ACCOUNT_SID.to_owned();
    let mut token =
        std::env::var("TWILIO_SIM_AUTH_TOKEN").unwrap_or_else(|_| DEFAULT_AUTH_TOKEN.to_owned());
    let mut key_sid = DEFAULT_API_KEY_SID.to_owned();
    let mut key_secret = std::env::var("TWILIO_SIM_API_KEY_SECRET")
        .unwrap_or_else(|_| DEFAULT_API_KEY_SECRET.to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => config.port = value.parse().map_err(|_| "--port: not a port".to_owned())?,
            "--media-port" => {
                config.media_port = value
                    .parse()
                    .map_err(|_| "--media-port: not a port".to_owned())?
            }
            "--account-sid" => account = value,
            "--auth-token" => token = value,
            "--api-key-sid" => key_sid = value,
            "--api-key-secret" => key_secret = value,
            "--voice-url" => config.voice_url = Some(value),
            "--spec" => config.spec_path = Some(PathBuf::from(value)),
            "--max-concurrent" => {
                config.max_concurrent_requests = value
                    .parse()
                    .map_err(|_| "--max-concurrent: not a number".to_owned())?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    config.account_sid = AccountSid::parse(&account).map_err(|e| e.to_string())?;
    config.auth_token = Secret::new(token);
    config.api_key_sid = Some(ApiKeySid::parse(&key_sid).map_err(|e| e.to_string())?);
    config.api_key_secret = Some(Secret::new(key_secret));
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr; stdout carries only the line with the addresses.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("twilio-sim: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let sim = match Simulator::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("twilio-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "twilio-sim: API {} media {} account {}",
        sim.base_url(),
        sim.media_base_url(),
        sim.config().account_sid
    );
    tokio::select! {
        _ = sim.serve_forever() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
