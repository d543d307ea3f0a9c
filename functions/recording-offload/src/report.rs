//! What a backlog migration or a sweep found and did, and what storage costs
//! before (at Twilio) and after (in S3).
//!
//! Prices are list prices in USD, us-east-1, per month; they are estimates for
//! an operator deciding whether to migrate, not a bill:
//! - Twilio recording storage: $0.0005 per minute per month, on the
//!   recording's duration (we sum exact seconds, then divide by 60).
//! - S3, per GB-month with GB = 10^9 bytes as AWS bills: Standard $0.023;
//!   the archive tier the bucket's lifecycle rule moves objects to
//!   (`RecordingsArchiveStorageClass`) at the prices in [`ArchiveClass`].
//!
//! A dry run only knows durations, so its bytes are estimated from the
//! format ([`estimate_bytes`]); a real run reports the bytes actually copied.

use serde::{Deserialize, Serialize};
use shared::twilio::rest::MediaFormat;

/// Twilio's storage price: USD per recorded minute per month.
pub const TWILIO_USD_PER_MINUTE_MONTH: f64 = 0.0005;
/// S3 Standard: USD per GB-month.
pub const S3_STANDARD_USD_PER_GB_MONTH: f64 = 0.023;
/// AWS bills storage in decimal gigabytes.
const GB: f64 = 1e9;

/// WAV as Twilio serves it: 8 kHz, 16-bit PCM, per channel.
pub const WAV_BYTES_PER_SECOND_PER_CHANNEL: u64 = 16_000;
/// The RIFF header in front of the samples.
pub const WAV_HEADER_BYTES: u64 = 44;
/// MP3 as Twilio serves it, assumed 32 kbit/s per channel: the rate at which
/// S3 Standard is "about 90 times" cheaper than Twilio per minute (the WAV
/// rate gives the 23 times the issue also quotes). The simulator serves
/// 128 kbit/s MP3 frames, so against it an MP3 dry run estimates a quarter of
/// the bytes the real run copies; WAV estimates are exact there.
pub const MP3_BYTES_PER_SECOND_PER_CHANNEL: u64 = 4_000;

/// Bytes of a recording of `seconds` and `channels` in `format`, before it is copied.
pub fn estimate_bytes(format: MediaFormat, seconds: u64, channels: u32) -> u64 {
    let channels = u64::from(channels.max(1));
    match format {
        MediaFormat::Wav => {
            WAV_HEADER_BYTES + seconds * WAV_BYTES_PER_SECOND_PER_CHANNEL * channels
        }
        MediaFormat::Mp3 => seconds * MP3_BYTES_PER_SECOND_PER_CHANNEL * channels,
    }
}

/// The S3 storage class a lifecycle rule archives recordings to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ArchiveClass {
    StandardIa,
    /// Priced at its Archive Instant Access tier, where objects settle after 90 days.
    IntelligentTiering,
    GlacierIr,
    /// S3 Glacier Flexible Retrieval.
    Glacier,
    DeepArchive,
}

impl ArchiveClass {
    pub fn usd_per_gb_month(self) -> f64 {
        match self {
            Self::StandardIa => 0.0125,
            Self::IntelligentTiering => 0.004,
            Self::GlacierIr => 0.004,
            Self::Glacier => 0.0036,
            Self::DeepArchive => 0.00099,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandardIa => "STANDARD_IA",
            Self::IntelligentTiering => "INTELLIGENT_TIERING",
            Self::GlacierIr => "GLACIER_IR",
            Self::Glacier => "GLACIER",
            Self::DeepArchive => "DEEP_ARCHIVE",
        }
    }
}

impl std::str::FromStr for ArchiveClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).map_err(|_| {
            format!(
                "{s:?} is not one of STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE"
            )
        })
    }
}

/// A count of recordings with their total duration and size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub recordings: u64,
    pub seconds: u64,
    pub bytes: u64,
}

impl Tally {
    pub fn add(&mut self, seconds: u64, bytes: u64) {
        self.recordings += 1;
        self.seconds += seconds;
        self.bytes += bytes;
    }

    pub fn minutes(&self) -> f64 {
        self.seconds as f64 / 60.0
    }
}

/// Monthly storage cost of a set of recordings, at Twilio and in S3.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub twilio_usd_per_month: f64,
    pub s3_standard_usd_per_month: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_class: Option<ArchiveClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_archive_usd_per_month: Option<f64>,
}

