//! The crate's error type: every way reading or writing an artifact can fail.

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while parsing or writing a Mender artifact.
///
/// Parsing never panics: malformed, truncated or hostile input always ends in one of
/// these variants. The `Display` text is meant to be shown to API users (it names the
/// artifact member involved).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying reader failed (network error, disk error...).
    #[error("I/O error while reading {context}: {source}")]
    Io {
        /// Where in the artifact the error happened.
        context: String,
        /// The error returned by the reader.
        #[source]
        source: io::Error,
    },

    /// The input ended before the artifact was complete.
    #[error("artifact truncated: unexpected end of input in {context}")]
    Truncated {
        /// Which member (or tar structure) was being read.
        context: String,
    },

    /// A tar structure (the outer container or an inner `header.tar`/`data/NNNN.tar`)
    /// is not a valid tar archive.
    #[error("invalid tar archive in {context}: {reason}")]
    InvalidTar {
        /// Which archive was being read (`artifact`, `header.tar.gz`, ...).
        context: String,
        /// What is wrong.
        reason: String,
    },

    /// A member of the outer archive is missing, misplaced or unknown.
    #[error("invalid artifact structure: expected {expected}, found {found}")]
    UnexpectedMember {
        /// What the grammar allowed at this point.
        expected: String,
        /// What was found (`end of archive` when the archive ended early).
        found: String,
    },

    /// The `version` member announces a version this reader does not support.
    #[error("unsupported artifact version {0}; supported versions are: 2, 3")]
    UnsupportedVersion(u64),

    /// The `version` member announces a format other than `mender`.
    #[error("unsupported artifact format {0:?}; expected \"mender\"")]
    UnsupportedFormat(String),

    /// A metadata member (`version`, `header-info`, `type-info`, `meta-data`, ...) is not
    /// valid JSON or does not have the expected shape.
    #[error("invalid {member}: {reason}")]
    InvalidMetadata {
        /// The member (path inside the artifact).
        member: String,
        /// What is wrong.
        reason: String,
    },

    /// The `manifest` (or `manifest-augment`) is malformed.
    #[error("invalid {member}: {reason}")]
    InvalidManifest {
        /// `manifest` or `manifest-augment`.
        member: String,
        /// What is wrong.
        reason: String,
    },

    /// A checksummed member or payload file has no entry in the manifest.
    #[error("checksum missing in manifest for {0}")]
    MissingChecksum(String),

    /// A member or payload file does not have the checksum the manifest announces.
    #[error("invalid checksum for {path}: manifest says {expected}, content has {actual}")]
    ChecksumMismatch {
        /// Path as written in the manifest (`header.tar.gz`, `data/0000/rootfs.ext4`).
        path: String,
        /// Hex checksum from the manifest.
        expected: String,
        /// Hex checksum of what was read.
        actual: String,
    },

    /// A member exceeds a size limit of [`ReadOptions`](crate::ReadOptions).
    #[error("{member} exceeds the size limit of {limit} bytes")]
    TooLarge {
        /// The member (for the header: its decompressed size counts).
        member: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// The payload members (`data/NNNN.tar*`) decompress to more than
    /// [`ReadOptions::max_payload_size`](crate::ReadOptions::max_payload_size) bytes in
    /// total, or a payload file's tar header declares more than that.
    #[error("{member}: decompressed payload data exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload member (`data/0000.tar.gz`), with the file when a tar header was at
        /// fault.
        member: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// A payload member decompresses to more than
    /// [`ReadOptions::max_compression_ratio`](crate::ReadOptions::max_compression_ratio)
    /// times its compressed size (beyond the allowance of
    /// [`ReadOptions::compression_ratio_grace`](crate::ReadOptions::compression_ratio_grace)):
    /// a decompression bomb.
    #[error(
        "{member}: {decompressed} decompressed bytes from {compressed} compressed bytes exceed \
         the maximum compression ratio of {max_ratio}:1 (decompression bomb)"
    )]
    CompressionRatio {
        /// The payload member, with the file when its tar header was at fault.
        member: String,
        /// Decompressed payload bytes so far (or declared by a tar header).
        decompressed: u64,
        /// Compressed payload bytes read so far (or the most the member can hold).
        compressed: u64,
        /// The configured ratio.
        max_ratio: u64,
    },

    /// A compressed member could not be decompressed.
    #[error("cannot decompress {member}: {source}")]
    Decompress {
        /// The compressed member.
        member: String,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },

    /// A member name ends with an extension that is not a known compression.
    #[error("unsupported compression for member {0}")]
    UnknownCompression(String),

    /// An unexpected entry inside `header.tar*` or `data/NNNN.tar*`.
    #[error("unexpected entry {entry:?} in {member}")]
    UnexpectedEntry {
        /// The archive containing the entry.
        member: String,
        /// The entry name.
        entry: String,
    },

    /// Full verification ended but some files named in the manifest never appeared.
    #[error("files listed in the manifest were not found in the artifact: {}", .0.join(", "))]
    MissingFiles(Vec<String>),

    /// The [`ArtifactSpec`](crate::ArtifactSpec) given to the writer is not valid.
    #[error("invalid artifact specification: {0}")]
    InvalidSpec(String),

    /// Writing the artifact (or its temporary spool file) failed.
    #[error("I/O error while writing {context}: {source}")]
    Write {
        /// What was being written.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },

    /// The streaming parser's background task stopped (it failed earlier or panicked).
    #[error("artifact parser task stopped: {0}")]
    ParserStopped(String),
}

impl Error {
    pub(crate) fn metadata(member: impl Into<String>, reason: impl ToString) -> Self {
        Error::InvalidMetadata {
            member: member.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn invalid_tar(context: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidTar {
            context: context.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn write(context: impl Into<String>, source: io::Error) -> Self {
        Error::Write {
            context: context.into(),
            source,
        }
    }

    /// True when the error means the input ended too early.
    pub fn is_truncated(&self) -> bool {
        matches!(self, Error::Truncated { .. })
    }

    /// True when the error is a checksum mismatch.
    pub fn is_checksum_mismatch(&self) -> bool {
        matches!(self, Error::ChecksumMismatch { .. })
    }
}
