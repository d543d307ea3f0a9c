//! The S3 side of an offload: a streaming multipart upload that counts and
//! checksums the bytes as they pass, and the verification of the stored copy.
//!
//! The checksum is CRC64/NVME (base64 of the big-endian value, as S3 spells
//! it): S3 computes it natively as a *full-object* checksum of a multipart
//! upload (it composes from the parts, so AWS can report it without reading
//! the object again), the SDK's implementation is SIMD-fast, and a 64-bit CRC
//! catches every burst error up to 64 bits. It guards against accidental
//! corruption in transit or storage, which is the risk here; nobody hostile
//! sits between Twilio, this function and the bucket.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
    ServerSideEncryption,
};
use aws_smithy_checksums::ChecksumAlgorithm as Algo;
use aws_smithy_checksums::http::HttpChecksum;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream::FuturesUnordered};

use crate::config::{Encryption, OffloadConfig, Verification};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("S3 {op}: {message}")]
    S3 { op: &'static str, message: String },
    #[error("reading the media: {0}")]
    Source(String),
    #[error("the media ended after {got} of the {declared} bytes Twilio declared")]
    Truncated { got: u64, declared: u64 },
    #[error("the S3 copy does not match: {0}")]
    Mismatch(String),
}

fn s3_err<E: std::error::Error + 'static, R: std::fmt::Debug>(
    op: &'static str,
) -> impl FnOnce(aws_sdk_s3::error::SdkError<E, R>) -> CopyError {
    move |e| CopyError::S3 {
        op,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// A running CRC64/NVME and byte count.
pub struct Digest {
    crc: Box<dyn HttpChecksum>,
    bytes: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Self {
            crc: Algo::Crc64Nvme.into_impl(),
            bytes: 0,
        }
    }
}

impl Digest {
    pub fn update(&mut self, chunk: &[u8]) {
        self.crc.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    pub fn finish(self) -> Streamed {
        Streamed {
            bytes: self.bytes,
            crc64nvme: base64::engine::general_purpose::STANDARD.encode(self.crc.finalize()),
        }
    }
}

/// What passed through: the byte count and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    pub bytes: u64,
    /// Base64, as in `x-amz-checksum-crc64nvme`.
    pub crc64nvme: String,
}

/// Hashes a byte stream without keeping it.
pub async fn digest_stream<E: std::fmt::Display>(
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
) -> Result<Streamed, String> {
    let mut d = Digest::default();
    while let Some(chunk) = body.next().await {
        d.update(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(d.finish())
}

/// The metadata stored with every recording object.
#[derive(Debug, Clone, Default)]
pub struct ObjectMeta {
    pub pairs: Vec<(&'static str, String)>,
}

/// Whether an object exists at `key` (and its size).
pub async fn head_size(s3: &Client, bucket: &str, key: &str) -> Result<Option<u64>, CopyError> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(
            out.content_length
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
        )),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(s3_err("HeadObject")(e)),
    }
}

/// Starts a multipart upload with the metadata and encryption; returns its id.
pub async fn create_upload(
    s3: &Client,
    config: &OffloadConfig,
    key: &str,
    content_type: &str,
    meta: &ObjectMeta,
) -> Result<String, CopyError> {
    let metadata: HashMap<String, String> = meta
        .pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let mut req = s3
        .create_multipart_upload()
        .bucket(&config.bucket)
        .key(key)
        .content_type(content_type)
        .set_metadata(Some(metadata));
    req = match &config.encryption {
        Encryption::Aes256 => req.server_side_encryption(ServerSideEncryption::Aes256),
        Encryption::Kms(arn) => req
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(arn),
    };
    if config.verification == Verification::S3Checksum {
        req = req
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject);
    }
    let out = req.send().await.map_err(s3_err("CreateMultipartUpload"))?;
    out.upload_id.ok_or_else(|| CopyError::S3 {
        op: "CreateMultipartUpload",
        message: "no upload id".into(),
    })
}

/// Aborts a multipart upload; one that is already gone counts as aborted.
pub async fn abort_upload(
    s3: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), CopyError> {
    match s3
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                == Some("NoSuchUpload") =>
        {
            Ok(())
        }
        Err(e) => Err(s3_err("AbortMultipartUpload")(e)),
    }
}

