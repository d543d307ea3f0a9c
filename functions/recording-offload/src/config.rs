//! The offload's own settings, read once at cold start.

use std::time::Duration;

use shared::config::{ConfigError, Env, parse_or, required};
use shared::twilio::rest::MediaFormat;

/// How the S3 copy is checked before Twilio's copy is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Read the object back from S3 and hash it: valid against any
    /// S3-compatible store (the emulator reports no checksum for multipart
    /// objects), at the cost of a second transfer.
    ReadBack,
    /// Upload with S3's full-object CRC64NVME checksum (`FULL_OBJECT` type)
    /// and compare what `HeadObject` reports: no second transfer, needs real
    /// S3 (AWS validates the part checksums and computes the whole-object one).
    S3Checksum,
}

impl std::str::FromStr for Verification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read-back" => Ok(Self::ReadBack),
            "s3-checksum" => Ok(Self::S3Checksum),
            other => Err(format!("{other:?} is not read-back or s3-checksum")),
        }
    }
}

/// Server-side encryption of every object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3.
    Aes256,
    /// SSE-KMS with this key.
    Kms(String),
}

impl Encryption {
    /// `RECORDINGS_KMS_KEY_ARN`: unset or empty = SSE-S3, else SSE-KMS with that key.
    fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        match env.get("RECORDINGS_KMS_KEY_ARN") {
            None => Ok(Self::Aes256),
            Some(arn) if arn.starts_with("arn:") && arn.contains(":kms:") => Ok(Self::Kms(arn)),
            Some(other) => Err(ConfigError::Invalid {
                name: "RECORDINGS_KMS_KEY_ARN",
                reason: format!("{other:?} is not a KMS key ARN"),
            }),
        }
    }
}

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct OffloadConfig {
    /// `RECORDINGS_BUCKET`.
    pub bucket: String,
    /// `RECORDINGS_PREFIX` (default `recordings/`): keys are
    /// `<prefix>YYYY/MM/DD/<callId>/<RecordingSid>.<ext>`.
    pub prefix: String,
    /// `RECORDING_FORMAT`: `wav` or `mp3`.
    pub format: MediaFormat,
    /// `OFFLOAD_QUEUE_URL`.
    pub queue_url: String,
    /// `RECORDINGS_KMS_KEY_ARN`: empty = SSE-S3 (AES256), else SSE-KMS with it.
    pub encryption: Encryption,
    /// `OFFLOAD_VERIFY`: `read-back` (default) or `s3-checksum`.
    pub verification: Verification,
    /// `OFFLOAD_PART_SIZE_MIB` (default 8, at least 5).
    pub part_size: usize,
    /// `OFFLOAD_PARTS_IN_FLIGHT` (default 2): memory per copy is bounded by
    /// part size x (parts in flight + the one being filled).
    pub parts_in_flight: usize,
    /// `OFFLOAD_CONCURRENCY` (default 2): jobs of one SQS batch run at once.
    pub concurrency: usize,
    /// `OFFLOAD_LEASE_SECONDS` (default 360): longer than one attempt can
    /// take (the function's timeout), so a live worker never loses its job.
    pub lease: Duration,
    /// `OFFLOAD_RETRY_DELAY_SECONDS` (default 30): first redelivery delay of
    /// a failed job, doubled per receive, at most 15 minutes.
    pub retry_delay: Duration,
    /// `PLAYBACK_URL_TTL_SECONDS` (default 900, 1..=43200): presigned URL life.
    pub playback_ttl: Duration,
}

fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    name: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{v} is outside {lo}..={hi}"),
        });
    }
    Ok(v)
}

