//! Supervision sessions and their audit trail against DynamoDB Local: the
//! request steps (claim, confirm, cancel), conference events (echoes of our
//! own requests, someone else's change, hang-ups, the call ending), order and
//! idempotency. Each test has its own table.

use shared::ids::{CallSid, ClientIdentity};
use shared::store::Table;
use shared::store::calls::ParticipantFlags;
use shared::store::supervision::{
    self, Action, AuditEntry, Cause, ChangeStart, ConferenceEvent, Followed, JoinRequest,
    JoinStart, Mode, Pending, Session, SessionState,
};
use shared::store::testing::fresh_table;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-11-23 10:00:00 UTC);
const RETENTION: Duration = Duration::days(30);

async fn table() -> Table {
    fresh_table("test-supervision").await
}

fn sid(n: u32) -> CallSid {
    CallSid::parse(&format!("CA{n:032x}")).expect("valid CallSid")
}

fn who(name: &str) -> ClientIdentity {
    ClientIdentity::parse(name).expect("valid identity")
}

fn at(ms: i64) -> OffsetDateTime {
    T0 + Duration::milliseconds(ms)
}

fn flags_of(mode: Mode) -> ParticipantFlags {
    ParticipantFlags {
        muted: mode == Mode::Monitor,
        hold: false,
        coaching: mode == Mode::Whisper,
    }
}

/// Claims and confirms a join of `sup` on call 1, with leg `leg`.
async fn join(t: &Table, sup: &ClientIdentity, mode: Mode, leg: &CallSid, ms: i64) -> Session {
    let agent = who("alice");
    let claimed = supervision::begin_join(
        t,
        &JoinRequest {
            call_id: &sid(1),
            supervisor: sup,
            agent: Some(&agent),
            mode,
        },
        at(ms),
        RETENTION,
    )
    .await
    .expect("begin join");
    let JoinStart::Claimed { session, takeover } = claimed else {
        panic!("not claimed: {claimed:?}");
    };
    assert!(!takeover);
    assert_eq!(session.state, SessionState::Joining);
    supervision::confirm_join(t, &sid(1), sup, session.session, leg, at(ms + 1), RETENTION)
        .await
        .expect("confirm")
        .expect("the claim holds")
}

async fn switch(t: &Table, sup: &ClientIdentity, mode: Mode, ms: i64) -> Session {
    let ChangeStart::Claimed(s) =
        supervision::begin_change(t, &sid(1), sup, Pending::Switch(mode), at(ms), RETENTION)
            .await
            .expect("begin switch")
    else {
        panic!("switch not claimed");
    };
    supervision::commit_switch(t, &sid(1), sup, s.session, mode, at(ms + 1), RETENTION)
        .await
        .expect("commit")
        .expect("the claim holds")
}

/// One conference callback, its fields spelled out as Twilio sends them.
#[allow(clippy::too_many_arguments)]
async fn event(
    t: &Table,
    name: &str,
    leg: &CallSid,
    label: &str,
    flags: Option<ParticipantFlags>,
    reason: Option<&str>,
    sequence: u64,
    ms: i64,
) -> Followed {
    supervision::follow_conference_event(
        t,
        &sid(1),
        &ConferenceEvent {
            event: name,
            participant: Some(leg),
            label: Some(label),
            flags,
            reason,
            sequence,
        },
        at(ms),
        RETENTION,
    )
    .await
    .expect("follow")
}

fn steps(trail: &[AuditEntry]) -> Vec<(String, Action, Mode, Cause)> {
    trail
        .iter()
        .map(|e| (e.supervisor.to_string(), e.action, e.mode, e.cause))
        .collect()
}

