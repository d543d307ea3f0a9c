//! Every `/twilio/*` route refuses a missing, forged or replayed signature with
//! 403 and writes nothing, through the real binaries behind the local gateway.

use e2e::{Stack, local_twilio, template};
use shared::twilio::signature::{Algorithm, sign};

fn params() -> Vec<(String, String)> {
    e2e::inbound_call_params(
        "CA923d5a4fd12aabfe228f219e9cb0eb53",
        "+815076262352",
        "+815017912728",
    )
}

fn twilio_paths() -> Vec<String> {
    template()
        .routes()
        .expect("routes")
        .into_iter()
        .filter(|r| r.path.starts_with("/twilio/"))
        .map(|r| r.path)
        .collect()
}

#[tokio::test]
async fn bad_signatures_get_403_and_change_nothing() {
    let stack = Stack::start("signatures").await;
    let p = params();
    let before = stack.state_item_count().await;
    let paths = twilio_paths();
    assert!(
        paths.len() >= 7,
        "expected every Twilio route, got {paths:?}"
    );
    for path in &paths {
        let other = paths.iter().find(|o| *o != path).expect("another route");
        let forged = sign(
            Algorithm::HmacSha1,
            b"not-the-auth-token",
            &stack.url(path),
            &p,
        );
        let cases: [(&str, Option<String>, &str); 5] = [
            ("missing", None, path),
            ("forged", Some(forged), path),
            (
                "replayed from another route",
                Some(stack.twilio_signature(other, &p)),
                path,
            ),
            (
                "replayed with another query",
                Some(stack.twilio_signature(&format!("{path}?attempt=1"), &p)),
                path,
            ),
            ("garbage", Some("AAAA".into()), path),
        ];
        for (what, signature, target) in cases {
            let resp = stack.post_twilio(target, &p, signature.as_deref()).await;
            assert_eq!(resp.status(), 403, "{what} signature on {path}");
            let body = resp.text().await.expect("body");
            assert!(
                !body.contains(local_twilio("TWILIO_AUTH_TOKEN")),
                "no secret in error bodies"
            );
        }
        // Tampering with one parameter after signing.
        let sig = stack.twilio_signature(path, &p);
        let mut tampered = p.clone();
        tampered[4].1 = "completed".into();
        let resp = stack.post_twilio(path, &tampered, Some(&sig)).await;
        assert_eq!(resp.status(), 403, "tampered body on {path}");
    }
    assert_eq!(
        stack.state_item_count().await,
        before,
        "refused requests wrote nothing"
    );
    // The genuine requests pass the signature check (whatever the route then
    // does: a genuine inbound call is recorded, so this comes after the count).
    for path in &paths {
        let sig = stack.twilio_signature(path, &p);
        let resp = stack.post_twilio(path, &p, Some(&sig)).await;
        assert_ne!(resp.status(), 403, "a correctly signed request to {path}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_anything_else() {
    let stack = Stack::start("oversized").await;
    let mut p = params();
    p.push(("Junk".into(), "x".repeat(200 * 1024)));
    let sig = stack.twilio_signature("/twilio/voice/inbound", &p);
    let resp = stack
        .post_twilio("/twilio/voice/inbound", &p, Some(&sig))
        .await;
    assert_eq!(resp.status(), 413);
}
