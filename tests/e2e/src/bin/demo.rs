//! `make demo`: one scripted call through the whole local system, told as a
//! timeline an operator can follow. A customer calls, an agent answers, a
//! supervisor monitors, whispers, barges and leaves, the call ends, and the
//! recording should land in S3 and leave Twilio. Steps whose functions are not
//! built yet are reported as such, never faked.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use e2e::Stack;
use local_stack::users::{PoolRef, mint_token};
use serde_json::json;
use shared::conference::conference_name;
use shared::ids::CallSid;
use twilio_sim::SimHandle;

const CUSTOMER: &str = "+815012345678";
const NUMBER: &str = "+815098765432";
const WAIT: Duration = Duration::from_secs(20);

struct Timeline {
    started: Instant,
    failures: usize,
}

impl Timeline {
    fn line(&self, mark: &str, text: &str) {
        let t = self.started.elapsed().as_secs_f64();
        println!("{t:7.2}s  {mark} {text}");
    }
    fn step(&self, text: &str) {
        self.line("->", text);
    }
    fn ok(&self, text: &str) {
        self.line("  ok", text);
    }
    fn info(&self, text: &str) {
        self.line("    ", text);
    }
    fn fail(&mut self, text: &str) {
        self.failures += 1;
        self.line("  FAILED", text);
    }
}

