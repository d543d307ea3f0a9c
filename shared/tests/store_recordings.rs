//! Recording offload jobs against DynamoDB Local: idempotent creation under
//! concurrency, leases, forward-only stages, release with retries, and the
//! per-call listing. Each test has its own table.

use std::time::Duration;

use shared::ids::{CallSid, ConferenceSid, RecordingSid};
use shared::store::Table;
use shared::store::recordings::{
    self, CallIdSource, Claim, Created, LeaseError, RecordingFacts, ReleaseTo, Stage, VerifiedCopy,
};
use shared::store::testing::fresh_table;
use time::macros::datetime;

async fn table() -> Table {
    fresh_table("test-recordings").await
}

const LEASE: Duration = Duration::from_secs(60);

fn facts(call: Option<&CallSid>) -> RecordingFacts {
    RecordingFacts {
        call_id: call.map(|c| (c.clone(), CallIdSource::Query)),
        call_sid: call.cloned(),
        conference_sid: Some(ConferenceSid::random()),
        duration_secs: Some(42),
        channels: Some(1),
        source: Some("DialConference".into()),
        start_time: Some(datetime!(2026-11-23 10:00:00 UTC)),
        media_url: None,
    }
}

#[tokio::test]
async fn concurrent_creates_make_one_job() {
    let table = table().await;
    let sid = RecordingSid::random();
    let f = facts(None);
    let now = datetime!(2026-11-23 10:01:00 UTC);
    let results =
        futures::future::join_all((0..10).map(|_| recordings::create(&table, &sid, &f, now))).await;
    let new = results
        .iter()
        .filter(|r| matches!(r, Ok(Created::New(_))))
        .count();
    assert_eq!(new, 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok()));
    let job = recordings::get(&table, &sid).await.unwrap().unwrap();
    assert_eq!(job.stage, Stage::Pending);
    assert_eq!(job.duration_secs, Some(42));
    // A late absent callback does not overwrite the job.
    let again = recordings::record_outcome(&table, &sid, Stage::Absent, Some("1"), &f, now)
        .await
        .unwrap();
    assert!(matches!(again, Created::Existing(j) if j.stage == Stage::Pending));
}

