//! Recording media, generated on demand so that a recording of any length costs
//! no memory: a WAV is a RIFF/PCM header (8 kHz, mono, 16-bit, like Twilio's
//! recordings) followed by a quiet deterministic tone; an MP3 is a run of
//! MPEG-1 Layer III frame headers with zeroed payloads.

use bytes::Bytes;

pub const SAMPLE_RATE: u32 = 8_000;
pub const BITS_PER_SAMPLE: u16 = 16;
pub const CHANNELS: u16 = 1;
const WAV_HEADER_LEN: u64 = 44;
/// 128 kbit/s, 44.1 kHz, no padding: 144 * 128000 / 44100 = 417 bytes a frame.
const MP3_FRAME_LEN: u64 = 417;
const MP3_FRAME_HEADER: [u8; 4] = [0xFF, 0xFB, 0x90, 0x64];
const CHUNK: u64 = 64 * 1024;

/// The media format of a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFormat {
    Wav,
    Mp3,
}

impl MediaFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            MediaFormat::Wav => "audio/x-wav",
            MediaFormat::Mp3 => "audio/mpeg",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            MediaFormat::Wav => "wav",
            MediaFormat::Mp3 => "mp3",
        }
    }

    /// Total byte length of a recording of `duration_secs`.
    pub fn len(self, duration_secs: u64) -> u64 {
        match self {
            MediaFormat::Wav => WAV_HEADER_LEN + wav_data_len(duration_secs),
            MediaFormat::Mp3 => mp3_frames(duration_secs) * MP3_FRAME_LEN,
        }
    }

    /// Bytes `[start, end)` of the media.
    pub fn bytes(self, duration_secs: u64, start: u64, end: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        match self {
            MediaFormat::Wav => {
                let header = wav_header(duration_secs);
                let mut pos = start;
                while pos < end.min(WAV_HEADER_LEN) {
                    out.push(header[pos as usize]);
                    pos += 1;
                }
                // The samples repeat every period: copy slices of one period
                // rather than computing each byte, so serving a 1 GiB
                // recording is bound by the network, not by this loop.
                let period: Vec<u8> = (0..WAV_PERIOD).map(sample_byte).collect();
                extend_periodic(
                    &mut out,
                    &period,
                    pos.max(WAV_HEADER_LEN) - WAV_HEADER_LEN,
                    end.saturating_sub(WAV_HEADER_LEN),
                );
            }
            MediaFormat::Mp3 => {
                let mut frame = [0u8; MP3_FRAME_LEN as usize];
                frame[..4].copy_from_slice(&MP3_FRAME_HEADER);
                extend_periodic(&mut out, &frame, start, end);
            }
        }
        out
    }

    /// The media as chunks, stopping after `cut_after` bytes if given.
    pub fn chunks(self, duration_secs: u64, cut_after: Option<u64>) -> impl Iterator<Item = Bytes> {
        let total = self.len(duration_secs);
        let stop = cut_after.map_or(total, |c| c.min(total));
        self.range_chunks(duration_secs, 0, stop)
    }

    /// Bytes `[start, stop)` as chunks.
    pub fn range_chunks(
        self,
        duration_secs: u64,
        start: u64,
        stop: u64,
    ) -> impl Iterator<Item = Bytes> {
        let stop = stop.min(self.len(duration_secs));
        let mut pos = start;
        std::iter::from_fn(move || {
            if pos >= stop {
                return None;
            }
            let end = (pos + CHUNK).min(stop);
            let chunk = Bytes::from(self.bytes(duration_secs, pos, end));
            pos = end;
            Some(chunk)
        })
    }
}

/// Bytes of one period of the generated tone (16 samples of 2 bytes).
const WAV_PERIOD: u64 = 32;

/// Appends bytes `[from, to)` of the infinite repetition of `period`.
fn extend_periodic(out: &mut Vec<u8>, period: &[u8], from: u64, to: u64) {
    let len = period.len() as u64;
    let mut pos = from;
    while pos < to {
        let off = (pos % len) as usize;
        let take = (period.len() - off).min((to - pos) as usize);
        out.extend_from_slice(&period[off..off + take]);
        pos += take as u64;
    }
}

fn wav_data_len(duration_secs: u64) -> u64 {
    duration_secs * u64::from(SAMPLE_RATE) * u64::from(BITS_PER_SAMPLE / 8) * u64::from(CHANNELS)
}

fn mp3_frames(duration_secs: u64) -> u64 {
    // 1152 samples a frame at 44.1 kHz; at least one frame.
    (duration_secs * 44_100).div_ceil(1152).max(1)
}

/// The 44-byte canonical WAV header for a recording of `duration_secs`.
pub fn wav_header(duration_secs: u64) -> [u8; 44] {
    let data_len = u32::try_from(wav_data_len(duration_secs)).unwrap_or(u32::MAX - 36);
    let byte_rate = SAMPLE_RATE * u32::from(CHANNELS) * u32::from(BITS_PER_SAMPLE / 8);
    let block_align = CHANNELS * (BITS_PER_SAMPLE / 8);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&BITS_PER_SAMPLE.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// A quiet 500 Hz triangle wave, little-endian 16-bit.
fn sample_byte(data_offset: u64) -> u8 {
    let sample_index = data_offset / 2;
    let phase = (sample_index % 16) as i32; // 8000 / 16 = 500 Hz
    let tri = if phase < 8 { phase } else { 16 - phase } - 4; // -4..=4
    let value = (tri * 256) as i16;
    let le = value.to_le_bytes();
    le[(data_offset % 2) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_length_and_header_agree() {
        let f = MediaFormat::Wav;
        assert_eq!(f.len(3), 44 + 3 * 16_000);
        let all: Vec<u8> = f.chunks(3, None).flat_map(|b| b.to_vec()).collect();
        assert_eq!(all.len() as u64, f.len(3));
        assert_eq!(&all[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes([all[40], all[41], all[42], all[43]]),
            48_000
        );
        let cut: usize = f.chunks(3, Some(1000)).map(|b| b.len()).sum();
        assert_eq!(cut, 1000);
    }

    #[test]
    fn generated_ranges_are_the_byte_by_byte_definition() {
        let header = wav_header(3);
        for (start, end) in [(0, 44), (0, 100), (10, 45), (44, 44 + 97), (1001, 4000)] {
            let expected: Vec<u8> = (start..end)
                .map(|i| {
                    if i < 44 {
                        header[i as usize]
                    } else {
                        sample_byte(i - 44)
                    }
                })
                .collect();
            assert_eq!(
                MediaFormat::Wav.bytes(3, start, end),
                expected,
                "{start}..{end}"
            );
            let mp3: Vec<u8> = (start..end)
                .map(|i| {
                    let off = (i % MP3_FRAME_LEN) as usize;
                    if off < 4 { MP3_FRAME_HEADER[off] } else { 0 }
                })
                .collect();
            assert_eq!(MediaFormat::Mp3.bytes(3, start, end), mp3, "{start}..{end}");
        }
    }
}
