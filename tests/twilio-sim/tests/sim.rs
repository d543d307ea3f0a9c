//! End-to-end tests of the simulator over loopback HTTP. One binary.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use shared::ids::CallSid;
use time::macros::datetime;
use twilio_sim::{LegBehavior, LegOutcome, SeedRecordings};

const CA: &str = "CA0123456789abcdef0123456789abcdef";

fn sid(v: &Value) -> CallSid {
    CallSid::parse(v["call_sid"].as_str().expect("call_sid")).expect("valid CallSid")
}

fn conference_twiml(app: &App, name: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Say>Please hold</Say>
  <Dial>
    <Conference startConferenceOnEnter="false" endConferenceOnExit="true" beep="false"
      participantLabel="customer" waitUrl="{b}/hold-music" record="record-from-start"
      recordingStatusCallback="{b}/recordings/status" recordingStatusCallbackEvent="in-progress completed"
      statusCallback="{b}/conference/status"
      statusCallbackEvent="start end join leave mute hold modify">{name}</Conference>
  </Dial>
</Response>"#,
        b = app.base
    )
}

// ---------------------------------------------------------------- spec

#[tokio::test]
async fn every_endpoint_is_held_to_the_spec() {
    let app = App::start().await;
    app.set_voice_twiml(&conference_twiml(&app, "spec-room"));
    let sim = start(Some(&app)).await;
    let rest = Rest::new(&sim);
    let customer = sim
        .place_inbound_call("+15551230001", "+15559870000")
        .await
        .unwrap();
    let conf = sim
        .conference("spec-room")
        .expect("conference")
        .sid
        .to_string();
    let pc = format!("/Conferences/{conf}/Participants");
    let agent_form = [
        ("From", "+15559870000"),
        ("To", "client:alice"),
        ("Label", "agent"),
        ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "answered"),
    ];

    // Participants: create.
    let (s, agent) = rest.post(&format!("{pc}.json"), &agent_form).await;
    assert_eq!(s, 201, "{agent}");
    let agent_sid = sid(&agent);
    sim.wait_for_call_status(&agent_sid, "in-progress", WAIT)
        .await
        .unwrap();
    let (s, e) = rest
        .post(
            &format!("{pc}.json"),
            &[
                ("From", "+1555"),
                ("To", "client:bob"),
                ("CallSidToCoah", CA),
            ],
        )
        .await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)), "{e}");
    assert!(e["message"].as_str().unwrap().contains("CallSidToCoah"));
    let (s, _) = rest
        .post(
            &format!("{pc}.json"),
            &[
                ("From", "+1555"),
                ("To", "client:bob"),
                ("StatusCallbackMethod", "PUT"),
            ],
        )
        .await;
    assert_eq!(s, 400, "bad enum");
    let (s, _) = rest
        .post(
            &format!("{pc}.json"),
            &[("From", "+1555"), ("To", "client:bob"), ("Muted", "yes")],
        )
        .await;
    assert_eq!(s, 400, "bad boolean");

    // Participants: update, by CallSid and by label.
    let p = format!("{pc}/{agent_sid}.json");
    let (s, v) = rest.post(&p, &[("Muted", "true")]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["muted"], true);
    let (s, v) = rest
        .post(&format!("{pc}/agent.json"), &[("Muted", "false")])
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, e) = rest.post(&p, &[("CallSidToCoah", CA)]).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)));
    let (s, _) = rest.post(&p, &[("HoldMethod", "PUT")]).await;
    assert_eq!(s, 400);
    let (s, _) = rest.post(&p, &[("HoldUrl", "not a url")]).await;
    assert_eq!(s, 400);

    // Participants: fetch and list.
    assert_eq!(rest.get(&p).await.0, 200);
    let (s, v) = rest.get(&format!("{pc}.json?Muted=false")).await;
    assert_eq!(s, 200);
    assert!(v["participants"].as_array().unwrap().len() >= 2);
    assert_eq!(rest.get(&format!("{pc}.json?Mutd=false")).await.0, 400);
    assert_eq!(rest.get(&format!("{pc}.json?Muted=maybe")).await.0, 400);

    // Conferences: list, fetch, update.
    let (s, v) = rest
        .get("/Conferences.json?FriendlyName=spec-room&Status=in-progress")
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["conferences"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(rest.get("/Conferences.json?Status=ringing").await.0, 400);
    assert_eq!(rest.get("/Conferences.json?FriendlyNam=x").await.0, 400);
    let (s, v) = rest.get(&format!("/Conferences/{conf}.json")).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["subresource_uris"]["participants"],
        format!(
            "/2010-04-01/Accounts/{}/Conferences/{conf}/Participants.json",
            rest.account
        )
    );
    assert_eq!(
        rest.post(
            &format!("/Conferences/{conf}.json"),
            &[("Status", "paused")]
        )
        .await
        .0,
        400
    );
    // A SID that breaks the spec's pattern is not found.
    let (s, e) = rest.get("/Conferences/CFnothex.json").await;
    assert_eq!((s, e["code"].as_u64()), (404, Some(20404)));

    // Calls: fetch, update.
    let (s, v) = rest.get(&format!("/Calls/{customer}.json")).await;
    assert_eq!(s, 200);
    assert_eq!(v["direction"], "inbound");
    assert!(v["date_created"].as_str().unwrap().ends_with("+0000"));
    assert_eq!(
        rest.post(&format!("/Calls/{customer}.json"), &[("Status", "paused")])
            .await
            .0,
        400
    );
    assert_eq!(
        rest.post(
            &format!("/Calls/{customer}.json"),
            &[("Stauts", "completed")]
        )
        .await
        .0,
        400
    );
    assert_eq!(rest.get("/Calls/CA1.json").await.0, 404);

    // Recordings: list, fetch, delete.
    assert_eq!(rest.get("/Recordings.json?PageSize=5").await.0, 200);
    assert_eq!(rest.get("/Recordings.json?PageSize=many").await.0, 400);
    assert_eq!(rest.get("/Recordings.json?PageSiz=5").await.0, 400);
    assert_eq!(rest.get("/Recordings.json?PageSize=0").await.0, 400);
    assert_eq!(rest.delete("/Recordings/RE0123.json").await, 404);

    // Participants: delete.
    assert_eq!(rest.delete(&p).await, 204);
    assert_eq!(rest.get(&p).await.0, 404);

    // Every refusal was logged with the reason.
    let rejected = sim.rejected_requests();
    assert!(rejected.iter().any(|r| r.message.contains("CallSidToCoah")));
    assert!(rejected.iter().all(|r| r.status == 400 || r.status == 404));
}