#[tokio::test]
async fn outcomes_without_media_are_recorded_with_their_error_code() {
    let table = table().await;
    let sid = RecordingSid::random();
    let now = datetime!(2026-11-23 10:01:00 UTC);
    let r = recordings::record_outcome(
        &table,
        &sid,
        Stage::Absent,
        Some("13617"),
        &facts(None),
        now,
    )
    .await
    .unwrap();
    assert!(matches!(r, Created::New(_)));
    let job = recordings::get(&table, &sid).await.unwrap().unwrap();
    assert_eq!(
        (job.stage, job.error_code.as_deref()),
        (Stage::Absent, Some("13617"))
    );
    // Nothing to claim.
    let claim = recordings::claim(&table, &sid, "w1", now, LEASE)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Finished(_)));
    assert!(
        recordings::record_outcome(&table, &sid, Stage::Done, None, &facts(None), now)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn one_lease_at_a_time_and_expired_leases_are_taken_over() {
    let table = table().await;
    let sid = RecordingSid::random();
    let t0 = datetime!(2026-11-23 10:01:00 UTC);
    assert_eq!(
        recordings::claim(&table, &sid, "w1", t0, LEASE)
            .await
            .unwrap(),
        Claim::Missing
    );
    recordings::create(&table, &sid, &facts(None), t0)
        .await
        .unwrap();
    let claims = futures::future::join_all((0..8).map(|i| {
        let table = &table;
        let sid = &sid;
        async move { recordings::claim(table, sid, &format!("w{i}"), t0, LEASE).await }
    }))
    .await;
    let won: Vec<_> = claims
        .iter()
        .filter_map(|c| match c {
            Ok(Claim::Claimed(j)) => j.lease_owner.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(won.len(), 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, Ok(Claim::Claimed(_)) | Ok(Claim::Leased(_))))
    );
    let winner = won[0].clone();
    // The lease expires: another worker takes over, the old owner's writes fail.
    let later = t0 + Duration::from_secs(61);
    let Claim::Claimed(job) = recordings::claim(&table, &sid, "w-new", later, LEASE)
        .await
        .unwrap()
    else {
        panic!("expired lease not taken over")
    };
    assert_eq!(job.attempts, 2);
    let lost = recordings::begin_upload(&table, &sid, &winner, "k", Some("u1"), later).await;
    assert!(matches!(lost, Err(LeaseError::Lost(_))), "{lost:?}");
    recordings::begin_upload(&table, &sid, "w-new", "k", Some("u2"), later)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_stages_move_forward_and_release_counts_retries() {
    let table = table().await;
    let sid = RecordingSid::random();
    let call = CallSid::random();
    let t = datetime!(2026-11-23 10:01:00 UTC);
    recordings::create(&table, &sid, &facts(None), t)
        .await
        .unwrap();
    recordings::mark_enqueued(&table, &sid, t).await.unwrap();

    // Attempt 1: upload started, then failed and undone.
    let Claim::Claimed(job) = recordings::claim(&table, &sid, "a1", t, LEASE)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(job.enqueued_at.is_some());
    let job = recordings::set_call(&table, &job, "a1", &call, CallIdSource::Conference, t)
        .await
        .unwrap();
    assert_eq!(job.call_id_source, Some(CallIdSource::Conference));
    let job = recordings::begin_upload(&table, &sid, "a1", "k1", Some("up-1"), t)
        .await
        .unwrap();
    assert_eq!(
        (job.stage, job.upload_id.as_deref()),
        (Stage::Uploading, Some("up-1"))
    );
    // Done is refused before verified.
    assert!(recordings::mark_done(&table, &sid, "a1", t).await.is_err());
    let job = recordings::release(&table, &sid, "a1", ReleaseTo::Pending, "media cut", t)
        .await
        .unwrap();
    assert_eq!(job.stage, Stage::Pending);
    assert_eq!(
        (job.retries, job.upload_id.clone(), job.lease_owner.clone()),
        (1, None, None)
    );
    assert_eq!(job.last_error.as_deref(), Some("media cut"));

    // Attempt 2: verified, delete failed, kept verified.
    let Claim::Claimed(_) = recordings::claim(&table, &sid, "a2", t, LEASE)
        .await
        .unwrap()
    else {
        panic!()
    };
    recordings::begin_upload(&table, &sid, "a2", "k1", Some("up-2"), t)
        .await
        .unwrap();
    let copy = VerifiedCopy {
        object_key: "k1",
        bytes: 672_044,
        checksum: "AAAAAAAAAAA=",
        content_type: "audio/x-wav",
    };
    let job = recordings::mark_verified(&table, &sid, "a2", &copy, t)
        .await
        .unwrap();
    assert_eq!(
        (job.stage, job.bytes, job.upload_id.clone()),
        (Stage::Verified, Some(672_044), None)
    );
    let job = recordings::release(&table, &sid, "a2", ReleaseTo::Keep, "twilio 500", t)
        .await
        .unwrap();
    assert_eq!((job.stage, job.retries), (Stage::Verified, 2));
    // A verified job is never sent back to pending.
    let Claim::Claimed(_) = recordings::claim(&table, &sid, "a3", t, LEASE)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(
        recordings::release(&table, &sid, "a3", ReleaseTo::Pending, "x", t)
            .await
            .is_err()
    );
    let job = recordings::mark_done(&table, &sid, "a3", t).await.unwrap();
    assert_eq!((job.stage, job.lease_owner.clone()), (Stage::Done, None));
    assert!(matches!(
        recordings::claim(&table, &sid, "a4", t, LEASE)
            .await
            .unwrap(),
        Claim::Finished(_)
    ));

    // Listed under its call, with the verified copy.
    let listed = recordings::list_for_call(&table, &call).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].object_key.as_deref(), Some("k1"));
}

#[tokio::test]
async fn a_calls_recordings_are_listed_in_order() {
    let table = table().await;
    let call = CallSid::random();
    let other = CallSid::random();
    let t = datetime!(2026-11-23 10:01:00 UTC);
    let mut sids = Vec::new();
    for minute in [5u8, 1, 3] {
        let sid = RecordingSid::random();
        let mut f = facts(Some(&call));
        f.start_time =
            Some(datetime!(2026-11-23 10:00:00 UTC) + Duration::from_secs(60 * u64::from(minute)));
        recordings::create(&table, &sid, &f, t).await.unwrap();
        sids.push((minute, sid));
    }
    recordings::create(&table, &RecordingSid::random(), &facts(Some(&other)), t)
        .await
        .unwrap();
    sids.sort();
    let listed: Vec<_> = recordings::list_for_call(&table, &call)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.recording_sid)
        .collect();
    assert_eq!(listed, sids.into_iter().map(|(_, s)| s).collect::<Vec<_>>());
}
