//! For tests across the workspace: the emulators, once per test process, and
//! fresh copies of the template's resources.
//!
//! Under `make test` the emulators are already running and their endpoints are
//! in the environment; a plain `cargo test` starts them once (in memory, free
//! ports, state under `.local/test-stack`) and later runs reuse them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::sync::OnceCell;

use crate::provision::{LocalEndpoints, Provisioned, provision};
use crate::stack::{self, UpOptions};
use crate::template::Template;

static ENV: OnceCell<BTreeMap<String, String>> = OnceCell::const_new();

/// The emulators' environment (`AWS_ENDPOINT_URL_*`, credentials, the user
/// pool's `AUTH_*`): the process environment when `make test` exported it,
/// else that of emulators started for this run.
pub async fn environment() -> &'static BTreeMap<String, String> {
    ENV.get_or_init(|| async {
        if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_ok() {
            return std::env::vars().collect();
        }
        let ws = crate::workspace_dir();
        let mut o = UpOptions::defaults(&ws);
        o.state_dir = ws.join(".local/test-stack");
        (o.dynamodb_port, o.s3_port, o.sqs_port, o.gateway_port) = (0, 0, 0, 0);
        o.persist = false;
        o.prefix = "base-".into();
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| ws.join("target"));
        o.cc_local = target.join("debug/cc-local");
        // Without the bridge binary DynamoDB Local cannot sit in a netns.
        o.netns = o.netns && o.cc_local.is_file();
        stack::up(&o, &template())
            .await
            .expect("start the local emulators (run scripts/install-tools.sh first)")
            .env
    })
    .await
}

/// The emulators' endpoints.
pub async fn endpoints() -> LocalEndpoints {
    let env = environment().await;
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing from the local stack's environment"))
    };
    LocalEndpoints {
        dynamodb: get("AWS_ENDPOINT_URL_DYNAMODB"),
        s3: get("AWS_ENDPOINT_URL_S3"),
        sqs: get("AWS_ENDPOINT_URL_SQS"),
        region: env
            .get("AWS_REGION")
            .cloned()
            .unwrap_or_else(|| crate::provision::LOCAL_REGION.into()),
        access_key: env
            .get("AWS_ACCESS_KEY_ID")
            .cloned()
            .unwrap_or_else(|| crate::provision::LOCAL_ACCESS_KEY.into()),
        secret_key: env
            .get("AWS_SECRET_ACCESS_KEY")
            .cloned()
            .unwrap_or_else(|| crate::provision::LOCAL_SECRET_KEY.into()),
    }
}

pub fn template() -> Template {
    Template::load(Template::workspace_path()).expect("template.yaml parses")
}

/// A fresh copy of every resource the template declares (table, bucket,
/// queues), named `<name>-<random>-<LogicalId>`, so tests never share state.
pub async fn fresh_resources(name: &str) -> (LocalEndpoints, Provisioned) {
    let endpoints = endpoints().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("{name}-{}-", &id[..10]);
    let provisioned = provision(&template(), &endpoints, &prefix)
        .await
        .expect("provision the template's resources");
    (endpoints, provisioned)
}