impl OffloadConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let mut prefix = env
            .get("RECORDINGS_PREFIX")
            .unwrap_or_else(|| "recordings/".into());
        if prefix.starts_with('/') {
            return Err(ConfigError::Invalid {
                name: "RECORDINGS_PREFIX",
                reason: "must not start with /".into(),
            });
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let part_mib: usize = bounded(
            "OFFLOAD_PART_SIZE_MIB",
            parse_or(env, "OFFLOAD_PART_SIZE_MIB", 8)?,
            5,
            512,
        )?;
        Ok(Self {
            bucket: required(env, "RECORDINGS_BUCKET")?,
            prefix,
            format: parse_or(env, "RECORDING_FORMAT", MediaFormat::Wav)?,
            queue_url: required(env, "OFFLOAD_QUEUE_URL")?,
            encryption: Encryption::load(env)?,
            verification: parse_or(env, "OFFLOAD_VERIFY", Verification::ReadBack)?,
            part_size: part_mib * 1024 * 1024,
            parts_in_flight: bounded(
                "OFFLOAD_PARTS_IN_FLIGHT",
                parse_or(env, "OFFLOAD_PARTS_IN_FLIGHT", 2)?,
                1,
                16,
            )?,
            concurrency: bounded(
                "OFFLOAD_CONCURRENCY",
                parse_or(env, "OFFLOAD_CONCURRENCY", 2)?,
                1,
                10,
            )?,
            lease: Duration::from_secs(bounded(
                "OFFLOAD_LEASE_SECONDS",
                parse_or(env, "OFFLOAD_LEASE_SECONDS", 360)?,
                1,
                43_200,
            )?),
            retry_delay: Duration::from_secs(bounded(
                "OFFLOAD_RETRY_DELAY_SECONDS",
                parse_or(env, "OFFLOAD_RETRY_DELAY_SECONDS", 30)?,
                0,
                900,
            )?),
            playback_ttl: Duration::from_secs(bounded(
                "PLAYBACK_URL_TTL_SECONDS",
                parse_or(env, "PLAYBACK_URL_TTL_SECONDS", 900)?,
                1,
                43_200,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(&str, &str); 2] = [
        ("RECORDINGS_BUCKET", "b"),
        ("OFFLOAD_QUEUE_URL", "http://q"),
    ];

    #[test]
    fn defaults_and_bounds() {
        let c = OffloadConfig::load(&BASE).unwrap();
        assert_eq!(c.prefix, "recordings/");
        assert_eq!(c.format, MediaFormat::Wav);
        assert_eq!(c.encryption, Encryption::Aes256);
        assert_eq!(c.verification, Verification::ReadBack);
        assert_eq!(c.part_size, 8 * 1024 * 1024);
        assert_eq!(c.playback_ttl, Duration::from_secs(900));
        let env = [
            ("RECORDINGS_BUCKET", "b"),
            ("OFFLOAD_QUEUE_URL", "http://q"),
            ("RECORDINGS_PREFIX", "calls"),
            ("RECORDINGS_KMS_KEY_ARN", "arn:aws:kms:us-east-1:1:key/k"),
            ("OFFLOAD_VERIFY", "s3-checksum"),
            ("RECORDING_FORMAT", "mp3"),
        ];
        let c = OffloadConfig::load(&env).unwrap();
        assert_eq!(c.prefix, "calls/");
        assert_eq!(
            c.encryption,
            Encryption::Kms("arn:aws:kms:us-east-1:1:key/k".into())
        );
        assert_eq!(c.verification, Verification::S3Checksum);
        assert_eq!(c.format, MediaFormat::Mp3);
        for (name, bad) in [
            ("OFFLOAD_PART_SIZE_MIB", "4"),
            ("RECORDINGS_KMS_KEY_ARN", "aws:kms"),
            ("OFFLOAD_VERIFY", "etag"),
            ("PLAYBACK_URL_TTL_SECONDS", "0"),
            ("RECORDING_FORMAT", "ogg"),
        ] {
            let env = [
                ("RECORDINGS_BUCKET", "b"),
                ("OFFLOAD_QUEUE_URL", "http://q"),
                (name, bad),
            ];
            let err = OffloadConfig::load(&env).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        assert!(OffloadConfig::load(&[("RECORDINGS_BUCKET", "b")]).is_err());
    }
}