impl Cost {
    pub fn of(tally: &Tally, archive: Option<ArchiveClass>) -> Self {
        let gb = tally.bytes as f64 / GB;
        Self {
            twilio_usd_per_month: tally.minutes() * TWILIO_USD_PER_MINUTE_MONTH,
            s3_standard_usd_per_month: gb * S3_STANDARD_USD_PER_GB_MONTH,
            archive_class: archive,
            s3_archive_usd_per_month: archive.map(|a| gb * a.usd_per_gb_month()),
        }
    }
}

/// One recording that could not be finished in this run (it stays at Twilio).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub recording_sid: String,
    pub error: String,
}

/// At most this many failures are listed; `failed` counts all of them.
pub const MAX_LISTED_FAILURES: usize = 50;

/// The outcome of a migration or sweep run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub dry_run: bool,
    /// `wav` or `mp3`: what is (or would be) copied.
    pub format: &'static str,
    /// Recordings Twilio listed in the range (every status).
    pub listed: u64,
    /// What needed work: copied then deleted, or (copy already verified) only
    /// deleted. Bytes: estimated in a dry run; in a real run, what S3 holds
    /// for the recordings finished.
    pub to_migrate: Tally,
    /// Whether `to_migrate.bytes` is an estimate (dry run, or only enqueued).
    pub bytes_estimated: bool,
    /// `to_migrate`'s bytes estimated from durations ([`estimate_bytes`]),
    /// in every run, so a real run's report shows how the estimate compares.
    pub estimated_bytes: u64,
    /// Finished in this run: verified in S3 and deleted at Twilio.
    pub migrated: Tally,
    /// Of `migrated`, those whose copy was already verified (only the delete was left).
    pub deletes_retried: u64,
    /// Handed to the offload queue instead of copied here (the sweep).
    pub enqueued: u64,
    /// Leased by a worker right now: left to it.
    pub in_progress: u64,
    /// Not `completed` at Twilio (still recording, absent, failed): nothing to copy.
    pub not_completed: u64,
    /// Younger than the grace period (the sweep): the status callback handles them.
    pub too_recent: u64,
    pub failed: u64,
    pub failures: Vec<Failure>,
    /// What `to_migrate` costs a month at Twilio now, and in S3 after.
    pub cost: Cost,
    /// Twilio's monthly cost minus S3 Standard's.
    pub monthly_saving_usd: f64,
}

impl Report {
    pub fn new(dry_run: bool, format: MediaFormat) -> Self {
        Self {
            dry_run,
            format: format.extension(),
            listed: 0,
            to_migrate: Tally::default(),
            bytes_estimated: dry_run,
            estimated_bytes: 0,
            migrated: Tally::default(),
            deletes_retried: 0,
            enqueued: 0,
            in_progress: 0,
            not_completed: 0,
            too_recent: 0,
            failed: 0,
            failures: Vec::new(),
            cost: Cost::of(&Tally::default(), None),
            monthly_saving_usd: 0.0,
        }
    }

