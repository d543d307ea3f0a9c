//! The template, each function's own route table and the local gateway agree.

use std::collections::{BTreeMap, BTreeSet};

use e2e::template;

fn crate_routes() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("voice", voice::ROUTES),
        ("token", token::ROUTES),
        ("supervise-call", supervise_call::ROUTES),
        ("recording-offload", recording_offload::ROUTES),
    ])
}

#[test]
fn each_function_serves_exactly_the_routes_the_template_sends_it() {
    let t = template();
    let functions = t.functions().expect("functions");
    let binaries: BTreeSet<&str> = functions.iter().map(|f| f.binary.as_str()).collect();
    let crates = crate_routes();
    assert_eq!(
        binaries,
        crates.keys().copied().collect(),
        "template functions and function crates differ"
    );
    for f in &functions {
        let declared: BTreeSet<String> = f.routes.iter().map(|r| r.route_key()).collect();
        let served: BTreeSet<String> = crates[f.binary.as_str()]
            .iter()
            .map(|r| (*r).to_owned())
            .collect();
        assert_eq!(declared, served, "routes of {}", f.logical_id);
    }
}

#[test]
fn twilio_routes_have_no_authorizer_and_the_rest_need_a_jwt() {
    for route in template().routes().expect("routes") {
        let twilio = route.path.starts_with("/twilio/");
        assert_eq!(
            route.authorizer.is_none(),
            twilio,
            "{}: Twilio routes are open (signature-checked), agent routes need the JWT authorizer",
            route.route_key()
        );
    }
}

#[tokio::test]
async fn the_local_gateway_serves_exactly_the_template_routes() {
    let stack = e2e::Stack::start("routes").await;
    let served: BTreeSet<String> = stack.gateway.route_keys().into_iter().collect();
    let declared: BTreeSet<String> = template()
        .routes()
        .expect("routes")
        .iter()
        .map(|r| r.route_key())
        .collect();
    assert_eq!(served, declared);
}
