//! Terminal session recordings (SPEC §7.3): what the device's shell printed, the pauses
//! between outputs and the user's terminal resizes, kept in S3 for playback.
//!
//! A recording is a stream of records, each `[kind u8][length u32 BE][payload]`:
//! kind 1 = output (the bytes of one shell frame), 2 = delay (`u16` ms, written before an output
//! that came at least 1.5 s after the previous one, capped at 65535), 3 = resize (`u16` width,
//! `u16` height). The [`Recorder`] buffers records and writes them as numbered gzip objects
//! `deviceconnect/recordings/<tenant>/<session id>/<seq>.gz` (every 256 KiB, every few seconds
//! and at the end of the session), so a crash loses at most the last few seconds. The bucket
//! expires the prefix after 30 days, as the session records do.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use mender_aws::s3::{ArtifactStorage, S3Error};

/// Where recordings live in the bucket.
pub const PREFIX: &str = "deviceconnect/recordings/";
/// A session may record this many bytes (output plus control records); then it is stopped.
pub const SESSION_BYTE_LIMIT: usize = 8 * 1024 * 1024;
/// Buffered bytes that trigger a write.
const FLUSH_AT: usize = 256 * 1024;
/// A pause at least this long between two outputs is recorded.
const DELAY_THRESHOLD: Duration = Duration::from_millis(1500);

const OUTPUT: u8 = 1;
const DELAY: u8 = 2;
const RESIZE: u8 = 3;

/// One record of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Output(Vec<u8>),
    Delay(u16),
    Resize { width: u16, height: u16 },
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] S3Error),
}

/// The session recorded more than [`SESSION_BYTE_LIMIT`].
#[derive(Debug, thiserror::Error)]
#[error("session byte limit exceeded")]
pub struct LimitExceeded;

fn write_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
}

#[cfg(test)]
fn encode(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Output(bytes) => write_record(out, OUTPUT, bytes),
        Record::Delay(ms) => write_record(out, DELAY, &ms.to_be_bytes()),
        Record::Resize { width, height } => write_record(
            out,
            RESIZE,
            &[width.to_be_bytes(), height.to_be_bytes()].concat(),
        ),
    }
}

/// Decodes a record stream.
pub fn decode(mut data: &[u8]) -> Result<Vec<Record>, RecordingError> {
    let corrupt = |what: &str| RecordingError::Corrupt(what.to_owned());
    let mut records = Vec::new();
    while let Some((&kind, rest)) = data.split_first() {
        let (len, rest) = rest
            .split_at_checked(4)
            .ok_or_else(|| corrupt("truncated length"))?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (payload, rest) = rest
            .split_at_checked(len)
            .ok_or_else(|| corrupt("truncated record"))?;
        let u16_at = |i: usize| -> Result<u16, RecordingError> {
            payload
                .get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| corrupt("short control record"))
        };
        records.push(match kind {
            OUTPUT => Record::Output(payload.to_vec()),
            DELAY => Record::Delay(u16_at(0)?),
            RESIZE => Record::Resize {
                width: u16_at(0)?,
                height: u16_at(2)?,
            },
            other => return Err(corrupt(&format!("unknown record kind {other}"))),
        });
        data = rest;
    }
    Ok(records)
}

/// The object prefix of one session's recording (`_` for the open-source tenant).
fn session_prefix(tenant: &str, sid: &str) -> String {
    let tenant = if tenant.is_empty() { "_" } else { tenant };
    format!("{PREFIX}{tenant}/{sid}/")
}

/// Records one terminal session.
pub struct Recorder {
    storage: ArtifactStorage,
    prefix: String,
    seq: u32,
    buffer: Vec<u8>,
    recorded: usize,
    last_output: Option<Instant>,
}

impl Recorder {
    pub fn new(storage: ArtifactStorage, tenant: &str, sid: &str) -> Self {
        Recorder {
            storage,
            prefix: session_prefix(tenant, sid),
            seq: 0,
            buffer: Vec::new(),
            recorded: 0,
            last_output: None,
        }
    }

    fn push(&mut self, kind: u8, payload: &[u8]) -> Result<(), LimitExceeded> {
        let before = self.buffer.len();
        write_record(&mut self.buffer, kind, payload);
        self.recorded += self.buffer.len() - before;
        if self.recorded > SESSION_BYTE_LIMIT {
            return Err(LimitExceeded);
        }
        Ok(())
    }

    /// Records shell output, preceded by a delay record after a pause.
    pub fn output(&mut self, bytes: &[u8]) -> Result<(), LimitExceeded> {
        let now = Instant::now();
        if let Some(last) = self.last_output {
            let pause = now.duration_since(last);
            if pause >= DELAY_THRESHOLD {
                let ms = u16::try_from(pause.as_millis()).unwrap_or(u16::MAX);
                self.push(DELAY, &ms.to_be_bytes())?;
            }
        }
        self.last_output = Some(now);
        self.push(OUTPUT, bytes)
    }

    /// Records a terminal resize.
    pub fn resize(&mut self, width: u16, height: u16) -> Result<(), LimitExceeded> {
        self.push(
            RESIZE,
            &[width.to_be_bytes(), height.to_be_bytes()].concat(),
        )
    }

    /// Whether enough is buffered to write now.
    pub fn wants_flush(&self) -> bool {
        self.buffer.len() >= FLUSH_AT
    }

    /// Writes what is buffered as the next object (nothing when the buffer is empty).
    pub async fn flush(&mut self) -> Result<(), RecordingError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&self.buffer)
            .map_err(|e| RecordingError::Corrupt(e.to_string()))?;
        let compressed = gz
            .finish()
            .map_err(|e| RecordingError::Corrupt(e.to_string()))?;
        let key = format!("{}{:08}.gz", self.prefix, self.seq);
        self.storage.put(&key, compressed).await?;
        self.seq += 1;
        self.buffer.clear();
        Ok(())
    }
}

/// Reads a session's whole recording (empty when there is none).
pub async fn load(
    storage: &ArtifactStorage,
    tenant: &str,
    sid: &str,
) -> Result<Vec<Record>, RecordingError> {
    let mut records = Vec::new();
    for key in storage.list(&session_prefix(tenant, sid)).await? {
        let body = storage.read(&key).await?;
        let compressed = body
            .collect()
            .await
            .map_err(|e| RecordingError::Storage(S3Error(e.to_string())))?
            .into_bytes();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut plain)
            .map_err(|e| RecordingError::Corrupt(format!("{key}: {e}")))?;
        records.extend(decode(&plain)?);
    }
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = vec![
            Record::Resize {
                width: 120,
                height: 30,
            },
            Record::Output(b"$ ls\r\n".to_vec()),
            Record::Delay(1500),
            Record::Output(Vec::new()),
        ];
        let mut data = Vec::new();
        for r in &records {
            encode(r, &mut data);
        }
        assert_eq!(decode(&data).unwrap(), records);
        assert!(decode(&data[..data.len() - 1]).is_err());
        assert!(decode(&[9, 0, 0, 0, 0]).is_err());
    }
}