/// Per-request settings for the transfers (UploadPart, and the read-back):
///
/// - no SDK-computed request checksum (`WhenRequired`): by default the SDK
///   CRC32s every part body, a second pass over every byte that checks
///   nothing ours does not — the CRC64/NVME computed as the bytes stream
///   is compared with the stored object by [`verify`], and in `s3-checksum`
///   mode each part carries its own CRC64/NVME, which S3 checks on arrival;
/// - no response checksum validation for the same reason: the read-back
///   hashes every byte itself.
///
/// Measured (issue 7 part 6, docs/recording-offload.md): the SDK's own
/// checksum and payload hash were most of the worker's CPU per byte.
pub fn transfer_config() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default()
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
}

async fn upload_part(
    s3: Client,
    config: &OffloadConfig,
    key: &str,
    upload_id: &str,
    number: i32,
    data: Bytes,
    part_crc: Option<String>,
) -> Result<(CompletedPart, Bytes), CopyError> {
    let mut req = s3
        .upload_part()
        .bucket(&config.bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(number);
    if let Some(c) = &part_crc {
        req = req.checksum_crc64_nvme(c);
    }
    // UNSIGNED-PAYLOAD: SigV4 would otherwise SHA-256 every part before
    // sending it (a third pass over each byte). Integrity is already
    // covered end to end by the CRC64/NVME verification (and in transit by
    // TLS); the request itself stays signed.
    let out = req
        .body(ByteStream::from(data.clone()))
        .customize()
        .disable_payload_signing()
        .config_override(transfer_config())
        .send()
        .await
        .map_err(s3_err("UploadPart"))?;
    Ok((
        CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag)
            .set_checksum_crc64_nvme(part_crc)
            .build(),
        data,
    ))
}

/// The part buffers of one upload: at most `limit` buffers of exactly
/// `part_size` bytes, allocated once and reused for every part.
///
/// Why not one growing `BytesMut` split per part: measured, that made every
/// part a fresh allocation (growing by doubling past the part size, then
/// copied), and with parts still in flight glibc's allocator kept the freed
/// 8–16 MiB blocks resident: peak RSS ~110 MiB for 100 MiB and 1 GiB
/// recordings alike, against 24 MiB of parts. A fixed set of buffers makes
/// the bound the allocation itself.
struct PartBuffers {
    part_size: usize,
    limit: usize,
    allocated: usize,
    free: Vec<BytesMut>,
}

impl PartBuffers {
    fn new(part_size: usize, limit: usize) -> Self {
        Self {
            part_size,
            limit,
            allocated: 0,
            free: Vec::with_capacity(limit),
        }
    }

    /// An empty buffer of `part_size` capacity; `None` when all `limit` are
    /// in use (the caller waits for a part to finish first).
    fn take(&mut self) -> Option<BytesMut> {
        if let Some(b) = self.free.pop() {
            return Some(b);
        }
        if self.allocated < self.limit {
            self.allocated += 1;
            return Some(BytesMut::with_capacity(self.part_size));
        }
        None
    }

    /// Returns a part's buffer once S3 has it. The SDK has dropped its
    /// clones by then (the request is finished), so the allocation is
    /// reclaimed; should something still hold it, the buffer is let go and
    /// a new one may be allocated in its place (still at most `limit` live).
    fn give_back(&mut self, data: Bytes) {
        match data.try_into_mut() {
            Ok(mut b) if b.capacity() >= self.part_size => {
                b.clear();
                self.free.push(b);
            }
            Ok(_) | Err(_) => {
                tracing::debug!("a part buffer was still shared; not reused");
                self.allocated -= 1;
            }
        }
    }
}

