//! Compression of the `header.tar*` and `data/NNNN.tar*` members: detection from the
//! member name, bounded-memory decoders and encoders.

use std::io::{self, Read, Write};

use serde::Serialize;

/// Compression of the inner tar archives of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain `.tar` (`mender-artifact --compression none`).
    None,
    /// `.tar.gz` (the default of `mender-artifact`).
    #[default]
    Gzip,
    /// `.tar.xz` (`mender-artifact --compression lzma`).
    Xz,
    /// `.tar.zst` (mender-artifact 4: `--compression zstd_*`).
    Zstd,
}

impl Compression {
    /// File name extension after `.tar` (`""`, `".gz"`, `".xz"`, `".zst"`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }

    /// Detects the compression from a member name `<stem>.tar[.gz|.xz|.zst]`; `None` if the
    /// name does not have that form.
    pub fn from_member_name(name: &str, stem: &str) -> Option<Compression> {
        let rest = name.strip_prefix(stem)?.strip_prefix(".tar")?;
        [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ]
        .into_iter()
        .find(|c| c.extension() == rest)
    }

    /// Wraps `r` in a decoder. `max_memory` bounds the decoder's own allocation (xz
    /// dictionary, zstd window), whatever the stream announces.
    pub(crate) fn decoder<'a, R: Read + 'a>(
        self,
        r: R,
        max_memory: u64,
    ) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(r)),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(max_memory, 0)
                    .map_err(io::Error::other)?;
                Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
            }
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(r)?;
                // floor(log2(max_memory)), within zstd's accepted range.
                let log = (63 - max_memory.max(1).leading_zeros()).clamp(10, 31);
                d.window_log_max(log)?;
                Box::new(d)
            }
        })
    }

    pub(crate) fn encoder<W: Write>(self, w: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::None(w),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::default(),
            )),
            Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(w, 6)),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }
}

/// An encoder of any supported compression; `finish` flushes the trailer.
pub(crate) enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            Compression::from_member_name("header.tar.gz", "header"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_member_name("data/0001.tar", "data/0001"),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::from_member_name("header.tar.zst", "header"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_member_name("header.tar.bz2", "header"),
            None
        );
        assert_eq!(
            Compression::from_member_name("header-augment.tar", "header"),
            None
        );
    }

    #[test]
    fn round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ] {
            let mut e = c.encoder(Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            let packed = e.finish().unwrap();
            let mut out = Vec::new();
            c.decoder(&packed[..], 64 << 20)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }
}