    pub fn fail(&mut self, recording_sid: &str, error: impl std::fmt::Display) {
        self.failed += 1;
        if self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push(Failure {
                recording_sid: recording_sid.to_owned(),
                error: error.to_string(),
            });
        }
    }

    /// Fills in the costs once the tallies are final.
    pub fn finish(&mut self, archive: Option<ArchiveClass>) {
        self.cost = Cost::of(&self.to_migrate, archive);
        self.monthly_saving_usd =
            self.cost.twilio_usd_per_month - self.cost.s3_standard_usd_per_month;
    }

    /// Whether a second run would find nothing left to do.
    pub fn complete(&self) -> bool {
        self.failed == 0
            && self.in_progress == 0
            && (self.dry_run
                || self.migrated.recordings + self.enqueued >= self.to_migrate.recordings)
    }

    /// The report as an operator reads it in a terminal.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let title = if self.dry_run {
            "Backlog migration: DRY RUN (nothing copied, nothing deleted)"
        } else {
            "Backlog migration"
        };
        let _ = writeln!(s, "{title}");
        let _ = writeln!(s, "  format                  {}", self.format);
        let _ = writeln!(s, "  listed at Twilio        {}", self.listed);
        let _ = writeln!(
            s,
            "  to migrate              {} recordings, {:.1} minutes, {} bytes ({})",
            self.to_migrate.recordings,
            self.to_migrate.minutes(),
            self.to_migrate.bytes,
            if self.bytes_estimated {
                "estimated from durations"
            } else {
                "as stored in S3"
            }
        );
        if !self.dry_run {
            let _ = writeln!(
                s,
                "  migrated                {} recordings, {:.1} minutes, {} bytes (of which {} only needed the delete)",
                self.migrated.recordings,
                self.migrated.minutes(),
                self.migrated.bytes,
                self.deletes_retried
            );
        }
        if self.enqueued > 0 {
            let _ = writeln!(s, "  enqueued for workers    {}", self.enqueued);
        }
        let _ = writeln!(
            s,
            "  skipped                 {} in progress elsewhere, {} not completed at Twilio, {} too recent",
            self.in_progress, self.not_completed, self.too_recent
        );
        let _ = writeln!(s, "  failed                  {}", self.failed);
        for f in &self.failures {
            let _ = writeln!(s, "    {}: {}", f.recording_sid, f.error);
        }
        let _ = writeln!(
            s,
            "  monthly cost at Twilio  ${:.2}",
            self.cost.twilio_usd_per_month
        );
        let _ = writeln!(
            s,
            "  monthly cost in S3      ${:.2} (Standard)",
            self.cost.s3_standard_usd_per_month
        );
        if let (Some(class), Some(usd)) =
            (self.cost.archive_class, self.cost.s3_archive_usd_per_month)
        {
            let _ = writeln!(
                s,
                "                          ${usd:.2} ({})",
                class.as_str()
            );
        }
        let _ = writeln!(
            s,
            "  monthly saving          ${:.2}",
            self.monthly_saving_usd
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_estimates_are_twilio_s_pcm_size() {
        assert_eq!(estimate_bytes(MediaFormat::Wav, 30, 1), 44 + 480_000);
        assert_eq!(estimate_bytes(MediaFormat::Wav, 30, 2), 44 + 960_000);
        assert_eq!(estimate_bytes(MediaFormat::Mp3, 30, 1), 120_000);
        // Zero channels (a missing field) counts as one.
        assert_eq!(estimate_bytes(MediaFormat::Wav, 1, 0), 16_044);
    }

    #[test]
    fn s3_is_23_times_cheaper_as_wav_and_90_as_mp3() {
        // One hour of audio; the WAV header is noise at that length.
        let ratio = |format| {
            let mut t = Tally::default();
            t.add(3600, estimate_bytes(format, 3600, 1));
            let c = Cost::of(&t, None);
            c.twilio_usd_per_month / c.s3_standard_usd_per_month
        };
        assert_eq!(ratio(MediaFormat::Wav).round(), 23.0);
        assert_eq!(ratio(MediaFormat::Mp3).round(), 91.0);
    }

    #[test]
    fn costs_follow_the_price_list() {
        let mut t = Tally::default();
        t.add(600, 2_000_000_000);
        t.add(600, 0);
        assert_eq!(t.recordings, 2);
        assert_eq!(t.minutes(), 20.0);
        let c = Cost::of(&t, Some(ArchiveClass::DeepArchive));
        assert!((c.twilio_usd_per_month - 0.01).abs() < 1e-12);
        assert!((c.s3_standard_usd_per_month - 0.046).abs() < 1e-12);
        assert!((c.s3_archive_usd_per_month.unwrap() - 0.00198).abs() < 1e-12);
        let mut r = Report::new(true, MediaFormat::Wav);
        r.to_migrate = t;
        r.finish(None);
        assert!((r.monthly_saving_usd - (0.01 - 0.046)).abs() < 1e-12);
        assert_eq!(r.cost.s3_archive_usd_per_month, None);
    }

    #[test]
    fn archive_classes_parse_like_the_template_spells_them() {
        for c in [
            "STANDARD_IA",
            "INTELLIGENT_TIERING",
            "GLACIER_IR",
            "GLACIER",
            "DEEP_ARCHIVE",
        ] {
            let parsed: ArchiveClass = c.parse().unwrap();
            assert_eq!(parsed.as_str(), c);
        }
        assert_eq!("glacier_ir".parse(), Ok(ArchiveClass::GlacierIr));
        assert!("COLD".parse::<ArchiveClass>().is_err());
    }

    #[test]
    fn failures_are_counted_all_but_listed_up_to_a_cap() {
        let mut r = Report::new(false, MediaFormat::Wav);
        for i in 0..(MAX_LISTED_FAILURES + 5) {
            r.fail(&format!("RE{i}"), "boom");
        }
        assert_eq!(r.failed as usize, MAX_LISTED_FAILURES + 5);
        assert_eq!(r.failures.len(), MAX_LISTED_FAILURES);
        assert!(!r.complete());
        let text = r.render();
        assert!(text.contains("failed                  55"), "{text}");
    }
}
