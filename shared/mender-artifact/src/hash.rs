//! SHA-256 of a payload file read to its end in large chunks. A file of more than one chunk
//! is hashed on a helper thread while the calling thread reads (and decompresses) the next
//! chunk, so that I/O, decompression and hashing overlap; the digest is the same either way.
//!
//! Memory is a fixed pool of [`CHUNKS`] buffers of [`CHUNK_SIZE`] bytes, whatever the file
//! size. The source is only ever read on the calling thread (it need not be `Send`).

use std::io::{self, Read};
use std::sync::mpsc;
use std::thread;

use sha2::{Digest, Sha256};

/// Size of a read (and of a buffer) of payload file data.
pub(crate) const CHUNK_SIZE: usize = 1 << 20;

/// Buffers in the pool: one being filled, one being hashed, one queued between them.
pub(crate) const CHUNKS: usize = 3;

/// Chunk buffers, reused from one file to the next (allocated on first use).
#[derive(Default)]
pub(crate) struct ChunkPool {
    free: Vec<Vec<u8>>,
}

impl ChunkPool {
    fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| vec![0u8; CHUNK_SIZE])
    }

    fn put(&mut self, buf: Vec<u8>) {
        if self.free.len() < CHUNKS {
            self.free.push(buf);
        }
    }
}

/// Reads `src` to its end (`Ok(0)`) and returns the SHA-256 of what it read. `size` is how
/// many bytes the caller expects (the tar header's size); files of more than one chunk are
/// hashed on a helper thread. Read errors are returned as they come.
pub(crate) fn sha256_to_end<R: Read>(
    src: &mut R,
    size: u64,
    pool: &mut ChunkPool,
) -> io::Result<[u8; 32]> {
    if size > CHUNK_SIZE as u64 {
        // Without a thread (none could be started), hash on this one.
        if let Some(result) = threaded(src, pool) {
            return result;
        }
    }
    let mut buf = pool.take();
    let result = (|| {
        let mut hasher = Sha256::new();
        loop {
            let n = fill(src, &mut buf)?;
            if n == 0 {
                return Ok(hasher.finalize().into());
            }
            hasher.update(&buf[..n]);
        }
    })();
    pool.put(buf);
    result
}

/// Reads into `buf` until it is full or `src` is at its end; returns the bytes read.
fn fill<R: Read>(src: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = src.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Reads chunks on this thread and hashes them on a scoped helper thread. `None` if the
/// thread could not be started (nothing was read then).
fn threaded<R: Read>(src: &mut R, pool: &mut ChunkPool) -> Option<io::Result<[u8; 32]>> {
    thread::scope(|scope| {
        // Created in here so that a panic on this thread drops the queue (ending the helper)
        // before the scope waits for the helper.
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(CHUNKS);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let hasher = thread::Builder::new()
            .name("artifact-sha256".into())
            .spawn_scoped(scope, move || {
                let mut hasher = Sha256::new();
                for (buf, n) in full_rx {
                    hasher.update(&buf[..n]);
                    // The reader may be gone (it failed): the buffer is then dropped.
                    let _ = free_tx.send(buf);
                }
                <[u8; 32]>::from(hasher.finalize())
            })
            .ok()?;
        let mut in_use = 0;
        let read = (|| loop {
            let mut buf = if in_use < CHUNKS {
                in_use += 1;
                pool.take()
            } else {
                free_rx.recv().map_err(|_| hasher_gone())?
            };
            let n = fill(src, &mut buf)?;
            if n == 0 {
                pool.put(buf);
                return Ok(());
            }
            full_tx.send((buf, n)).map_err(|_| hasher_gone())?;
        })();
        // Closing the queue ends the helper once it has hashed what was queued.
        drop(full_tx);
        let digest = hasher.join().map_err(|_| hasher_gone());
        for buf in free_rx.try_iter() {
            pool.put(buf);
        }
        Some(read.and(digest))
    })
}

fn hasher_gone() -> io::Error {
    io::Error::other("the SHA-256 thread stopped")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Returns at most `step` bytes per read, then fails if `fail_at` is reached.
    struct Source<'a> {
        data: &'a [u8],
        step: usize,
        fail_at: Option<usize>,
        pos: usize,
    }

    impl Read for Source<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at.is_some_and(|f| self.pos >= f) {
                return Err(io::Error::other("boom"));
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn same_digest_inline_and_threaded() {
        let data: Vec<u8> = (0..5 * CHUNK_SIZE + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut pool = ChunkPool::default();
        for len in [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, data.len()] {
            let expected: [u8; 32] = Sha256::digest(&data[..len]).into();
            for step in [usize::MAX, 65536, 1000] {
                let mut src = Source {
                    data: &data[..len],
                    step,
                    fail_at: None,
                    pos: 0,
                };
                let digest = sha256_to_end(&mut src, len as u64, &mut pool).unwrap();
                assert_eq!(digest, expected, "len {len} step {step}");
                assert_eq!(src.pos, len);
            }
        }
        assert!(pool.free.len() <= CHUNKS);
    }

    #[test]
    fn read_errors_are_returned() {
        let data = vec![1u8; 4 * CHUNK_SIZE];
        let mut pool = ChunkPool::default();
        for fail_at in [0, 10, 2 * CHUNK_SIZE + 5] {
            let mut src = Source {
                data: &data,
                step: 65536,
                fail_at: Some(fail_at),
                pos: 0,
            };
            let err = sha256_to_end(&mut src, data.len() as u64, &mut pool).unwrap_err();
            assert_eq!(err.to_string(), "boom");
        }
        assert!(pool.free.len() <= CHUNKS);
    }
}
