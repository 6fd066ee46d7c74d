//! Streaming reader and writer for Mender artifacts (formats v2 and v3), the Rust
//! counterpart of the Go `mender-artifact` library as the deployments service uses it.
//!
//! # Reading
//!
//! [`read_artifact`] parses an artifact from any [`std::io::Read`] in a single forward
//! pass. Memory does not grow with the artifact: payload data is hashed in 1 MiB chunks (a
//! fixed pool of three buffers; a helper thread hashes one chunk while the next is read and
//! decompressed), only metadata members are buffered (each capped, see [`ReadOptions`]) and
//! decoders are bounded ([`ReadOptions::max_decoder_memory`]). Two modes:
//!
//! * [`ReadMode::Full`] ([`verify_artifact`]): checks the member order, the `version` and
//!   `header.tar*` checksums, every payload file's SHA-256 against the manifest and that
//!   every manifest entry was present; reads up to the outer end-of-archive marker and no
//!   further, as upstream (what follows is ignored; [`ArtifactInfo::size`] = bytes up to
//!   the marker).
//! * [`ReadMode::HeaderOnly`] ([`read_header`]): stops at the end of `header.tar*`
//!   (`header-augment.tar*` for augmented artifacts), typically a few KiB into the file,
//!   so an artifact stored in S3 can be parsed through a `Read` that issues ranged GETs
//!   lazily (or one GET of the first 64 KiB; a short read surfaces as
//!   [`Error::Truncated`]).
//!
//! Decompression bombs are refused quickly: the decompressed payload data is capped
//! ([`ReadOptions::max_payload_size`], default 32 GiB) and so is its ratio to the compressed
//! bytes ([`ReadOptions::max_compression_ratio`], default 1024:1 beyond a 1 GiB grace),
//! both checked while decoding and, before decoding, against the sizes the payload tar
//! headers declare ([`Error::PayloadTooLarge`], [`Error::CompressionRatio`]); nothing past
//! an inner archive's end-of-archive marker is decompressed beyond 64 KiB.
//!
//! Malformed input (truncated, not a tar, wrong checksum, members out of order, unknown
//! version, oversized header...) always yields a typed [`Error`], never a panic.
//!
//! # Parsing an upload while streaming it elsewhere
//!
//! [`StreamParser`] runs the parser on tokio's blocking pool and takes the upload chunk by
//! chunk ([`StreamParser::feed`] with back-pressure, [`StreamParser::finish`] for the
//! result), so a handler can forward each chunk to S3 and to the parser; a malformed
//! artifact makes `feed` fail early. [`read_artifact_async`] wraps an
//! [`tokio::io::AsyncRead`] the same way.
//!
//! # Writing
//!
//! [`write_artifact`] writes a v3 module-image artifact laid out like
//! `mender-artifact write module-image` (same header-info/type-info JSON, default provides
//! `rootfs-image.<type>.version` and clears `rootfs-image.<type>.*`), gzip/xz/zstd or
//! uncompressed. [`ArtifactSpec::single_file`] builds what upstream's
//! `single-file-artifact-gen` produces for the `single-file` update module (payload files
//! `dest_dir`, `filename`, `permissions` and the file). Signing is not supported.

mod compression;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hash;
mod info;
mod reader;
mod stream;
mod tar;
mod writer;

pub use compression::Compression;
pub use error::{Error, Result};
pub use info::{ArtifactInfo, DependValue, FileInfo, JsonObject, PayloadInfo};
pub use reader::{read_artifact, read_header, verify_artifact, ReadMode, ReadOptions};
pub use stream::{read_artifact_async, StreamParser};
pub use writer::{write_artifact, ArtifactSpec, PayloadFile, ScriptFile};