/// Streams `body` into the multipart upload `upload_id` and completes it.
/// Parts are exactly `part_size` bytes (the last may be shorter); at most
/// `parts_in_flight` are being sent while the next one fills, each in one of
/// `parts_in_flight + 1` reused buffers, so memory is part size x (parts in
/// flight + 1) whatever the recording's length. The caller aborts the upload
/// on error.
pub async fn upload_stream<E: std::fmt::Display>(
    s3: &Client,
    config: &OffloadConfig,
    key: &str,
    upload_id: &str,
    declared: Option<u64>,
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
) -> Result<Streamed, CopyError> {
    let part_size = config.part_size;
    let per_part_crc = config.verification == Verification::S3Checksum;
    let mut buffers = PartBuffers::new(part_size, config.parts_in_flight + 1);
    let mut digest = Digest::default();
    let mut part_digest = Digest::default();
    let mut in_flight = FuturesUnordered::new();
    let mut done: Vec<CompletedPart> = Vec::new();
    let mut next_part = 1i32;
    let mut buf = buffers.take().unwrap_or_default();
    let started = Instant::now();
    loop {
        let (chunk, finished) = match body.next().await {
            Some(chunk) => (chunk.map_err(|e| CopyError::Source(e.to_string()))?, false),
            None => (Bytes::new(), true),
        };
        digest.update(&chunk);
        let mut rest: &[u8] = &chunk;
        loop {
            // Fill the current part to exactly `part_size`, never past it:
            // the buffer then never reallocates.
            let n = rest.len().min(part_size - buf.len());
            buf.extend_from_slice(&rest[..n]);
            if per_part_crc {
                part_digest.update(&rest[..n]);
            }
            rest = &rest[n..];
            let last = finished && rest.is_empty() && (!buf.is_empty() || next_part == 1);
            if buf.len() < part_size && !last {
                break;
            }
            if in_flight.len() >= config.parts_in_flight {
                if let Some(r) = in_flight.next().await {
                    let (part, data) = r?;
                    done.push(part);
                    buffers.give_back(data);
                }
            }
            let crc = per_part_crc.then(|| std::mem::take(&mut part_digest).finish().crc64nvme);
            let full = std::mem::take(&mut buf).freeze();
            in_flight.push(upload_part(
                s3.clone(),
                config,
                key,
                upload_id,
                next_part,
                full,
                crc,
            ));
            next_part += 1;
            if last {
                break;
            }
            // At most `parts_in_flight` are out, so one of the
            // `parts_in_flight + 1` buffers is free.
            buf = match buffers.take() {
                Some(b) => b,
                None => {
                    let (part, data) = in_flight
                        .next()
                        .await
                        .ok_or_else(|| CopyError::Source("no part buffer".into()))??;
                    done.push(part);
                    buffers.give_back(data);
                    buffers.take().unwrap_or_default()
                }
            };
            if rest.is_empty() {
                break;
            }
        }
        if finished {
            break;
        }
    }
    while let Some(r) = in_flight.next().await {
        done.push(r?.0);
    }
    // Phase timings (debug): `make bench` reads them to tell the worker's
    // own streaming from the store's completion and the verification.
    tracing::debug!(
        parts = done.len(),
        bytes = digest.bytes,
        stream_ms = started.elapsed().as_millis() as u64,
        "parts uploaded"
    );
    let completing = Instant::now();
    let streamed = digest.finish();
    if let Some(declared) = declared {
        if streamed.bytes != declared {
            return Err(CopyError::Truncated {
                got: streamed.bytes,
                declared,
            });
        }
    }
    done.sort_by_key(|p| p.part_number);
    let mut req = s3
        .complete_multipart_upload()
        .bucket(&config.bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        );
    if config.verification == Verification::S3Checksum {
        req = req
            .checksum_crc64_nvme(&streamed.crc64nvme)
            .checksum_type(ChecksumType::FullObject);
    }
    req.send()
        .await
        .map_err(s3_err("CompleteMultipartUpload"))?;
    tracing::debug!(
        complete_ms = completing.elapsed().as_millis() as u64,
        "multipart upload completed"
    );
    Ok(streamed)
}

/// What S3 says about a stored object, for [`compare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub bytes: u64,
    /// The full-object CRC64/NVME, when S3 reported one of that type.
    pub crc64nvme: Option<String>,
    pub checksum_type: Option<String>,
}

/// The copy is good only if S3's size and full-object checksum both equal
/// what streamed through. A composite (per-part) checksum is not a checksum
/// of the data and is refused.
pub fn compare(expected: &Streamed, reported: &Reported) -> Result<(), CopyError> {
    if reported.bytes != expected.bytes {
        return Err(CopyError::Mismatch(format!(
            "{} bytes stored, {} streamed",
            reported.bytes, expected.bytes
        )));
    }
    match (&reported.crc64nvme, reported.checksum_type.as_deref()) {
        (Some(c), Some("FULL_OBJECT") | None) if *c == expected.crc64nvme => Ok(()),
        (Some(c), Some("FULL_OBJECT") | None) => Err(CopyError::Mismatch(format!(
            "CRC64NVME {c} stored, {} streamed",
            expected.crc64nvme
        ))),
        (Some(_), Some(other)) => Err(CopyError::Mismatch(format!(
            "S3 reported a {other} checksum, not a full-object one"
        ))),
        (None, _) => Err(CopyError::Mismatch(
            "S3 reported no CRC64NVME checksum".into(),
        )),
    }
}

