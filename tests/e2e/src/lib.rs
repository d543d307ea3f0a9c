//! The end-to-end harness: one isolated copy of the whole system per test.
//!
//! Each [`Stack`] provisions its own table, bucket and queues (unique name
//! prefix) in the emulators (`make test`'s, or started once for a plain
//! `cargo test`: see `local_stack::testing`), starts its own
//! Twilio simulator, and serves the real function binaries through the local
//! API gateway and Lambda Runtime API, exactly as `make dev` does. Tests then
//! talk HTTP over loopback, like Twilio and browsers would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use local_stack::runtime::ChildOutput;
use local_stack::stack::LOCAL_TWILIO;
use local_stack::{Gateway, GatewayConfig, LocalEndpoints, Provisioned, Template};
use shared::twilio::signature::{Algorithm, sign};
use twilio_sim::{SimConfig, SimHandle, Simulator};

/// The local value of one of the fixed Twilio test settings.
pub fn local_twilio(name: &str) -> &'static str {
    LOCAL_TWILIO
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("{name} is not a local Twilio setting"))
}

/// The form Twilio POSTs to the voice URL when `from` calls `to`.
pub fn inbound_call_params(call_sid: &str, from: &str, to: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", local_twilio("TWILIO_ACCOUNT_SID")),
        ("CallSid", call_sid),
        ("From", from),
        ("To", to),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

pub fn workspace() -> PathBuf {
    local_stack::workspace_dir()
}

pub fn template() -> Template {
    Template::load(Template::workspace_path()).expect("template.yaml parses")
}

/// Where the function binaries were built (`make test` builds them first).
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var("CC_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/debug"));
    for bin in ["voice", "token", "supervise-call", "recording-offload"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: build the functions first (`cargo build --workspace --bins`, which `make test` does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// One isolated copy of the system.
pub struct Stack {
    pub gateway: Gateway,
    pub sim: SimHandle,
    pub resources: Provisioned,
    pub endpoints: LocalEndpoints,
    pub http: reqwest::Client,
}

impl Stack {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, None).await
    }

    /// Like [`Stack::start`], with the functions told that Twilio reaches them on
    /// `public_base_url` (as behind API Gateway, where it is not the gateway's own address).
    pub async fn start_with(name: &str, public_base_url: Option<&str>) -> Self {
        let extra: Vec<(&str, String)> = public_base_url
            .map(|url| ("PUBLIC_BASE_URL", url.to_owned()))
            .into_iter()
            .collect();
        Self::start_with_env(name, &extra).await
    }

    /// Like [`Stack::start`], with these variables given to every function
    /// (say, a short `MAX_QUEUE_WAIT_SECONDS`), as an operator's template
    /// parameters would.
    pub async fn start_with_env(name: &str, extra_env: &[(&str, String)]) -> Self {
        let (endpoints, resources) =
            local_stack::testing::fresh_resources(&format!("e2e-{name}")).await;
        let template = template();
        let sim = Simulator::start(SimConfig {
            account_sid: shared::ids::AccountSid::parse(local_twilio("TWILIO_ACCOUNT_SID"))
                .expect("valid local account SID"),
            auth_token: shared::secret::Secret::new(local_twilio("TWILIO_AUTH_TOKEN")),
            api_key_sid: Some(
                shared::ids::ApiKeySid::parse(local_twilio("TWILIO_API_KEY_SID"))
                    .expect("valid local key SID"),
            ),
            api_key_secret: Some(shared::secret::Secret::new(local_twilio(
                "TWILIO_API_KEY_SECRET",
            ))),
            ..SimConfig::default()
        })
        .await
        .expect("start the Twilio simulator");

        let mut config = GatewayConfig::new(template, bin_dir());
        let mut env: BTreeMap<String, String> = local_stack::testing::environment()
            .await
            .iter()
            .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("AUTH_") || *k == "RUST_LOG")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in LOCAL_TWILIO {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env.insert("TWILIO_API_BASE_URL".into(), sim.base_url());
        for (k, v) in extra_env {
            env.insert((*k).to_owned(), v.clone());
        }
        config.env = env;
        config.bindings = resources.bindings(&endpoints.region);
        config.sqs = Some(endpoints.clone());
        config.instances = 2;
        config.output = if std::env::var("E2E_FUNCTION_LOGS").is_ok() {
            ChildOutput::Inherit
        } else {
            ChildOutput::Null
        };
        let gateway = Gateway::start(config)
            .await
            .expect("start the local gateway");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Self {
            gateway,
            sim,
            resources,
            endpoints,
            http,
        }
    }

    /// The public URL of one of our routes.
    pub fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}{path_and_query}",
            self.gateway.url().trim_end_matches('/')
        )
    }

    /// `X-Twilio-Signature` for a form POST to `path_and_query`, signed as Twilio would.
    pub fn twilio_signature(&self, path_and_query: &str, params: &[(String, String)]) -> String {
        sign(
            Algorithm::HmacSha1,
            local_twilio("TWILIO_AUTH_TOKEN").as_bytes(),
            &self.url(path_and_query),
            params,
        )
    }

    /// POSTs a Twilio-style form to one of our routes with the given signature header.
    pub async fn post_twilio(
        &self,
        path_and_query: &str,
        params: &[(String, String)],
        signature: Option<&str>,
    ) -> reqwest::Response {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut req = self
            .http
            .post(self.url(path_and_query))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("x-twilio-signature", sig);
        }
        req.send().await.expect("request reaches the local gateway")
    }

    /// How many items the state table holds: "nothing written" means this did not move.
    pub async fn state_item_count(&self) -> i32 {
        self.endpoints
            .dynamodb_client()
            .scan()
            .table_name(&self.resources.table_name)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .send()
            .await
            .expect("scan the state table")
            .count()
    }
}

