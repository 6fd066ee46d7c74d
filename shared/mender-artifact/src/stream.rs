//! Async front-end: feed an artifact to the (blocking) parser chunk by chunk from async
//! code, e.g. while the same chunks are uploaded to S3.
//!
//! ```no_run
//! # async fn upload(mut body: impl futures::Stream<Item = bytes::Bytes> + Unpin) -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use mender_artifact::{ReadOptions, StreamParser};
//!
//! let mut parser = StreamParser::spawn(ReadOptions::full());
//! while let Some(chunk) = body.next().await {
//!     // s3_part.write(&chunk).await?;   // same bytes go to storage
//!     parser.feed(chunk).await?;        // fails fast on a malformed artifact
//! }
//! let info = parser.finish().await?;     // verified metadata, info.size = bytes fed
//! # Ok(()) }
//! ```
//!
//! The parser runs on tokio's blocking pool and receives chunks through a bounded channel
//! (8 chunks), so memory stays bounded and a slow parser applies back-pressure to the
//! upload. (Alternative without this type: wrap an `AsyncRead` in
//! `tokio_util::io::SyncIoBridge` and call [`read_artifact`] inside `spawn_blocking`.)

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::info::ArtifactInfo;
use crate::reader::{read_artifact, ReadOptions};

/// Chunks buffered between the feeder and the parser.
const CHANNEL_DEPTH: usize = 8;

/// Parser running on a blocking thread, fed with [`feed`](Self::feed).
///
/// In [`ReadMode::HeaderOnly`](crate::ReadMode::HeaderOnly) the parser keeps accepting (and
/// discarding) chunks after the header, so the caller can keep streaming the upload. In
/// both modes the returned [`ArtifactInfo::size`] is the total number of bytes fed.
/// [`is_done`](Self::is_done) tells when the parser needs no more input (the end of the
/// header, or in full mode the outer end-of-archive marker, was reached, or the artifact was
/// found invalid), so a caller that reads the artifact back from storage can stop there.
/// Dropping the parser without [`finish`](Self::finish) stops the background task.
pub struct StreamParser {
    tx: Option<mpsc::Sender<Bytes>>,
    task: Option<JoinHandle<Result<ArtifactInfo>>>,
    done: Arc<AtomicBool>,
}

impl std::fmt::Debug for StreamParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamParser")
            .field("running", &self.task.is_some())
            .finish()
    }
}

struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    total: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.total += chunk.len() as u64;
                    self.current = chunk;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

impl StreamParser {
    /// Starts a parser. Must be called from within a tokio runtime.
    pub fn spawn(options: ReadOptions) -> Self {
        let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let done = Arc::new(AtomicBool::new(false));
        let parsed = done.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                rx,
                current: Bytes::new(),
                total: 0,
            };
            let result = read_artifact(&mut reader, &options);
            parsed.store(true, Ordering::Release);
            let mut info = result?;
            // Header-only: accept the rest of the upload without parsing it.
            while reader
                .rx
                .blocking_recv()
                .map(|c| reader.total += c.len() as u64)
                .is_some()
            {}
            info.size = reader.total;
            Ok(info)
        });
        StreamParser {
            tx: Some(tx),
            task: Some(task),
            done,
        }
    }

    /// True once the parser has read all it needs (or failed): the chunks fed from then on
    /// are only counted in [`ArtifactInfo::size`]. Chunks already fed may still be queued.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Hands the next chunk to the parser (waits while the channel is full). Fails as soon
    /// as the parser has found the artifact invalid, with the parser's error.
    pub async fn feed(&mut self, chunk: Bytes) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(Error::ParserStopped(
                "parser already finished or failed".into(),
            ));
        };
        if chunk.is_empty() {
            return Ok(());
        }
        if tx.send(chunk).await.is_err() {
            self.tx = None;
            return Err(self.stopped_error().await);
        }
        Ok(())
    }

    async fn stopped_error(&mut self) -> Error {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => Error::ParserStopped("parser ended before the input".into()),
                Err(e) => Error::ParserStopped(e.to_string()),
            },
            None => Error::ParserStopped("parser already failed".into()),
        }
    }

    /// Signals the end of input and returns the parse result.
    pub async fn finish(mut self) -> Result<ArtifactInfo> {
        drop(self.tx.take());
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::ParserStopped(e.to_string()))?,
            None => Err(Error::ParserStopped("parser already failed".into())),
        }
    }
}

/// Parses an artifact from an [`AsyncRead`] (reads 64 KiB chunks into a [`StreamParser`]).
pub async fn read_artifact_async<R: AsyncRead + Unpin>(
    mut reader: R,
    options: ReadOptions,
) -> Result<ArtifactInfo> {
    let mut parser = StreamParser::spawn(options);
    loop {
        let mut buf = vec![0u8; 64 * 1024];
        let n = reader.read(&mut buf).await.map_err(|source| Error::Io {
            context: "artifact".into(),
            source,
        })?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        parser.feed(Bytes::from(buf)).await?;
    }
    parser.finish().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::writer::{write_artifact, ArtifactSpec, PayloadFile};

    fn artifact() -> Vec<u8> {
        let mut spec = ArtifactSpec::module_image("s1", vec!["dev".into()], "script");
        spec.files
            .push(PayloadFile::from_bytes("run.sh", vec![b'x'; 300_000]));
        let mut out = Vec::new();
        write_artifact(spec, &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn feeds_in_chunks() {
        let data = artifact();
        for options in [ReadOptions::full(), ReadOptions::header_only()] {
            let mut p = StreamParser::spawn(options);
            for chunk in data.chunks(1000) {
                p.feed(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            let info = p.finish().await.unwrap();
            assert_eq!(info.size, data.len() as u64);
            assert_eq!(info.name, "s1");
        }
        let info = read_artifact_async(&data[..], ReadOptions::full())
            .await
            .unwrap();
        assert!(info.verified);
    }

    #[tokio::test]
    async fn is_done_at_the_end_of_the_archive() {
        let mut data = artifact();
        let len = data.len();
        data.extend(vec![0x77u8; 1 << 20]);
        let mut p = StreamParser::spawn(ReadOptions::full());
        let mut fed = 0;
        for chunk in data.chunks(4096) {
            if p.is_done() {
                break;
            }
            p.feed(Bytes::copy_from_slice(chunk)).await.unwrap();
            fed += chunk.len();
            tokio::task::yield_now().await;
            if fed >= len {
                // The parser needs nothing after the end-of-archive marker.
                for _ in 0..1000 {
                    if p.is_done() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                assert!(p.is_done(), "not done after the whole artifact");
            }
        }
        assert!(fed < data.len(), "fed the trailing data");
        let info = p.finish().await.unwrap();
        assert_eq!(info.size, fed as u64);
        assert!(info.verified);
    }

    #[tokio::test]
    async fn fails_fast_on_garbage() {
        let mut p = StreamParser::spawn(ReadOptions::full());
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = p.feed(Bytes::from(vec![0x55u8; 4096])).await {
                failed = Some(e);
                break;
            }
        }
        assert!(
            matches!(failed, Some(Error::InvalidTar { .. })),
            "{failed:?}"
        );
    }

    #[tokio::test]
    async fn truncated_stream() {
        let data = artifact();
        let mut p = StreamParser::spawn(ReadOptions::full());
        p.feed(Bytes::copy_from_slice(&data[..data.len() / 2]))
            .await
            .unwrap();
        assert!(p.finish().await.unwrap_err().is_truncated());
    }
}