/// Checks the stored object against what streamed through, per the
/// configured [`Verification`].
pub async fn verify(
    s3: &Client,
    config: &OffloadConfig,
    key: &str,
    expected: &Streamed,
) -> Result<(), CopyError> {
    let started = Instant::now();
    let reported = match config.verification {
        Verification::ReadBack => {
            let out = s3
                .get_object()
                .bucket(&config.bucket)
                .key(key)
                .customize()
                .config_override(transfer_config())
                .send()
                .await
                .map_err(s3_err("GetObject"))?;
            let mut body = out.body;
            let mut d = Digest::default();
            while let Some(chunk) = body.try_next().await.map_err(|e| CopyError::S3 {
                op: "GetObject",
                message: e.to_string(),
            })? {
                d.update(&chunk);
            }
            let got = d.finish();
            Reported {
                bytes: got.bytes,
                crc64nvme: Some(got.crc64nvme),
                checksum_type: None,
            }
        }
        Verification::S3Checksum => {
            let out = s3
                .head_object()
                .bucket(&config.bucket)
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .map_err(s3_err("HeadObject"))?;
            Reported {
                bytes: out
                    .content_length
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                crc64nvme: out.checksum_crc64_nvme,
                checksum_type: out.checksum_type.map(|t| t.as_str().to_owned()),
            }
        }
    };
    tracing::debug!(
        verify_ms = started.elapsed().as_millis() as u64,
        "stored object read for verification"
    );
    compare(expected, &reported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(data: &[u8]) -> Streamed {
        let mut d = Digest::default();
        d.update(data);
        d.finish()
    }

    #[test]
    fn crc64nvme_matches_the_reference_value() {
        // The CRC-64/NVME check value of "123456789" is 0xAE8B14860A799888.
        let s = streamed(b"123456789");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s.crc64nvme)
            .unwrap();
        assert_eq!(raw, 0xAE8B_1486_0A79_9888u64.to_be_bytes());
        assert_eq!(s.bytes, 9);
        // Chunking does not change it.
        let mut d = Digest::default();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.finish(), s);
    }

    #[test]
    fn part_buffers_are_reused_not_reallocated() {
        let mut pool = PartBuffers::new(1024, 2);
        let mut a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(pool.take().is_none(), "at most `limit` buffers");
        a.extend_from_slice(&[7; 1024]);
        let ptr = a.as_ptr();
        let sent = a.freeze();
        // The SDK holds clones of the body while the request runs.
        let clone = sent.clone();
        drop(clone);
        pool.give_back(sent);
        let again = pool.take().unwrap();
        assert_eq!(again.as_ptr(), ptr, "the same allocation");
        assert!(again.is_empty() && again.capacity() >= 1024);
        // A buffer something still shares is let go, and may be replaced.
        let mut c = again;
        c.extend_from_slice(&[1; 10]);
        let shared = c.freeze();
        let keep = shared.clone();
        pool.give_back(shared);
        assert!(pool.take().is_some());
        assert!(pool.take().is_none());
        drop((b, keep));
    }

    #[test]
    fn only_an_equal_size_and_full_object_checksum_verify() {
        let e = streamed(b"recording bytes");
        let ok = Reported {
            bytes: e.bytes,
            crc64nvme: Some(e.crc64nvme.clone()),
            checksum_type: Some("FULL_OBJECT".into()),
        };
        compare(&e, &ok).unwrap();
        let corrupted = streamed(b"recording bytez");
        for bad in [
            Reported {
                bytes: e.bytes - 1,
                ..ok.clone()
            },
            Reported {
                crc64nvme: Some(corrupted.crc64nvme.clone()),
                ..ok.clone()
            },
            Reported {
                checksum_type: Some("COMPOSITE".into()),
                ..ok.clone()
            },
            Reported {
                crc64nvme: None,
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(compare(&e, &bad), Err(CopyError::Mismatch(_))),
                "{bad:?}"
            );
        }
    }
}