fn who_hears(sim: &SimHandle, call: &CallSid, names: &[(CallSid, &str)]) -> String {
    let name = |sid: &CallSid| {
        names
            .iter()
            .find(|(s, _)| s == sid)
            .map_or_else(|| sid.to_string(), |(_, n)| (*n).to_owned())
    };
    let heard: Vec<String> = sim.hears(call).iter().map(name).collect();
    format!("{} hears {}", name(call), heard.join(", "))
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut tl = Timeline {
        started: Instant::now(),
        failures: 0,
    };
    println!("Contact center demo: one call through the local system\n");
    tl.step("starting DynamoDB Local, the S3 emulator, moto, the Twilio simulator and the four functions");
    let stack = Stack::start("demo").await;
    tl.ok(&format!(
        "API on {}  (Twilio simulator on {})",
        stack.url(""),
        stack.sim.base_url()
    ));

    tl.step("agent alice and supervisor sam sign in (local Cognito user pool)");
    let env = local_stack::testing::environment().await;
    let tokens = match PoolRef::from_env(env) {
        Ok(pool) => {
            let alice = mint_token(&pool, "alice@example.com", &["agents"]).await;
            let sam = mint_token(&pool, "sam@example.com", &["supervisors"]).await;
            match (alice, sam) {
                (Ok(a), Ok(s)) => Some((a.access_token, s.access_token)),
                (a, s) => {
                    tl.fail(&format!("sign-in failed: {:?} {:?}", a.err(), s.err()));
                    None
                }
            }
        }
        Err(e) => {
            tl.fail(&e);
            None
        }
    };
    let Some((alice, sam)) = tokens else {
        return ExitCode::FAILURE;
    };
    let (status, body) = stack
        .api(reqwest::Method::POST, "/token", &alice, None)
        .await;
    let identity = body["identity"].as_str().unwrap_or_default().to_owned();
    if status == 200 {
        tl.ok(&format!(
            "alice's softphone has a Twilio access token as client:{identity}"
        ));
    } else {
        tl.fail(&format!("POST /token answered {status}: {body}"));
    }
    let (status, body) = stack
        .api(
            reqwest::Method::PUT,
            "/agents/me/presence",
            &alice,
            Some(json!({"presence": "available"})),
        )
        .await;
    if status == 200 {
        tl.ok("alice is available");
    } else {
        tl.fail(&format!(
            "PUT /agents/me/presence answered {status}: {body}"
        ));
    }

    tl.step(&format!(
        "a customer ({CUSTOMER}) calls the contact center ({NUMBER})"
    ));
    let call = match stack
        .sim
        .place_call_to_url(CUSTOMER, NUMBER, &stack.url("/twilio/voice/inbound"))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tl.fail(&format!("the simulator could not place the call: {e}"));
            return ExitCode::FAILURE;
        }
    };
    tl.ok(&format!(
        "call {call} is in conference {}",
        conference_name(&call)
    ));
    let both_connected = |sim: &SimHandle| {
        sim.conference(&conference_name(&call)).is_some_and(|c| {
            c.participants
                .iter()
                .filter(|p| p.status == "connected")
                .count()
                >= 2
        })
    };
    if stack
        .sim
        .wait_for("the agent to answer", WAIT, both_connected)
        .await
        .is_ok()
    {
        let conf = stack.sim.conference(&conference_name(&call));
        let agent_leg = conf
            .as_ref()
            .and_then(|c| {
                c.participants
                    .iter()
                    .find(|p| p.label.as_deref() == Some("agent"))
            })
            .map(|p| p.call_sid.clone());
        tl.ok("alice's softphone rang and she answered; the conversation starts");
        if let Some(agent) = &agent_leg {
            let names = [(call.clone(), "customer"), (agent.clone(), "alice")];
            tl.info(&who_hears(&stack.sim, &call, &names));
            tl.info(&who_hears(&stack.sim, agent, &names));
        }
    } else {
        tl.fail("alice was not connected to the customer");
    }

    let agent_leg = stack
        .sim
        .conference(&conference_name(&call))
        .and_then(|c| {
            c.participants
                .into_iter()
                .find(|p| p.label.as_deref() == Some("agent"))
        })
        .map(|p| p.call_sid);
    tl.step("sam opens the live calls view");
    let listed = async {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, page) = stack
                .api(reqwest::Method::GET, "/calls/live", &sam, None)
                .await;
            let entry = page["calls"].as_array().and_then(|calls| {
                calls
                    .iter()
                    .find(|c| c["call_id"] == call.as_str() && c["agent_joined"] == true)
                    .cloned()
            });
            if let Some(e) = entry {
                return Ok(e);
            }
            if Instant::now() > deadline {
                return Err(format!("GET /calls/live answered {status}: {page}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    match listed.await {
        Ok(e) => tl.ok(&format!(
            "live: {} from {}, agent {}, waited {} s",
            e["call_id"].as_str().unwrap_or("?"),
            e["customer"].as_str().unwrap_or("?"),
            e["agent"].as_str().unwrap_or("?"),
            e["wait_seconds"]
        )),
        Err(e) => tl.fail(&e),
    }
    let mut sam_leg: Option<CallSid> = None;
    for mode in ["monitor", "whisper", "barge", "monitor"] {
        tl.step(&format!("supervisor sam chooses {mode}"));
        let (method, verb) = if sam_leg.is_none() {
            (reqwest::Method::POST, "joins")
        } else {
            (reqwest::Method::PATCH, "switches")
        };
        let (status, body) = stack
            .api(
                method,
                &format!("/calls/{call}/supervision"),
                &sam,
                Some(json!({ "mode": mode })),
            )
            .await;
        match status {
            200 | 201 => {
                tl.ok(&format!("sam {verb} in {mode} mode"));
                let leg = body["participant_call_sid"]
                    .as_str()
                    .and_then(|s| CallSid::parse(s).ok());
                if sam_leg.is_none()
                    && let Some(leg) = &leg
                {
                    let connected = stack
                        .sim
                        .wait_for("sam's softphone to answer", WAIT, |sim| {
                            sim.call(leg).is_some_and(|c| c.status == "in-progress")
                        })
                        .await;
                    if connected.is_err() {
                        tl.fail("sam's softphone never connected");
                    }
                }
                sam_leg = sam_leg.or(leg);
                if let (Some(s), Some(a)) = (&sam_leg, &agent_leg) {
                    let names = [
                        (call.clone(), "customer"),
                        (a.clone(), "alice"),
                        (s.clone(), "sam"),
                    ];
                    for who in [&call, a, s] {
                        tl.info(&who_hears(&stack.sim, who, &names));
                    }
                }
            }
            other => tl.fail(&format!("supervision answered {other}: {body}")),
        }
    }
    tl.step("sam leaves the call");
    let (status, body) = stack
        .api(
            reqwest::Method::DELETE,
            &format!("/calls/{call}/supervision"),
            &sam,
            None,
        )
        .await;
    match status {
        204 => tl.ok("sam left without disturbing the call"),
        other => tl.fail(&format!("leaving answered {other}: {body}")),
    }

    tl.step("the customer hangs up");
    if let Err(e) = stack.sim.hang_up(&call) {
        tl.fail(&format!("hang-up failed: {e}"));
    }
    let ended = stack
        .sim
        .wait_for("the conference to end", WAIT, |sim| {
            sim.conference(&conference_name(&call))
                .is_some_and(|c| c.status == "completed")
        })
        .await;
    if ended.is_ok() {
        tl.ok("the conference ended for everyone");
    } else {
        tl.fail("the conference did not end");
    }
    let released = async {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, me) = stack
                .api(reqwest::Method::GET, "/agents/me", &alice, None)
                .await;
            if me["presence"] == "available" && me["current_call_id"].is_null() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if released.await {
        tl.ok("alice is available again for the next caller");
    } else {
        tl.fail("alice was not released");
    }

    tl.step("the recording: S3 copy verified, then deleted at Twilio");
    let recording = stack
        .sim
        .recordings()
        .into_iter()
        .find(|r| r.call_sid.as_ref() == Some(&call) || r.conference_sid.is_some());
    match recording {
        None => tl.fail("Twilio made no recording of the call"),
        Some(r) => {
            tl.info(&format!(
                "Twilio recorded {} ({} s, {} channel(s))",
                r.sid, r.duration_secs, r.channels
            ));
            let sid = r.sid.clone();
            let answered = stack
                .sim
                .wait_for_callback("the recording status callback", WAIT, |c| {
                    c.param("RecordingSid") == Some(sid.as_str())
                        && c.param("RecordingStatus") == Some("completed")
                        && (c.status.is_some() || c.error.is_some())
                })
                .await
                .ok()
                .and_then(|c| c.status);
            // Offload runs after the callback is answered: give it time to delete.
            let deleted = matches!(answered, Some(200..=299))
                && stack
                    .sim
                    .wait_for("the recording to leave Twilio", WAIT, |sim| {
                        sim.recordings().iter().any(|x| x.sid == sid && x.deleted)
                    })
                    .await
                    .is_ok();
            match answered {
                Some(200..=299) if deleted => tl.ok(&format!(
                    "{sid} was copied to S3, verified, and deleted at Twilio"
                )),
                other => tl.fail(&format!(
                    "the recording callback answered {other:?}; deleted at Twilio: {deleted}"
                )),
            }
        }
    }

    println!("\nThe supervision audit trail of the call (DynamoDB), in order:");
    let table = shared::store::Table::new(
        stack.endpoints.dynamodb_client(),
        stack.resources.table_name.clone(),
    );
    match shared::store::supervision::audit_of_call(&table, &call).await {
        Ok(trail) if trail.is_empty() => tl.fail("no supervision steps were audited"),
        Ok(trail) => {
            for e in &trail {
                println!(
                    "  {}  {:<24} {:<6} {:<8} {:<16} agent {}",
                    e.at,
                    e.supervisor,
                    e.action.as_str(),
                    e.mode.as_str(),
                    e.cause.as_str(),
                    e.agent.as_ref().map_or("-", |a| a.as_str())
                );
            }
            let steps: Vec<_> = trail
                .iter()
                .map(|e| format!("{} {}", e.action.as_str(), e.mode.as_str()))
                .collect();
            let expected = [
                "join monitor",
                "switch whisper",
                "switch barge",
                "switch monitor",
                "leave monitor",
            ];
            if steps != expected {
                tl.fail(&format!(
                    "the audit trail is {steps:?}, expected {expected:?}"
                ));
            }
        }
        Err(e) => tl.fail(&format!("reading the audit trail failed: {e}")),
    }

    println!("\nWhat Twilio sent us, in order:");
    for c in stack.sim.callbacks() {
        let event = c
            .param("StatusCallbackEvent")
            .or_else(|| c.param("RecordingStatus"))
            .or_else(|| c.param("CallStatus"))
            .unwrap_or("-");
        let who = c
            .param("ParticipantLabel")
            .or_else(|| c.param("RecordingSid"))
            .unwrap_or("");
        let path = c
            .url
            .split_once("/twilio/")
            .map_or(c.url.as_str(), |(_, p)| p);
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        println!(
            "  #{:<3} {:<28} {:<22} {:<36} -> {}",
            c.id,
            format!("/twilio/{path}"),
            event,
            who,
            c.status
                .map_or_else(|| "no answer".to_owned(), |s| s.to_string())
        );
    }
    let rejected = stack.sim.rejected_requests();
    if !rejected.is_empty() {
        tl.fail(&format!(
            "{} of our requests to Twilio broke Twilio's API spec",
            rejected.len()
        ));
    }
    println!("\n{} failure(s).", tl.failures);
    if tl.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
