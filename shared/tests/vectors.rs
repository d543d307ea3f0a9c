//! Cross-checks against vectors produced by Twilio's official Python library
//! (`../shared/twilio-vectors/`, beside the clone). Every vector must agree:
//! valid signatures accepted, invalid ones refused, documents equal.

mod common;

use serde_json::Value;
use shared::secret::Secret;
use shared::twilio::signature::{SignedRequest, WebhookValidator};

use common::load;

fn form_body(params: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        match v {
            Value::Array(items) => {
                for item in items {
                    ser.append_pair(k, item.as_str().expect("string value"));
                }
            }
            Value::String(s) => {
                ser.append_pair(k, s);
            }
            other => panic!("unexpected param value {other}"),
        }
    }
    ser.finish().into_bytes()
}

#[test]
fn every_signature_vector_agrees() {
    let vectors = load("signatures.json");
    assert!(vectors.len() >= 90, "expected the full vector set");
    let mut failures = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let key = v["auth_token"].as_str().expect("auth_token");
        let url = v["url"].as_str().expect("url");
        let settings = v.get("signature_settings_header").and_then(Value::as_str);
        let body = if v.get("json_body").and_then(Value::as_bool) == Some(true) {
            v["body"].as_str().expect("body").as_bytes().to_vec()
        } else {
            form_body(v["params"].as_object().expect("params"))
        };
        // With a settings header the vector's key is the shared key it names.
        let validator = match settings.and_then(|s| {
            s.split(',')
                .find_map(|p| p.trim().strip_prefix("key="))
                .map(str::to_owned)
        }) {
            Some(name) => WebhookValidator::new(Secret::new("not-the-auth-token"))
                .with_shared_key(name, Secret::new(key)),
            None => WebhookValidator::new(Secret::new(key)),
        };
        let req = SignedRequest {
            url,
            body: &body,
            signature: v["signature"].as_str(),
            settings,
        };
        let accepted = validator.validate(&req).is_ok();
        let expected = v["valid"].as_bool().expect("valid");
        if accepted != expected {
            failures.push(format!(
                "#{i} {url} expected valid={expected} note={:?}",
                v.get("note")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "disagreements:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_sha256_vector_is_refused_with_the_auth_token_alone() {
    // Without the shared key configured, a settings header naming it must fail.
    let vectors = load("signatures.json");
    let v = vectors
        .iter()
        .find(|v| v.get("signature_settings_header").is_some() && v["valid"] == true)
        .expect("a SHA-256 vector");
    let body = form_body(v["params"].as_object().expect("params"));
    let validator = WebhookValidator::new(Secret::new(v["auth_token"].as_str().expect("key")));
    let req = SignedRequest {
        url: v["url"].as_str().expect("url"),
        body: &body,
        signature: v["signature"].as_str(),
        settings: v["signature_settings_header"].as_str(),
    };
    assert!(validator.validate(&req).is_err());
}

/// Parses XML into a comparable tree: element names, attributes as a sorted
/// map, text; attribute order and self-closing spelling do not matter.
#[derive(Debug, PartialEq)]
struct Node {
    name: String,
    attrs: std::collections::BTreeMap<String, String>,
    text: String,
    children: Vec<Node>,
}

fn parse_xml(xml: &str) -> Node {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Node> = vec![Node {
        name: "#root".into(),
        attrs: Default::default(),
        text: String::new(),
        children: vec![],
    }];
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => stack.push(node_from(&e)),
            Event::Empty(e) => {
                let n = node_from(&e);
                stack.last_mut().expect("parent").children.push(n);
            }
            Event::End(_) => {
                let n = stack.pop().expect("open element");
                stack.last_mut().expect("parent").children.push(n);
            }
            Event::Text(t) => {
                let text = t.decode().expect("utf-8").into_owned();
                let text = quick_xml::escape::unescape(&text)
                    .expect("entities")
                    .into_owned();
                stack.last_mut().expect("parent").text.push_str(&text);
            }
            Event::GeneralRef(r) => {
                let name = r.decode().expect("utf-8").into_owned();
                let ch =
                    quick_xml::escape::resolve_predefined_entity(&name).expect("predefined entity");
                stack.last_mut().expect("parent").text.push_str(ch);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut root = stack.pop().expect("root");
    assert_eq!(root.children.len(), 1, "one document element");
    root.children.remove(0)
}

fn node_from(e: &quick_xml::events::BytesStart<'_>) -> Node {
    let attrs = e
        .attributes()
        .map(|a| {
            let a = a.expect("attribute");
            (
                String::from_utf8(a.key.as_ref().to_vec()).expect("utf-8"),
                a.unescape_value().expect("value").into_owned(),
            )
        })
        .collect();
    Node {
        name: String::from_utf8(e.name().as_ref().to_vec()).expect("utf-8"),
        attrs,
        text: String::new(),
        children: vec![],
    }
}

fn vector_xml(name: &str) -> String {
    load("twiml.json")
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("vector {name:?}"))["xml"]
        .as_str()
        .expect("xml")
        .to_owned()
}

#[test]
fn customer_conference_twiml_equals_the_official_vector() {
    use shared::twilio::twiml::*;
    let base = "https://cc.example.com";
    let ours = VoiceResponse::new()
        .dial(Dial::conference(
            Conference::new("call-CAa9f5c02661449771d833424d61fcd254")
                .beep(false)
                .end_conference_on_exit(true)
                .participant_label("customer")
                .record(ConferenceRecord::RecordFromStart)
                .recording_status_callback(
                    format!("{base}/twilio/recordings/status"),
                    &[RecordingEvent::Completed, RecordingEvent::Absent],
                )
                .start_conference_on_enter(false)
                .status_callback(
                    format!("{base}/twilio/conference/status"),
                    &ConferenceEvent::TRACKED,
                )
                .wait_url(format!("{base}/twilio/hold-music")),
        ))
        .to_xml();
    let official = vector_xml("customer joins agent conference");
    assert_eq!(parse_xml(&ours), parse_xml(&official));
    // Attribute order is Twilio's too, so even the bytes agree.
    assert_eq!(ours, official);
}

#[test]
fn escaping_equals_the_official_vector() {
    use shared::twilio::twiml::*;
    let ours = VoiceResponse::new()
        .say(Say::new("お電話ありがとうございます。<担当者> & 接続します").language("ja-JP"))
        .to_xml();
    let official = vector_xml("escaping of text");
    assert_eq!(parse_xml(&ours), parse_xml(&official));
    assert_eq!(ours, official);
}