#[tokio::test]
async fn status_callback_event_may_be_one_value_or_repeated() {
    let sim = start(None).await;
    let rest = Rest::new(&sim);
    for form in [
        vec![
            ("From", "+15550000000"),
            ("To", "client:a"),
            ("StatusCallbackEvent", "ringing"),
        ],
        vec![
            ("From", "+15550000000"),
            ("To", "client:b"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
        ],
    ] {
        let (s, v) = rest
            .post("/Conferences/room-a/Participants.json", &form)
            .await;
        assert_eq!(s, 201, "{v}");
    }
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn auth_like_twilio() {
    let sim = start(None).await;
    let url = Rest::new(&sim).url("/Recordings.json");
    let client = reqwest::Client::new();
    let cfg = sim.config().clone();

    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 20003);
    assert_eq!(
        body["more_info"],
        "https://www.twilio.com/docs/errors/20003"
    );
    assert_eq!(body["status"], 401);

    let wrong = [
        (cfg.account_sid.to_string(), "wrong".to_owned()),
        (
            cfg.api_key_sid.as_ref().unwrap().to_string(),
            "wrong".to_owned(),
        ),
        (
            "SK0000000000000000000000000000000a".to_owned(),
            cfg.api_key_secret.as_ref().unwrap().expose().to_owned(),
        ),
    ];
    for (user, pass) in wrong {
        let r = client
            .get(&url)
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let good = [
        (
            cfg.account_sid.to_string(),
            cfg.auth_token.expose().to_owned(),
        ),
        (
            cfg.api_key_sid.as_ref().unwrap().to_string(),
            cfg.api_key_secret.as_ref().unwrap().expose().to_owned(),
        ),
    ];
    for (user, pass) in good {
        let r = client
            .get(&url)
            .basic_auth(&user, Some(&pass))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{user}");
    }
    // Another account's path: 404 / 20404.
    let other = format!(
        "{}/2010-04-01/Accounts/AC00000000000000000000000000000000/Recordings.json",
        sim.base_url()
    );
    let r = client
        .get(other)
        .basic_auth(cfg.account_sid.as_str(), Some(cfg.auth_token.expose()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], 20404);
}

// ---------------------------------------------------------------- limits & faults

#[tokio::test]
async fn concurrency_limit_answers_429_20429() {
    let sim = start_with(None, |c| c.max_concurrent_requests = 2).await;
    sim.delay_requests(Some("GET"), "/Recordings.json", Duration::from_millis(400));
    let rest = std::sync::Arc::new(Rest::new(&sim));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let rest = std::sync::Arc::clone(&rest);
        tasks.push(tokio::spawn(
            async move { rest.get("/Recordings.json").await },
        ));
    }
    let mut ok = 0;
    let mut throttled = 0;
    for t in tasks {
        let (s, body) = t.await.unwrap();
        match s {
            200 => ok += 1,
            429 => {
                assert_eq!(body["code"], 20429);
                throttled += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!((1..=2).contains(&ok), "ok {ok}");
    assert_eq!(ok + throttled, 6);

    // A scripted 429 burst, then normal service.
    sim.clear_faults();
    sim.throttle_next(2);
    assert_eq!(rest.get("/Recordings.json").await.1["code"], 20429);
    assert_eq!(rest.get("/Recordings.json").await.0, 429);
    assert_eq!(rest.get("/Recordings.json").await.0, 200);
}

#[tokio::test]
async fn a_delete_that_fails_then_succeeds() {
    let sim = start(None).await;
    let rest = Rest::new(&sim);
    let sids = sim.seed_recordings(&SeedRecordings {
        count: 1,
        first: datetime!(2026-01-01 00:00 UTC),
        interval: Duration::from_secs(60),
        duration: Duration::from_secs(3),
    });
    let path = format!("/Recordings/{}.json", sids[0]);
    sim.fail_next(Some("DELETE"), "/Recordings/", 2, 500);
    assert_eq!(rest.delete(&path).await, 500);
    assert_eq!(rest.delete(&path).await, 500);
    assert_eq!(rest.get(&path).await.0, 200, "GET is not affected");
    assert_eq!(rest.delete(&path).await, 204);
    assert_eq!(rest.delete(&path).await, 404);
    let (_, v) = rest.get("/Recordings.json?IncludeSoftDeleted=true").await;
    assert_eq!(v["recordings"][0]["status"], "deleted");
}

// ---------------------------------------------------------------- paging

#[tokio::test]
async fn recordings_paging_and_date_filters() {
    let sim = start(None).await;
    let rest = Rest::new(&sim);
    // 25 recordings, one a day from 2026-01-01.
    sim.seed_recordings(&SeedRecordings {
        count: 25,
        first: datetime!(2026-01-01 12:00 UTC),
        interval: Duration::from_secs(86_400),
        duration: Duration::from_secs(10),
    });
    let (s, first) = rest.get("/Recordings.json?PageSize=10").await;
    assert_eq!(s, 200);
    assert_eq!(first["page"], 0);
    assert_eq!(first["page_size"], 10);
    assert_eq!(first["start"], 0);
    assert_eq!(first["end"], 9);
    assert_eq!(first["previous_page_uri"], Value::Null);
    let account_path = sim.account_path();
    assert_eq!(
        first["first_page_uri"],
        format!("{account_path}/Recordings.json?PageSize=10&Page=0")
    );
    assert!(first["uri"].as_str().unwrap().starts_with(&account_path));

    let mut seen = Vec::new();
    let mut dates = Vec::new();
    let mut page = first;
    let mut pages = 0;
    loop {
        pages += 1;
        for r in page["recordings"].as_array().unwrap() {
            seen.push(r["sid"].as_str().unwrap().to_owned());
            dates.push(
                time::OffsetDateTime::parse(
                    r["date_created"].as_str().unwrap(),
                    &time::format_description::well_known::Rfc2822,
                )
                .unwrap(),
            );
        }
        match page["next_page_uri"].as_str() {
            Some(next) => {
                let (s, p) = rest.get_uri(next).await;
                assert_eq!(s, 200, "{next}");
                assert!(p["previous_page_uri"].is_string());
                page = p;
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25, "no duplicates across pages");
    assert!(dates.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Date filters (inclusive days).
    let (_, v) = rest.get("/Recordings.json?DateCreated=2026-01-05").await;
    assert_eq!(v["recordings"].as_array().unwrap().len(), 1);
    let (_, v) = rest
        .get("/Recordings.json?DateCreated%3E=2026-01-20&PageSize=50")
        .await;
    assert_eq!(v["recordings"].as_array().unwrap().len(), 6, "20th..25th");
    let (_, v) = rest.get("/Recordings.json?DateCreated%3C=2026-01-03").await;
    assert_eq!(v["recordings"].as_array().unwrap().len(), 3);
    let (_, v) = rest
        .get("/Recordings.json?DateCreated%3E=2026-01-02&DateCreated%3C=2026-01-04")
        .await;
    assert_eq!(v["recordings"].as_array().unwrap().len(), 3);
    assert_eq!(
        rest.get("/Recordings.json?DateCreated=yesterday").await.0,
        400
    );

    // Deleting what was paged does not make the next page skip anything.
    let (_, p1) = rest.get("/Recordings.json?PageSize=10").await;
    for r in p1["recordings"].as_array().unwrap() {
        let s = r["sid"].as_str().unwrap();
        assert_eq!(rest.delete(&format!("/Recordings/{s}.json")).await, 204);
    }
    let (s, p2) = rest.get_uri(p1["next_page_uri"].as_str().unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(p2["recordings"].as_array().unwrap().len(), 10);
    let (_, all) = rest.get("/Recordings.json?PageSize=100").await;
    assert_eq!(all["recordings"][0]["sid"], p2["recordings"][0]["sid"]);
}

// ---------------------------------------------------------------- media

fn check_wav(bytes: &[u8], seconds: u32) {
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    assert_eq!(&bytes[12..16], b"fmt ");
    let u16at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    assert_eq!(u16at(20), 1, "PCM");
    assert_eq!(u16at(22), 1, "mono");
    assert_eq!(u32at(24), 8000, "8 kHz");
    assert_eq!(u16at(34), 16, "16-bit");
    assert_eq!(&bytes[36..40], b"data");
    assert_eq!(u32at(40), seconds * 16_000);
    assert_eq!(u32at(4) as usize, bytes.len() - 8);
}

#[tokio::test]
async fn media_redirects_to_another_host_without_credentials() {
    let sim = start(None).await;
    let rest = Rest::new(&sim);
    let sids = sim.seed_recordings(&SeedRecordings {
        count: 1,
        first: datetime!(2026-02-01 00:00 UTC),
        interval: Duration::from_secs(60),
        duration: Duration::from_secs(7),
    });
    let rec = &sids[0];
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The redirect itself.
    let r = no_follow
        .get(rest.url(&format!("/Recordings/{rec}")))
        .basic_auth(&rest.user, Some(&rest.pass))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let target = url::Url::parse(&location).unwrap();
    let api = url::Url::parse(&sim.base_url()).unwrap();
    assert_eq!(target.host_str(), Some("127.0.0.1"));
    assert_ne!(
        target.port(),
        api.port(),
        "media lives on another host:port"
    );
    assert!(location.ends_with(".wav"));

    // The API itself refuses media requests without credentials.
    let r = no_follow
        .get(rest.url(&format!("/Recordings/{rec}.wav")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A client that follows redirects: WAV (no extension and .wav), MP3.
    let follow = reqwest::Client::new();
    for (suffix, ctype) in [
        ("", "audio/x-wav"),
        (".wav", "audio/x-wav"),
        (".mp3", "audio/mpeg"),
    ] {
        let r = follow
            .get(rest.url(&format!("/Recordings/{rec}{suffix}")))
            .basic_auth(&rest.user, Some(&rest.pass))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], ctype);
        let len: usize = r.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), len);
        if ctype == "audio/x-wav" {
            assert_eq!(len, 44 + 7 * 16_000);
            check_wav(&body, 7);
        } else {
            assert_eq!(&body[0..2], &[0xFF, 0xFB]);
        }
    }
    // reqwest drops credentials on a cross-origin redirect; the media host saw none.
    let media = sim.media_requests();
    assert_eq!(media.len(), 3);
    assert!(media.iter().all(|m| m.authorization.is_none()), "{media:?}");

    // A media download cut off mid-body.
    sim.cut_media(Some(rec), 1000, Some(1));
    let r = follow
        .get(rest.url(&format!("/Recordings/{rec}.wav")))
        .basic_auth(&rest.user, Some(&rest.pass))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-length"],
        (44 + 7 * 16_000).to_string().as_str()
    );
    assert!(r.bytes().await.is_err(), "body must end early");
    // Once only.
    let r = follow
        .get(rest.url(&format!("/Recordings/{rec}.wav")))
        .basic_auth(&rest.user, Some(&rest.pass))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 44 + 7 * 16_000);

    // Ranged reads (to resume a download) and HEAD.
    let r = follow
        .get(&location)
        .header("range", "bytes=40-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 40-99/{}", 44 + 7 * 16_000).as_str()
    );
    let part = r.bytes().await.unwrap();
    assert_eq!(part.len(), 60);
    assert_eq!(&part[0..4], &(7u32 * 16_000).to_le_bytes());
    let r = follow
        .get(&location)
        .header("range", "bytes=999999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let r = follow.head(&location).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        (44 + 7 * 16_000).to_string().as_str()
    );

    // Deleted: gone from the API and from the media host.
    assert_eq!(rest.delete(&format!("/Recordings/{rec}.json")).await, 204);
    let r = no_follow
        .get(rest.url(&format!("/Recordings/{rec}.wav")))
        .basic_auth(&rest.user, Some(&rest.pass))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = no_follow.get(location).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

// ---------------------------------------------------------------- the call

#[tokio::test]
async fn full_scripted_call_with_supervision_and_recording() {
    let app = App::start().await;
    let name = "call-demo";
    app.set_voice_twiml(&conference_twiml(&app, name));
    let sim = start(Some(&app)).await;
    let rest = Rest::new(&sim);
    sim.set_leg_behavior("client:alice", LegBehavior::Ring);

    // 1. The customer calls; the app answers conference TwiML.
    let customer = sim
        .place_inbound_call("+15551230001", "+15559870000")
        .await
        .unwrap();
    let voice = app.received_on("/voice/inbound");
    assert_eq!(voice.len(), 1);
    assert!(voice[0].signature_valid);
    for (k, v) in [
        ("CallSid", customer.as_str()),
        ("From", "+15551230001"),
        ("To", "+15559870000"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("ApiVersion", "2010-04-01"),
        ("Caller", "+15551230001"),
        ("Called", "+15559870000"),
    ] {
        assert_eq!(voice[0].param(k), Some(v), "{k}");
    }
    let conf = sim.conference(name).expect("conference exists");
    assert_eq!(conf.status, "init", "waits: the customer does not start it");
    assert!(sim.hears(&customer).is_empty());
    let call = sim.call(&customer).unwrap();
    assert!(call.heard.iter().any(|h| h == "say:Please hold"));
    assert!(call.heard.iter().any(|h| h.ends_with("/hold-music")));

    // 2. The app adds the agent through the Participants API (by friendly name).
    let status_cb = format!("{}/participant/status", app.base);
    let (s, v) = rest
        .post(
            &format!("/Conferences/{name}/Participants.json"),
            &[
                ("From", "+15559870000"),
                ("To", "client:alice"),
                ("Label", "agent"),
                ("EndConferenceOnExit", "false"),
                ("StartConferenceOnEnter", "true"),
                ("Beep", "false"),
                ("Timeout", "20"),
                ("StatusCallback", &status_cb),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "ringing"),
                ("StatusCallbackEvent", "answered"),
                ("StatusCallbackEvent", "completed"),
            ],
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["conference_sid"], conf.sid.as_str());
    let agent = sid(&v);
    sim.wait_for_call_status(&agent, "ringing", WAIT)
        .await
        .unwrap();

    // 3. The agent answers.
    sim.answer_call(&agent).unwrap();
    sim.wait_for("conference started", WAIT, |s| {
        s.conference(name)
            .is_some_and(|c| c.status == "in-progress")
    })
    .await
    .unwrap();
    assert_eq!(sim.hears(&customer), vec![agent.clone()]);
    assert_eq!(sim.hears(&agent), vec![customer.clone()]);

    // 4. A supervisor monitors (Muted=true), then whispers, then barges.
    let (s, v) = rest
        .post(
            &format!("/Conferences/{}/Participants.json", conf.sid),
            &[
                ("From", "+15559870000"),
                ("To", "client:sue"),
                ("Label", "supervisor"),
                ("Muted", "true"),
                ("Beep", "false"),
                ("EndConferenceOnExit", "false"),
            ],
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let sup = sid(&v);
    sim.wait_for_call_status(&sup, "in-progress", WAIT)
        .await
        .unwrap();
    sim.wait_for("supervisor connected", WAIT, |s| {
        s.conference(name)
            .and_then(|c| c.participant("supervisor").map(|p| p.status == "connected"))
            .unwrap_or(false)
    })
    .await
    .unwrap();
    let mut hears_sup = sim.hears(&sup);
    hears_sup.sort();
    let mut both = vec![customer.clone(), agent.clone()];
    both.sort();
    assert_eq!(hears_sup, both, "monitor hears both");
    assert!(sim.heard_by(&sup).is_empty(), "nobody hears a monitor");

    let p = format!("/Conferences/{}/Participants/supervisor.json", conf.sid);
    let (s, v) = rest
        .post(
            &p,
            &[
                ("Muted", "false"),
                ("Coaching", "true"),
                ("CallSidToCoach", agent.as_str()),
            ],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["coaching"], true);
    assert_eq!(v["call_sid_to_coach"], agent.as_str());
    assert_eq!(
        sim.heard_by(&sup),
        vec![agent.clone()],
        "whisper: only the agent"
    );
    assert!(!sim.hears(&customer).contains(&sup));
    let mut agent_hears = sim.hears(&agent);
    agent_hears.sort();
    let mut expect = vec![customer.clone(), sup.clone()];
    expect.sort();
    assert_eq!(agent_hears, expect);

    let (s, _) = rest.post(&p, &[("Coaching", "false")]).await;
    assert_eq!(s, 200);
    let mut heard = sim.heard_by(&sup);
    heard.sort();
    assert_eq!(heard, both, "barge: both hear the supervisor");

    // Hold: the customer hears music and is not heard.
    let cp = format!("/Conferences/{}/Participants/{customer}.json", conf.sid);
    assert_eq!(rest.post(&cp, &[("Hold", "true")]).await.0, 200);
    assert!(sim.hears(&customer).is_empty());
    assert!(sim.heard_by(&customer).is_empty());
    assert_eq!(rest.post(&cp, &[("Hold", "false")]).await.0, 200);
    assert_eq!(sim.heard_by(&customer).len(), 2);

    // The supervisor leaves; the call goes on.
    assert_eq!(rest.delete(&p).await, 204);
    assert_eq!(
        sim.conference(name).unwrap().status,
        "in-progress",
        "a supervisor leaving does not end the call"
    );

    // 5. 42 seconds later the customer hangs up: endConferenceOnExit ends it.
    sim.advance_clock(Duration::from_secs(42));
    sim.hang_up(&customer).unwrap();
    sim.wait_for("conference ended", WAIT, |s| {
        s.conference(name).is_some_and(|c| c.status == "completed")
    })
    .await
    .unwrap();
    let ended = sim.conference(name).unwrap();
    assert_eq!(
        ended.reason_conference_ended.as_deref(),
        Some("participant-with-end-conference-on-exit-left")
    );
    sim.wait_for_call_status(&agent, "completed", WAIT)
        .await
        .unwrap();

    // 6. The recording callback arrives; the recording is in the API, with media.
    let rec_cb = sim
        .wait_for_callback("recording callback", WAIT, |c| {
            c.url.ends_with("/recordings/status") && c.param("RecordingStatus") == Some("completed")
        })
        .await
        .unwrap();
    assert_eq!(rec_cb.status, Some(200));
    assert_eq!(rec_cb.param("RecordingStatus"), Some("completed"));
    assert_eq!(rec_cb.param("RecordingSource"), Some("DialConference"));
    assert_eq!(rec_cb.param("ConferenceSid"), Some(conf.sid.as_str()));
    let duration: u32 = rec_cb.param("RecordingDuration").unwrap().parse().unwrap();
    assert!((42..=44).contains(&duration), "{duration}");
    let rec_url = rec_cb.param("RecordingUrl").unwrap().to_owned();
    let rec_sid = rec_cb.param("RecordingSid").unwrap().to_owned();
    let (s, v) = rest.get(&format!("/Recordings/{rec_sid}.json")).await;
    assert_eq!(s, 200);
    assert_eq!(v["conference_sid"], conf.sid.as_str());
    let media = reqwest::Client::new()
        .get(format!("{rec_url}.wav"))
        .basic_auth(&rest.user, Some(&rest.pass))
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), 200);
    let bytes = media.bytes().await.unwrap();
    check_wav(&bytes, duration);

    // Wait until the callbacks queued before the recording one reached the app.
    sim.wait_for("all callbacks delivered", WAIT, |s| {
        let n = s.callbacks().len();
        n == app.received().len() && n > 0
    })
    .await
    .unwrap();

    // Every webhook carried a signature the project's validator accepts.
    let received = app.received();
    assert!(received.iter().all(|r| r.signature_valid), "{received:#?}");

    // Conference events, ordered by SequenceNumber.
    let conf_events: Vec<Received> = app.received_on("/conference/status");
    let names: Vec<&str> = conf_events
        .iter()
        .map(|r| r.param("StatusCallbackEvent").unwrap())
        .collect();
    for e in [
        "participant-join",
        "conference-start",
        "participant-modify",
        "participant-hold",
        "participant-unhold",
        "participant-unmute",
        "participant-leave",
        "conference-end",
    ] {
        assert!(names.contains(&e), "{e} missing from {names:?}");
    }
    let seqs: Vec<u64> = conf_events
        .iter()
        .map(|r| r.param("SequenceNumber").unwrap().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let join = conf_events
        .iter()
        .find(|r| r.param("ParticipantLabel") == Some("agent"))
        .unwrap();
    for k in [
        "AccountSid",
        "ConferenceSid",
        "FriendlyName",
        "CallSid",
        "Muted",
        "Hold",
        "Coaching",
        "EndConferenceOnExit",
        "StartConferenceOnEnter",
        "Timestamp",
    ] {
        assert!(join.param(k).is_some(), "{k}");
    }
    let end = conf_events
        .iter()
        .find(|r| r.param("StatusCallbackEvent") == Some("conference-end"))
        .unwrap();
    assert_eq!(
        end.param("ReasonConferenceEnded"),
        Some("participant-with-end-conference-on-exit-left")
    );
    assert_eq!(
        end.param("CallSidEndingConference"),
        Some(customer.as_str())
    );

    let rec_events: Vec<String> = app
        .received_on("/recordings/status")
        .iter()
        .map(|r| r.param("RecordingStatus").unwrap().to_owned())
        .collect();
    assert_eq!(rec_events, ["in-progress", "completed"]);

    // The agent leg's call progress.
    let progress: Vec<String> = app
        .received_on("/participant/status")
        .iter()
        .filter(|r| r.param("CallSid") == Some(agent.as_str()))
        .map(|r| r.param("CallStatus").unwrap().to_owned())
        .collect();
    assert_eq!(
        progress,
        ["initiated", "ringing", "in-progress", "completed"]
    );
}

#[tokio::test]
async fn client_legs_busy_no_answer_and_canceled() {
    let app = App::start().await;
    let sim = start(Some(&app)).await;
    let rest = Rest::new(&sim);
    let cb = format!("{}/participant/status", app.base);
    sim.set_leg_behavior("client:busy", LegBehavior::Busy);
    sim.set_leg_behavior("client:away", LegBehavior::NoAnswer);
    sim.set_leg_behavior("client:slow", LegBehavior::Ring);
    let mut sids = Vec::new();
    for who in ["client:busy", "client:away", "client:slow"] {
        let (s, v) = rest
            .post(
                "/Conferences/room-legs/Participants.json",
                &[
                    ("From", "+15559870000"),
                    ("To", who),
                    ("StatusCallback", &cb),
                ],
            )
            .await;
        assert_eq!(s, 201, "{v}");
        sids.push(sid(&v));
    }
    sim.wait_for_call_status(&sids[0], "busy", WAIT)
        .await
        .unwrap();
    sim.wait_for_call_status(&sids[1], "no-answer", WAIT)
        .await
        .unwrap();
    sim.wait_for_call_status(&sids[2], "ringing", WAIT)
        .await
        .unwrap();
    sim.reject_call(&sids[2], LegOutcome::NoAnswer).unwrap();
    sim.wait_for_call_status(&sids[2], "no-answer", WAIT)
        .await
        .unwrap();
    assert!(sim.answer_call(&sids[2]).is_err(), "not ringing any more");

    // A leg left ringing past its Timeout: no-answer.
    sim.set_leg_behavior("client:sleepy", LegBehavior::Ring);
    let (s, v) = rest
        .post(
            "/Conferences/room-legs3/Participants.json",
            &[
                ("From", "+15559870000"),
                ("To", "client:sleepy"),
                ("Timeout", "1"),
            ],
        )
        .await;
    assert_eq!(s, 201, "{v}");
    sim.wait_for_call_status(&sid(&v), "no-answer", WAIT)
        .await
        .unwrap();

    // A ringing leg canceled through the Calls API.
    sim.set_leg_behavior("client:late", LegBehavior::Ring);
    let (_, v) = rest
        .post(
            "/Conferences/room-legs2/Participants.json",
            &[
                ("From", "+15559870000"),
                ("To", "client:late"),
                ("StatusCallback", &cb),
            ],
        )
        .await;
    let late = sid(&v);
    sim.wait_for_call_status(&late, "ringing", WAIT)
        .await
        .unwrap();
    let (s, v) = rest
        .post(&format!("/Calls/{late}.json"), &[("Status", "canceled")])
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "canceled");

    sim.wait_for("completed callbacks", WAIT, |_| {
        app.received_on("/participant/status").len() >= 4
    })
    .await
    .unwrap();
    let statuses: Vec<String> = app
        .received_on("/participant/status")
        .iter()
        .map(|r| r.param("CallStatus").unwrap().to_owned())
        .collect();
    for s in ["busy", "no-answer", "canceled"] {
        assert!(statuses.iter().any(|x| x == s), "{s} in {statuses:?}");
    }
    assert!(app.received().iter().all(|r| r.signature_valid));
}

#[tokio::test]
async fn conference_settings_come_from_the_first_participant_to_connect() {
    // The app adds the agent (by friendly name) while answering the customer's
    // webhook, so the conference exists before the customer's TwiML joins it.
    let app = App::start().await;
    app.set_voice_twiml(&conference_twiml(&app, "race-room"));
    let sim = start(Some(&app)).await;
    let rest = Rest::new(&sim);
    sim.set_leg_behavior("client:bob", LegBehavior::Ring);
    let (s, v) = rest
        .post(
            "/Conferences/race-room/Participants.json",
            &[("From", "+15559870000"), ("To", "client:bob")],
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let agent = sid(&v);
    sim.wait_for_call_status(&agent, "ringing", WAIT)
        .await
        .unwrap();
    let customer = sim
        .place_inbound_call("+15551230009", "+15559870000")
        .await
        .unwrap();
    assert_eq!(sim.conferences().len(), 1, "one conference");
    sim.answer_call(&agent).unwrap();
    sim.wait_for("conference-start", WAIT, |_| {
        app.received_on("/conference/status")
            .iter()
            .any(|r| r.param("StatusCallbackEvent") == Some("conference-start"))
    })
    .await
    .unwrap();
    assert_eq!(sim.hears(&customer), vec![agent]);
}

#[tokio::test]
async fn duplicated_and_reordered_callbacks() {
    let app = App::start().await;
    app.set_voice_twiml(&conference_twiml(&app, "dup-room"));
    let sim = start(Some(&app)).await;
    sim.duplicate_callbacks(2);
    sim.reorder_callbacks(4);
    let customer = sim
        .place_inbound_call("+15551230002", "+15559870000")
        .await
        .unwrap();
    sim.hang_up(&customer).unwrap();
    sim.wait_for("conference-end twice", WAIT, |_| {
        app.received_on("/conference/status")
            .iter()
            .filter(|r| r.param("StatusCallbackEvent") == Some("conference-end"))
            .count()
            == 2
    })
    .await
    .unwrap();
    let events = app.received_on("/conference/status");
    // Each SequenceNumber arrives exactly twice.
    let mut seqs: Vec<u64> = events
        .iter()
        .map(|r| r.param("SequenceNumber").unwrap().parse().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs.len() % 2, 0);
    assert!(seqs.chunks(2).all(|c| c[0] == c[1]), "{seqs:?}");
    assert!(events.iter().all(|r| r.signature_valid));
}

#[tokio::test]
async fn voicemail_with_record_verb() {
    let app = App::start().await;
    app.set_voice_twiml(&format!(
        r#"<Response><Say>Leave a message</Say><Record maxLength="120" playBeep="true" recordingStatusCallback="{b}/recordings/status" action="{b}/after-record"/></Response>"#,
        b = app.base
    ));
    let sim = start_with(Some(&app), |c| {
        c.record_verb_duration = Duration::from_secs(9)
    })
    .await;
    let call = sim
        .place_inbound_call("+15551230003", "+15559870000")
        .await
        .unwrap();
    let cb = sim
        .wait_for_callback("voicemail recording", WAIT, |c| {
            c.url.ends_with("/recordings/status")
        })
        .await
        .unwrap();
    assert_eq!(cb.param("RecordingSource"), Some("RecordVerb"));
    assert_eq!(cb.param("RecordingDuration"), Some("9"));
    assert_eq!(cb.param("CallSid"), Some(call.as_str()));
    let rec = sim.recordings();
    assert!(
        rec.iter()
            .any(|r| r.source == "RecordVerb" && r.duration_secs == 9)
    );
    let after = app.received_on("/after-record");
    assert!(!after.is_empty());
    assert!(after[0].param("RecordingUrl").is_some());
}

#[tokio::test]
async fn call_update_redirects_and_hangs_up() {
    let app = App::start().await;
    app.set_voice_twiml(&conference_twiml(&app, "redir-room"));
    let sim = start(Some(&app)).await;
    let rest = Rest::new(&sim);
    let call = sim
        .place_inbound_call("+15551230004", "+15559870000")
        .await
        .unwrap();
    let (s, _) = rest
        .post(
            &format!("/Calls/{call}.json"),
            &[("Twiml", "<Response><Say>Goodbye</Say><Hangup/></Response>")],
        )
        .await;
    assert_eq!(s, 200);
    sim.wait_for_call_status(&call, "completed", WAIT)
        .await
        .unwrap();
    assert!(
        sim.call(&call)
            .unwrap()
            .heard
            .iter()
            .any(|h| h == "say:Goodbye")
    );
    let (s, v) = rest
        .post(
            &format!("/Calls/{call}.json"),
            &[("Twiml", "<Response><Hangup/></Response>")],
        )
        .await;
    assert_eq!((s, v["code"].as_u64()), (400, Some(21220)));

    let call2 = sim
        .place_inbound_call("+15551230005", "+15559870000")
        .await
        .unwrap();
    let (s, v) = rest
        .post(&format!("/Calls/{call2}.json"), &[("Status", "completed")])
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "completed");

    // Conference ended through the API.
    let call3 = sim
        .place_inbound_call("+15551230006", "+15559870000")
        .await
        .unwrap();
    let conf = sim.conference("redir-room").unwrap();
    assert_eq!(conf.status, "init");
    let (s, v) = rest
        .post(
            &format!("/Conferences/{}.json", conf.sid),
            &[("Status", "completed")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["reason_conference_ended"], "conference-ended-via-api");
    sim.wait_for_call_status(&call3, "completed", WAIT)
        .await
        .unwrap();
}

// ---------------------------------------------------------------- control API & robustness

#[tokio::test]
async fn control_endpoints_drive_the_simulator() {
    let app = App::start().await;
    app.set_voice_twiml(&conference_twiml(&app, "ctl-room"));
    let sim = start(Some(&app)).await;
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let v: Value = http
        .post(format!("{base}/_sim/calls/inbound"))
        .json(&serde_json::json!({"from": "+15551230007", "to": "+15559870000"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call = v["call_sid"].as_str().unwrap().to_owned();
    let audio: Value = http
        .get(format!("{base}/_sim/calls/{call}/audio"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audio["hears"], serde_json::json!([]));
    let r = http
        .post(format!("{base}/_sim/faults"))
        .json(&serde_json::json!({"kind": "status", "status": 503, "times": 1, "path_contains": "/Calls/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let rest = Rest::new(&sim);
    let (s, e) = rest.get(&format!("/Calls/{call}.json")).await;
    assert_eq!((s, e["code"].as_u64()), (503, Some(20503)));
    let r = http
        .post(format!("{base}/_sim/recordings/seed"))
        .json(&serde_json::json!({"count": 3, "first": "2026-03-01T00:00:00Z", "duration": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sim.recordings().len(), 3);
    let r = http
        .post(format!("{base}/_sim/calls/{call}/hangup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cbs: Value = http
        .get(format!("{base}/_sim/callbacks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!cbs.as_array().unwrap().is_empty());
    let r = http
        .post(format!("{base}/_sim/calls/CAbad/hangup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Absurd inputs do not break it.
    let r = http
        .post(format!("{base}/_sim/recordings/seed"))
        .json(
            &serde_json::json!({"count": 5, "first": "2026-03-01T00:00:00Z", "interval": u64::MAX}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/_sim/clock/advance"))
        .json(&serde_json::json!({"seconds": u64::MAX}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        rest.get("/Recordings.json?PageToken=%E2%82%AC%E2%82%AC")
            .await
            .0,
        400
    );
    let call2 = sim
        .place_inbound_call("+15551230008", "+15559870000")
        .await
        .unwrap();
    assert!(sim.call(&call2).is_some());
    assert_eq!(rest.get(&format!("/Calls/{call2}.json")).await.0, 200);
}

#[tokio::test]
async fn garbage_gets_twilio_errors_not_panics() {
    let sim = start(None).await;
    let rest = Rest::new(&sim);
    let client = reqwest::Client::new();
    let bodies: Vec<Vec<u8>> = vec![
        b"%%%".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        b"Muted=true&Muted=false".to_vec(),
        b"=&=&&==".to_vec(),
        "To=\u{0}".as_bytes().to_vec(),
        vec![b'a'; 200_000],
    ];
    let paths = [
        "/Conferences/CF0123456789abcdef0123456789abcdef/Participants/x.json",
        "/Conferences/%ZZ/Participants.json",
        "/Calls/.json",
        "/Recordings/RE0123456789abcdef0123456789abcdef.flac",
        "/../../etc/passwd",
    ];
    for p in paths {
        for b in &bodies {
            let r = client
                .post(rest.url(p))
                .basic_auth(&rest.user, Some(&rest.pass))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            assert!((400..500).contains(&status), "{p}: {status}");
            let v: Value = r.json().await.unwrap();
            assert!(v["code"].is_u64(), "{p}: {v}");
        }
    }
    // Still serving.
    assert_eq!(rest.get("/Recordings.json").await.0, 200);
}

#[tokio::test]
async fn the_binary_serves_with_flags() {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_twilio-sim"))
        .args([
            "--port",
            "0",
            "--media-port",
            "0",
            "--auth-token",
            "tok-from-flag",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("prints its addresses")
        .unwrap()
        .unwrap();
    // "twilio-sim: API http://127.0.0.1:N media http://127.0.0.1:M account AC…"
    let api = line.split_whitespace().nth(2).unwrap().to_owned();
    assert!(api.starts_with("http://127.0.0.1:"), "{line}");
    let http = reqwest::Client::new();
    let health = http.get(format!("{api}/_sim/health")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    let url = format!(
        "{api}/2010-04-01/Accounts/{}/Recordings.json",
        twilio_sim::DEFAULT_ACCOUNT_SID
    );
    let r = http
        .get(&url)
        .basic_auth(twilio_sim::DEFAULT_ACCOUNT_SID, Some("tok-from-flag"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(&url)
        .basic_auth(
            twilio_sim::DEFAULT_ACCOUNT_SID,
            Some(twilio_sim::DEFAULT_AUTH_TOKEN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    child.kill().await.unwrap();
}