/// How long the helpers below wait for the system to reach a state.
pub const WAIT: Duration = Duration::from_secs(30);

/// What tests and the demo do as users and operators: sign in, call the
/// API, read the state table, wait for a call or an agent to get somewhere.
impl Stack {
    /// The state table, as the functions see it.
    pub fn table(&self) -> shared::store::Table {
        shared::store::Table::new(
            self.endpoints.dynamodb_client(),
            self.resources.table_name.clone(),
        )
    }

    /// Calls one of our JWT routes; `(0, {"error": ...})` when the request
    /// did not get an answer at all.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(serde_json::Value::Null))
            }
            Err(e) => (0, serde_json::json!({ "error": e.to_string() })),
        }
    }

    /// Signs `email` in to the local Cognito pool in `groups`: their access
    /// token, and the Twilio identity the system gives them.
    pub async fn sign_in(
        &self,
        email: &str,
        groups: &[&str],
    ) -> (String, shared::ids::ClientIdentity) {
        let pool = local_stack::users::PoolRef::from_env(local_stack::testing::environment().await)
            .expect("the local user pool");
        let token = local_stack::users::mint_token(&pool, email, groups)
            .await
            .expect("sign in")
            .access_token;
        let (status, me) = self
            .api(reqwest::Method::GET, "/agents/me", &token, None)
            .await;
        assert_eq!(status, 200, "GET /agents/me: {me}");
        let identity = shared::ids::ClientIdentity::parse(me["identity"].as_str().unwrap_or(""))
            .expect("a valid identity");
        (token, identity)
    }

    /// Polls the table until `pred` holds for the call, within [`WAIT`].
    pub async fn wait_call(
        &self,
        id: &shared::ids::CallSid,
        what: &str,
        pred: impl Fn(&shared::store::calls::Call) -> bool,
    ) -> shared::store::calls::Call {
        let t = self.table();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let call = shared::store::calls::get(&t, id).await.expect("read call");
            if let Some(c) = call.filter(&pred) {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for call {id}: {what}; now {:?}",
                shared::store::calls::get(&t, id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the table until the agent has `presence`, within [`WAIT`].
    pub async fn wait_agent(
        &self,
        who: &shared::ids::ClientIdentity,
        presence: shared::store::agents::Presence,
    ) -> shared::store::agents::Agent {
        let t = self.table();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let agent = shared::store::agents::get(&t, who)
                .await
                .expect("read agent");
            if let Some(a) = agent.filter(|a| a.presence == presence) {
                return a;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {who} to be {presence:?}; now {:?}",
                shared::store::agents::get(&t, who).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Nothing we sent Twilio broke its spec, and every webhook of ours but
    /// the recording callbacks (recording-offload's tests check those) got
    /// a 2xx.
    pub fn assert_twilio_clean(&self) {
        let rejected = self.sim.rejected_requests();
        assert!(
            rejected.is_empty(),
            "requests Twilio would refuse: {rejected:#?}"
        );
        let failed: Vec<_> = self
            .sim
            .callbacks()
            .into_iter()
            .filter(|c| !c.url.contains("/twilio/recordings/"))
            .filter(|c| !c.status.is_some_and(|s| (200..300).contains(&s)))
            .collect();
        assert!(failed.is_empty(), "webhooks not answered 2xx: {failed:#?}");
    }
}