#[tokio::test]
async fn join_switch_and_leave_are_audited_in_order_by_call_and_by_supervisor() {
    let t = table().await;
    let sam = who("sam");
    let leg = sid(100);
    let s = join(&t, &sam, Mode::Monitor, &leg, 0).await;
    assert_eq!(s.state, SessionState::Active);
    assert_eq!(s.session, 1);
    assert_eq!(s.participant, Some(leg.clone()));
    assert_eq!(s.agent, Some(who("alice")));
    switch(&t, &sam, Mode::Whisper, 10).await;
    switch(&t, &sam, Mode::Barge, 20).await;
    switch(&t, &sam, Mode::Monitor, 30).await;
    let ChangeStart::Claimed(s) =
        supervision::begin_change(&t, &sid(1), &sam, Pending::Leave, at(40), RETENTION)
            .await
            .unwrap()
    else {
        panic!("leave not claimed");
    };
    let ended = supervision::end(
        &t,
        &sid(1),
        &sam,
        Some(s.session),
        Cause::Request,
        at(41),
        RETENTION,
    )
    .await
    .unwrap()
    .expect("ended");
    assert_eq!(ended.state, SessionState::Ended);
    assert_eq!(ended.end_cause, Some(Cause::Request));

    let by_call = supervision::audit_of_call(&t, &sid(1)).await.unwrap();
    let expected = vec![
        (
            "sam".to_owned(),
            Action::Join,
            Mode::Monitor,
            Cause::Request,
        ),
        (
            "sam".to_owned(),
            Action::Switch,
            Mode::Whisper,
            Cause::Request,
        ),
        (
            "sam".to_owned(),
            Action::Switch,
            Mode::Barge,
            Cause::Request,
        ),
        (
            "sam".to_owned(),
            Action::Switch,
            Mode::Monitor,
            Cause::Request,
        ),
        (
            "sam".to_owned(),
            Action::Leave,
            Mode::Monitor,
            Cause::Request,
        ),
    ];
    assert_eq!(steps(&by_call), expected);
    assert_eq!(
        by_call.iter().map(|e| e.from_mode).collect::<Vec<_>>(),
        [
            None,
            Some(Mode::Monitor),
            Some(Mode::Whisper),
            Some(Mode::Barge),
            None
        ]
    );
    assert!(
        by_call
            .windows(2)
            .all(|w| w[0].at <= w[1].at && w[0].step < w[1].step)
    );
    assert!(
        by_call
            .iter()
            .all(|e| e.agent == Some(who("alice")) && e.call_id == sid(1))
    );
    let by_sup = supervision::audit_of_supervisor(&t, &sam).await.unwrap();
    assert_eq!(by_sup, by_call);
    assert!(
        supervision::audit_of_supervisor(&t, &who("sue"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn joining_again_is_idempotent_and_a_second_request_cannot_join_twice() {
    let t = table().await;
    let sam = who("sam");
    let req = JoinRequest {
        call_id: &sid(1),
        supervisor: &sam,
        agent: None,
        mode: Mode::Monitor,
    };
    // Five concurrent claims: exactly one wins.
    let attempts =
        futures::future::join_all((0..5).map(|_| supervision::begin_join(&t, &req, T0, RETENTION)))
            .await;
    let claimed: Vec<_> = attempts
        .iter()
        .filter(|a| matches!(a, Ok(JoinStart::Claimed { .. })))
        .collect();
    assert_eq!(claimed.len(), 1, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .all(|a| matches!(a, Ok(JoinStart::Claimed { .. } | JoinStart::Busy(_))))
    );
    supervision::confirm_join(&t, &sid(1), &sam, 1, &sid(100), at(5), RETENTION)
        .await
        .unwrap()
        .expect("confirmed");
    // Confirming twice changes nothing.
    assert!(
        supervision::confirm_join(&t, &sid(1), &sam, 1, &sid(100), at(6), RETENTION)
            .await
            .unwrap()
            .is_none()
    );
    match supervision::begin_join(&t, &req, at(10), RETENTION)
        .await
        .unwrap()
    {
        JoinStart::Active(s) => assert_eq!((s.mode, s.session), (Mode::Monitor, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        supervision::audit_of_call(&t, &sid(1)).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_failed_join_is_not_audited_and_a_crashed_claim_is_taken_over() {
    let t = table().await;
    let sam = who("sam");
    let req = JoinRequest {
        call_id: &sid(1),
        supervisor: &sam,
        agent: None,
        mode: Mode::Whisper,
    };
    let JoinStart::Claimed { session, .. } = supervision::begin_join(&t, &req, T0, RETENTION)
        .await
        .unwrap()
    else {
        panic!("not claimed")
    };
    supervision::abandon_join(&t, &sid(1), &sam, session.session, at(1), RETENTION)
        .await
        .unwrap();
    let s = supervision::get(&t, &sid(1), &sam).await.unwrap().unwrap();
    assert_eq!(s.state, SessionState::Ended);
    assert_eq!(s.end_cause, Some(Cause::JoinFailed));
    assert!(
        supervision::audit_of_call(&t, &sid(1))
            .await
            .unwrap()
            .is_empty()
    );

    // Joining again is a new session.
    let JoinStart::Claimed { session, takeover } =
        supervision::begin_join(&t, &req, at(2), RETENTION)
            .await
            .unwrap()
    else {
        panic!("not claimed")
    };
    assert_eq!((session.session, takeover), (2, false));
    // A claim younger than the timeout keeps others out; an older one is
    // taken over, keeping its number.
    assert!(matches!(
        supervision::begin_join(&t, &req, at(3), RETENTION)
            .await
            .unwrap(),
        JoinStart::Busy(_)
    ));
    let later = at(2) + supervision::CLAIM_TIMEOUT + Duration::seconds(1);
    match supervision::begin_join(&t, &req, later, RETENTION)
        .await
        .unwrap()
    {
        JoinStart::Claimed { session, takeover } => {
            assert_eq!((session.session, takeover), (2, true))
        }
        other => panic!("{other:?}"),
    }
    // (The crashed request cannot confirm any more: CLAIM_TIMEOUT is longer
    // than the function's timeout. The taker-over clears the label at Twilio
    // before creating its participant.)
}

#[tokio::test]
async fn echoes_of_our_requests_are_noted_and_someone_elses_change_is_followed() {
    let t = table().await;
    let sam = who("sam");
    let leg = sid(100);
    let label = "supervisor-sam";
    join(&t, &sam, Mode::Monitor, &leg, 0).await;
    // The join's own event, then two quick switches whose events arrive
    // after both were committed: all echoes, none is a switch.
    assert_eq!(
        event(
            &t,
            "participant-join",
            &leg,
            label,
            Some(flags_of(Mode::Monitor)),
            None,
            5,
            2
        )
        .await,
        Followed::Noted
    );
    switch(&t, &sam, Mode::Whisper, 10).await;
    switch(&t, &sam, Mode::Barge, 20).await;
    assert_eq!(
        event(
            &t,
            "participant-unmute",
            &leg,
            label,
            Some(flags_of(Mode::Whisper)),
            None,
            6,
            30
        )
        .await,
        Followed::Noted
    );
    assert_eq!(
        event(
            &t,
            "participant-modify",
            &leg,
            label,
            Some(flags_of(Mode::Whisper)),
            None,
            7,
            31
        )
        .await,
        Followed::Noted,
        "the second event of the same change"
    );
    assert_eq!(
        event(
            &t,
            "participant-modify",
            &leg,
            label,
            Some(flags_of(Mode::Barge)),
            None,
            8,
            32
        )
        .await,
        Followed::Noted
    );
    let s = supervision::get(&t, &sid(1), &sam).await.unwrap().unwrap();
    assert_eq!(s.mode, Mode::Barge);
    assert_eq!(s.awaiting, [Mode::Barge], "only the newest echo is kept");
    // Someone mutes the supervisor at Twilio: the session follows.
    let followed = event(
        &t,
        "participant-mute",
        &leg,
        label,
        Some(flags_of(Mode::Monitor)),
        None,
        9,
        40,
    )
    .await;
    assert!(
        matches!(&followed, Followed::Switched(s) if s.mode == Mode::Monitor),
        "{followed:?}"
    );
    // ...and back to barge: no longer taken for the echo of our barge.
    let followed = event(
        &t,
        "participant-unmute",
        &leg,
        label,
        Some(flags_of(Mode::Barge)),
        None,
        10,
        45,
    )
    .await;
    assert!(
        matches!(&followed, Followed::Switched(s) if s.mode == Mode::Barge),
        "{followed:?}"
    );
    // Replayed or older events change nothing.
    assert_eq!(
        event(
            &t,
            "participant-mute",
            &leg,
            label,
            Some(flags_of(Mode::Monitor)),
            None,
            9,
            41
        )
        .await,
        Followed::Stale
    );
    assert_eq!(
        event(
            &t,
            "participant-unmute",
            &leg,
            label,
            Some(flags_of(Mode::Barge)),
            None,
            8,
            42
        )
        .await,
        Followed::Stale
    );
    // Another leg with the same label (an earlier one) is not this session's.
    assert_eq!(
        event(
            &t,
            "participant-leave",
            &sid(99),
            label,
            None,
            Some("participant_hung_up"),
            20,
            43
        )
        .await,
        Followed::Ignored
    );
    // Agent and customer events are none of supervision's business.
    assert_eq!(
        event(
            &t,
            "participant-mute",
            &sid(2),
            "agent",
            Some(flags_of(Mode::Monitor)),
            None,
            21,
            44
        )
        .await,
        Followed::Ignored
    );
    let trail = supervision::audit_of_call(&t, &sid(1)).await.unwrap();
    assert_eq!(
        steps(&trail),
        vec![
            (
                "sam".to_owned(),
                Action::Join,
                Mode::Monitor,
                Cause::Request
            ),
            (
                "sam".to_owned(),
                Action::Switch,
                Mode::Whisper,
                Cause::Request
            ),
            (
                "sam".to_owned(),
                Action::Switch,
                Mode::Barge,
                Cause::Request
            ),
            (
                "sam".to_owned(),
                Action::Switch,
                Mode::Monitor,
                Cause::ConferenceEvent
            ),
            (
                "sam".to_owned(),
                Action::Switch,
                Mode::Barge,
                Cause::ConferenceEvent
            ),
        ]
    );
}

#[tokio::test]
async fn an_echo_before_the_commit_is_not_a_switch() {
    let t = table().await;
    let sam = who("sam");
    let leg = sid(100);
    join(&t, &sam, Mode::Monitor, &leg, 0).await;
    let ChangeStart::Claimed(s) = supervision::begin_change(
        &t,
        &sid(1),
        &sam,
        Pending::Switch(Mode::Whisper),
        at(10),
        RETENTION,
    )
    .await
    .unwrap() else {
        panic!()
    };
    // A second change while one is in flight is refused.
    assert!(matches!(
        supervision::begin_change(&t, &sid(1), &sam, Pending::Leave, at(11), RETENTION)
            .await
            .unwrap(),
        ChangeStart::Busy(_)
    ));
    assert_eq!(
        event(
            &t,
            "participant-modify",
            &leg,
            "supervisor-sam",
            Some(flags_of(Mode::Whisper)),
            None,
            3,
            12
        )
        .await,
        Followed::Noted
    );
    supervision::commit_switch(
        &t,
        &sid(1),
        &sam,
        s.session,
        Mode::Whisper,
        at(13),
        RETENTION,
    )
    .await
    .unwrap()
    .expect("committed");
    // A refused switch leaves nothing awaited.
    let ChangeStart::Claimed(s) = supervision::begin_change(
        &t,
        &sid(1),
        &sam,
        Pending::Switch(Mode::Barge),
        at(20),
        RETENTION,
    )
    .await
    .unwrap() else {
        panic!()
    };
    let s = supervision::cancel_change(
        &t,
        &sid(1),
        &sam,
        s.session,
        Pending::Switch(Mode::Barge),
        at(21),
        RETENTION,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (s.mode, s.pending, s.awaiting.clone()),
        (Mode::Whisper, None, vec![Mode::Whisper])
    );
    let trail = supervision::audit_of_call(&t, &sid(1)).await.unwrap();
    assert_eq!(trail.len(), 2);
    assert_eq!(trail[1].action, Action::Switch);
    assert_eq!(trail[1].cause, Cause::Request);
}

#[tokio::test]
async fn hang_ups_and_the_call_ending_end_sessions_once() {
    let t = table().await;
    let (sam, sue, ann) = (who("sam"), who("sue"), who("ann"));
    join(&t, &sam, Mode::Whisper, &sid(100), 0).await;
    join(&t, &sue, Mode::Monitor, &sid(101), 10).await;
    // sam hangs up his softphone mid-whisper.
    let followed = event(
        &t,
        "participant-leave",
        &sid(100),
        "supervisor-sam",
        None,
        Some("participant_hung_up"),
        4,
        20,
    )
    .await;
    assert!(
        matches!(&followed, Followed::Ended(v) if v.len() == 1 && v[0].end_cause == Some(Cause::HungUp)),
        "{followed:?}"
    );
    // The same event again (a retry) changes nothing.
    assert_eq!(
        event(
            &t,
            "participant-leave",
            &sid(100),
            "supervisor-sam",
            None,
            Some("participant_hung_up"),
            4,
            21
        )
        .await,
        Followed::Ignored
    );
    // ann is still joining when the call ends.
    let JoinStart::Claimed { session, .. } = supervision::begin_join(
        &t,
        &JoinRequest {
            call_id: &sid(1),
            supervisor: &ann,
            agent: None,
            mode: Mode::Barge,
        },
        at(30),
        RETENTION,
    )
    .await
    .unwrap() else {
        panic!()
    };
    // The customer's leg leaves: the call is over.
    let followed = event(
        &t,
        "participant-leave",
        &sid(1),
        "customer",
        None,
        Some("participant_hung_up"),
        9,
        40,
    )
    .await;
    let Followed::Ended(ended) = followed else {
        panic!("{followed:?}")
    };
    let mut who_ended: Vec<_> = ended.iter().map(|s| s.supervisor.to_string()).collect();
    who_ended.sort();
    assert_eq!(who_ended, ["ann", "sue"]);
    assert!(ended.iter().all(|s| s.end_cause == Some(Cause::CallEnded)));
    // ann's join can no longer be confirmed: her request removes the participant.
    assert!(
        supervision::confirm_join(
            &t,
            &sid(1),
            &ann,
            session.session,
            &sid(102),
            at(41),
            RETENTION
        )
        .await
        .unwrap()
        .is_none()
    );
    // conference-end afterwards: nothing left to end.
    let end = supervision::follow_conference_event(
        &t,
        &sid(1),
        &ConferenceEvent {
            event: "conference-end",
            participant: None,
            label: None,
            flags: None,
            reason: None,
            sequence: 10,
        },
        at(50),
        RETENTION,
    )
    .await
    .unwrap();
    assert_eq!(end, Followed::Ignored);
    let trail = supervision::audit_of_call(&t, &sid(1)).await.unwrap();
    assert_eq!(
        steps(&trail),
        vec![
            (
                "sam".to_owned(),
                Action::Join,
                Mode::Whisper,
                Cause::Request
            ),
            (
                "sue".to_owned(),
                Action::Join,
                Mode::Monitor,
                Cause::Request
            ),
            (
                "sam".to_owned(),
                Action::Leave,
                Mode::Whisper,
                Cause::HungUp
            ),
            (
                "sue".to_owned(),
                Action::Leave,
                Mode::Monitor,
                Cause::CallEnded
            ),
        ]
    );
    let sessions = supervision::of_call(&t, &sid(1)).await.unwrap();
    assert_eq!(sessions.len(), 3);
    assert!(sessions.iter().all(|s| s.state == SessionState::Ended));
}

#[tokio::test]
async fn a_leave_we_asked_for_is_recorded_as_ours_even_if_the_event_comes_first() {
    let t = table().await;
    let sam = who("sam");
    join(&t, &sam, Mode::Barge, &sid(100), 0).await;
    let ChangeStart::Claimed(s) =
        supervision::begin_change(&t, &sid(1), &sam, Pending::Leave, at(10), RETENTION)
            .await
            .unwrap()
    else {
        panic!()
    };
    let followed = event(
        &t,
        "participant-leave",
        &sid(100),
        "supervisor-sam",
        None,
        Some("participant_kicked"),
        5,
        11,
    )
    .await;
    assert!(matches!(followed, Followed::Ended(_)), "{followed:?}");
    // The request's own end finds the session ended already.
    assert!(
        supervision::end(
            &t,
            &sid(1),
            &sam,
            Some(s.session),
            Cause::Request,
            at(12),
            RETENTION
        )
        .await
        .unwrap()
        .is_none()
    );
    let trail = supervision::audit_of_call(&t, &sid(1)).await.unwrap();
    assert_eq!(
        steps(&trail),
        vec![
            ("sam".to_owned(), Action::Join, Mode::Barge, Cause::Request),
            ("sam".to_owned(), Action::Leave, Mode::Barge, Cause::Request),
        ]
    );
}

#[tokio::test]
async fn a_leg_that_fails_while_joining_ends_the_claim_without_an_audit_entry() {
    let t = table().await;
    let sam = who("sam");
    let JoinStart::Claimed { session, .. } = supervision::begin_join(
        &t,
        &JoinRequest {
            call_id: &sid(1),
            supervisor: &sam,
            agent: None,
            mode: Mode::Monitor,
        },
        T0,
        RETENTION,
    )
    .await
    .unwrap() else {
        panic!()
    };
    let followed = event(
        &t,
        "participant-leave",
        &sid(100),
        "supervisor-sam",
        None,
        Some("participant_not_answered"),
        3,
        5,
    )
    .await;
    assert!(
        matches!(&followed, Followed::Ended(v) if v[0].end_cause == Some(Cause::NotAnswered)),
        "{followed:?}"
    );
    assert!(
        supervision::confirm_join(
            &t,
            &sid(1),
            &sam,
            session.session,
            &sid(100),
            at(6),
            RETENTION
        )
        .await
        .unwrap()
        .is_none()
    );
    assert!(
        supervision::audit_of_call(&t, &sid(1))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn entries_never_go_back_in_time_when_a_clock_lags() {
    let t = table().await;
    let sam = who("sam");
    join(&t, &sam, Mode::Monitor, &sid(100), 1000).await;
    // The next writer's clock is a second behind.
    switch(&t, &sam, Mode::Barge, 0).await;
    let trail = supervision::audit_of_call(&t, &sid(1)).await.unwrap();
    assert_eq!(trail.len(), 2);
    assert_eq!(trail[0].action, Action::Join);
    assert!(trail[0].at <= trail[1].at, "{trail:?}");
}
