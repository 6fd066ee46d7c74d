//! Streaming artifact parser: reads a Mender artifact (format v2/v3) from any
//! [`std::io::Read`] in one forward pass with bounded memory, checks its structure and
//! checksums, and returns an [`ArtifactInfo`].
//!
//! Memory use does not depend on the artifact size: payload data is read in 1 MiB chunks
//! from a fixed pool of buffers, hashed (on a helper thread for files of more than a chunk,
//! see [`crate::hash`]) and never kept; only metadata members are buffered, each under a
//! limit from [`ReadOptions`]. Decoders are bounded by [`ReadOptions::max_decoder_memory`].
//!
//! Time is bounded too (decompression bombs): the decompressed payload data may not exceed
//! [`ReadOptions::max_payload_size`] nor [`ReadOptions::max_compression_ratio`] times the
//! compressed bytes read (after a grace allowance), checked as the decoders produce bytes and,
//! before any decompression, against the sizes the payload tar headers declare. Nothing after
//! an end-of-archive marker is decompressed (beyond a small allowance for the record padding
//! of inner archives) or read (the outer archive), as upstream's Go reader (`archive/tar`
//! stops at the marker).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::hash::{sha256_to_end, ChunkPool};
use crate::info::{
    rfc3339, ArtifactInfo, DependValue, FileInfo, FilesJson, HeaderInfoV2, HeaderInfoV3,
    JsonObject, PayloadInfo, TypeInfoJson, VersionJson,
};
use crate::tar::{EntryKind, TarReader};

/// How much of the artifact to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Stop after `header.tar*` (and `header-augment.tar*`): no payload data is read, so a
    /// caller can parse an artifact stored in S3 with a ranged GET of its first few KiB.
    /// `version` and header checksums are verified; payload files come from the manifest
    /// (no size/date).
    HeaderOnly,
    /// Read everything: every payload file's SHA-256 is checked against the manifest and
    /// every manifest entry must be present.
    Full,
}

/// Parser settings and limits.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Header-only or full verification.
    pub mode: ReadMode,
    /// Cap on the *decompressed* size of `header.tar*` (and of `header-augment.tar*`),
    /// state scripts included. Default 10 MiB.
    pub max_header_size: u64,
    /// Cap on each of `version`, `manifest`, `manifest.sig`, `manifest-augment`, which are
    /// buffered. Default 1 MiB.
    pub max_metadata_size: u64,
    /// Cap on a decoder's own memory (xz dictionary, zstd window). Default 128 MiB, enough
    /// for `xz -9` and `zstd --ultra -22`-style windows up to 128 MiB.
    pub max_decoder_memory: u64,
    /// Cap on the total *decompressed* size of the payload members (`data/NNNN.tar*`, their
    /// tar headers included), summed over all payloads; a payload file whose tar header
    /// declares more is refused before its data is read ([`Error::PayloadTooLarge`]).
    ///
    /// Default 32 GiB: three times the largest upload (10 GiB, upstream's
    /// `storage.max_image_size`) at the ~3:1 of a typical rootfs image, and what
    /// `process-artifact` (512 MB Lambda, about 0.3 vCPU: ~55 MB/s of inflate + SHA-256)
    /// can decompress and hash within its 900 s timeout.
    pub max_payload_size: u64,
    /// Cap on the ratio of decompressed to compressed payload bytes: the decompressed
    /// payload data read so far may not exceed
    /// `compression_ratio_grace + max_compression_ratio × compressed bytes read so far`
    /// ([`Error::CompressionRatio`]). Also checked before decompressing a payload file,
    /// against the size its tar header declares and the most its member can hold.
    ///
    /// Default 1024 (1 GiB per MiB): just below deflate's ceiling of ~1032:1, so only
    /// nearly-all-zero gzip data comes close; real rootfs images compress 3-10:1, and even
    /// a mostly empty filesystem image stays in the tens or hundreds. xz and zstd reach
    /// 7,000:1 and 32,000:1 on zeros, which is what bombs use.
    pub max_compression_ratio: u64,
    /// Decompressed payload bytes always allowed, whatever the ratio. Default 1 GiB (a few
    /// seconds of work), so that small artifacts with very compressible payloads (e.g. a
    /// 256 MiB image of zeros, xz'd to 40 KiB) are accepted.
    pub compression_ratio_grace: u64,
}

impl ReadOptions {
    /// Full verification with default limits.
    pub fn full() -> Self {
        ReadOptions {
            mode: ReadMode::Full,
            max_header_size: 10 << 20,
            max_metadata_size: 1 << 20,
            max_decoder_memory: 128 << 20,
            max_payload_size: 32 << 30,
            max_compression_ratio: 1024,
            compression_ratio_grace: 1 << 30,
        }
    }

    /// Header-only parsing with default limits.
    pub fn header_only() -> Self {
        ReadOptions {
            mode: ReadMode::HeaderOnly,
            ..Self::full()
        }
    }
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self::full()
    }
}

/// Reads and fully verifies an artifact (see [`ReadMode::Full`]).
pub fn verify_artifact<R: Read>(reader: R) -> Result<ArtifactInfo> {
    read_artifact(reader, &ReadOptions::full())
}

/// Parses only the artifact's metadata (see [`ReadMode::HeaderOnly`]).
pub fn read_header<R: Read>(reader: R) -> Result<ArtifactInfo> {
    read_artifact(reader, &ReadOptions::header_only())
}

/// Parses an artifact from `reader` according to `options`.
///
/// The reader is consumed in order and never rewound; reads are issued in chunks of at
/// most 1 MiB (payload data; metadata members are read whole, each within its limit). In [`ReadMode::Full`] the input is read up to the outer tar's end-of-archive
/// marker (two zero blocks) and no further: whatever follows is ignored and not read, as
/// upstream's reader does, and `size` is the artifact's size up to the marker.
/// ([`StreamParser`](crate::StreamParser) counts every byte fed in `size`.)
pub fn read_artifact<R: Read>(reader: R, options: &ReadOptions) -> Result<ArtifactInfo> {
    let mut parser = Parser {
        opts: options,
        tar: TarReader::new(reader, "artifact", true),
        manifest: Manifest::default(),
        budget: Rc::new(PayloadBudget::new(options)),
    };
    parser.run()
}

const OUTER_GRAMMAR: &str =
    "manifest.sig, manifest-augment or header.tar[.gz|.xz|.zst] after manifest";

struct Parser<'o, R> {
    opts: &'o ReadOptions,
    tar: TarReader<R>,
    manifest: Manifest,
    budget: Rc<PayloadBudget>,
}

/// Everything collected from `header.tar*`.
#[derive(Default)]
struct Header {
    name: String,
    group: Option<String>,
    device_types: Vec<String>,
    header_depends: BTreeMap<String, DependValue>,
    payloads: Vec<Payload>,
    scripts: Vec<String>,
}

#[derive(Default, Clone)]
struct Payload {
    payload_type: Option<String>,
    provides: BTreeMap<String, String>,
    depends: BTreeMap<String, DependValue>,
    clears: Option<Vec<String>>,
    meta_data: JsonObject,
    files: Vec<FileInfo>,
    /// v2 only: file names listed in `headers/NNNN/files`.
    v2_files: Vec<String>,
}

/// Fields an augmented header overrides.
#[derive(Default)]
struct Augment {
    payloads: Vec<Payload>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Last member read: `manifest`.
    Manifest,
    /// Last member read: `manifest.sig`.
    Signature,
    /// Last member read: `manifest-augment`.
    AugmentManifest,
}

impl<R: Read> Parser<'_, R> {
    fn run(&mut self) -> Result<ArtifactInfo> {
        let version = self.read_version()?;

        // manifest
        let manifest_bytes = self.expect_small_member("manifest")?;
        self.manifest.parse(&manifest_bytes, "manifest")?;
        let version_bytes = version.1;
        self.manifest
            .check("version", &Sha256::digest(&version_bytes).into())?;
        let version = version.0;

        let mut signed = false;
        let mut augmented = false;
        let mut stage = Stage::Manifest;
        let (mut header, compression) = loop {
            let entry = self
                .tar
                .next_entry()?
                .ok_or_else(|| Error::UnexpectedMember {
                    expected: OUTER_GRAMMAR.into(),
                    found: "end of archive".into(),
                })?;
            let name = entry.name.as_str();
            match name {
                "manifest.sig" if stage == Stage::Manifest => {
                    self.read_small(name)?;
                    signed = true;
                    stage = Stage::Signature;
                }
                "manifest-augment" if version == 3 && stage != Stage::AugmentManifest => {
                    let bytes = self.read_small(name)?;
                    self.manifest.parse(&bytes, "manifest-augment")?;
                    augmented = true;
                    stage = Stage::AugmentManifest;
                }
                _ => {
                    let Some(c) = Compression::from_member_name(name, "header") else {
                        return Err(Error::UnexpectedMember {
                            expected: OUTER_GRAMMAR.into(),
                            found: name.to_string(),
                        });
                    };
                    let name = name.to_string();
                    let header = self.read_header_member(&name, c, version)?;
                    break (header, c);
                }
            }
        };

        if augmented {
            let entry = self.tar.next_entry()?;
            let found = entry.map_or_else(|| "end of archive".to_string(), |e| e.name);
            let Some(c) = Compression::from_member_name(&found, "header-augment") else {
                return Err(Error::UnexpectedMember {
                    expected: "header-augment.tar[.gz|.xz|.zst]".into(),
                    found,
                });
            };
            let augment = self.read_augment_member(&found, c, header.payloads.len())?;
            apply_augment(&mut header, augment);
        }

        self.assign_manifest_files(&mut header, version)?;

        let verified = match self.opts.mode {
            ReadMode::HeaderOnly => false,
            ReadMode::Full => {
                self.read_data(&mut header)?;
                let missing = self.manifest.unmarked();
                if !missing.is_empty() {
                    return Err(Error::MissingFiles(missing));
                }
                // Stop at the end-of-archive marker: what follows is not read.
                true
            }
        };

        build_info(
            header,
            version,
            signed,
            augmented,
            compression,
            verified,
            self.tar.position(),
        )
    }

    fn read_version(&mut self) -> Result<(u32, Vec<u8>)> {
        let bytes = self.expect_small_member("version")?;
        let v: VersionJson =
            serde_json::from_slice(&bytes).map_err(|e| Error::metadata("version", e))?;
        if v.format != "mender" {
            return Err(Error::UnsupportedFormat(v.format));
        }
        match v.version {
            2 | 3 => Ok((v.version as u32, bytes)),
            other => Err(Error::UnsupportedVersion(other)),
        }
    }

    /// Next member must be `name`; returns its (size-limited) content.
    fn expect_small_member(&mut self, name: &str) -> Result<Vec<u8>> {
        let found = self
            .tar
            .next_entry()?
            .map_or_else(|| "end of archive".to_string(), |e| e.name);
        if found != name {
            return Err(Error::UnexpectedMember {
                expected: name.into(),
                found,
            });
        }
        self.read_small(name)
    }

    fn read_small(&mut self, member: &str) -> Result<Vec<u8>> {
        let limit = self.opts.max_metadata_size;
        if self.tar.remaining() > limit {
            return Err(Error::TooLarge {
                member: member.into(),
                limit,
            });
        }
        let mut buf = Vec::with_capacity(self.tar.remaining() as usize);
        if let Err(e) = self.tar.read_to_end(&mut buf) {
            return Err(self.refine(io_error(member, e), member));
        }
        Ok(buf)
    }

    fn refine(&mut self, err: Error, member: &str) -> Error {
        refine(&mut self.tar, err, member)
    }

    fn read_header_member(
        &mut self,
        member: &str,
        compression: Compression,
        version: u32,
    ) -> Result<Header> {
        let expected = self.manifest.get_and_mark(member)?;
        with_inner_tar(
            &mut self.tar,
            self.opts,
            member,
            compression,
            Some(self.opts.max_header_size),
            Some(expected),
            None,
            |inner| parse_header_tar(inner, member, version, self.opts.max_metadata_size),
        )
    }

    fn read_augment_member(
        &mut self,
        member: &str,
        compression: Compression,
        payload_count: usize,
    ) -> Result<Augment> {
        let expected = self.manifest.get_and_mark(member)?;
        with_inner_tar(
            &mut self.tar,
            self.opts,
            member,
            compression,
            Some(self.opts.max_header_size),
            Some(expected),
            None,
            |inner| parse_augment_tar(inner, member, payload_count, self.opts.max_metadata_size),
        )
    }

    /// Lists each payload's files from the manifest (`data/NNNN/<file>` entries).
    fn assign_manifest_files(&mut self, header: &mut Header, version: u32) -> Result<()> {
        for (path, sum) in self.manifest.entries() {
            if !path.starts_with("data/") {
                continue;
            }
            let (index, file) = parse_manifest_data_path(path)?;
            let payload = header
                .payloads
                .get_mut(index)
                .ok_or_else(|| Error::InvalidManifest {
                    member: "manifest".into(),
                    reason: format!("file {path} does not belong to any payload"),
                })?;
            payload.files.push(FileInfo {
                name: file.to_string(),
                size: None,
                checksum: hex::encode(sum),
                date: None,
                mtime: None,
            });
        }
        if version == 2 {
            // v2 headers also list the files; they must all have checksums.
            for (i, p) in header.payloads.iter().enumerate() {
                for f in &p.v2_files {
                    let path = format!("data/{i:04}/{f}");
                    self.manifest.get(&path)?;
                }
            }
        }
        Ok(())
    }

    fn read_data(&mut self, header: &mut Header) -> Result<()> {
        let mut next_index = 0usize;
        for p in &mut header.payloads {
            p.files.clear();
        }
        while let Some(entry) = self.tar.next_entry()? {
            let name = entry.name;
            let Some((index, compression)) = parse_data_member_name(&name) else {
                return Err(Error::UnexpectedMember {
                    expected: "data/NNNN.tar[.gz|.xz|.zst] or end of archive".into(),
                    found: name,
                });
            };
            if index < next_index || index >= header.payloads.len() {
                return Err(Error::UnexpectedMember {
                    expected: format!(
                        "data/{next_index:04}.tar* (artifact has {} payload(s))",
                        header.payloads.len()
                    ),
                    found: name,
                });
            }
            next_index = index + 1;
            // The data tar itself has no checksum (its files do); its decompressed size counts
            // against the payload budget. The member cannot supply more compressed bytes than
            // its tar header declares.
            let manifest = &mut self.manifest;
            let budget = &self.budget;
            let max_compressed = budget.compressed.get().saturating_add(entry.size);
            let files = with_inner_tar(
                &mut self.tar,
                self.opts,
                &name,
                compression,
                None,
                None,
                Some(budget),
                |inner| read_data_tar(inner, &name, index, manifest, budget, max_compressed),
            )?;
            header.payloads[index].files = files;
        }
        Ok(())
    }
}

/// Replaces an error raised while reading a member's content by a more precise one when
/// the outer input failed or ended early.
fn refine<R: Read>(tar: &mut TarReader<R>, err: Error, member: &str) -> Error {
    if let Some(source) = tar.take_source_error() {
        return Error::Io {
            context: member.into(),
            source,
        };
    }
    if tar.hit_truncation() {
        return Error::Truncated {
            context: member.into(),
        };
    }
    err
}

/// The inner tar of a compressed member, as handed to member parsers.
type InnerTar<'a> = TarReader<LimitReader<Box<dyn Read + 'a>>>;

/// Decompressed bytes read after an inner archive's end-of-archive marker, at most: enough
/// for the record padding of `tar` implementations (GNU tar and bsdtar pad to 10 KiB
/// records; this covers blocking factors up to 128) and for the compression trailer to be
/// read and checked when it follows. Anything beyond is ignored without being decompressed
/// (upstream's reader does not read past the marker at all); its compressed bytes are still
/// consumed (and hashed, for a checksummed member) from the outer archive.
const MAX_INNER_TRAILER: u64 = 64 * 1024;

/// Runs `f` on the inner tar of the compressed member the outer reader is positioned on,
/// consumes the rest of the member, then compares the member's SHA-256 with `expected`.
/// With a `budget` (payload members), the compressed and decompressed bytes are counted
/// against it.
#[allow(clippy::too_many_arguments)]
fn with_inner_tar<R: Read, T>(
    tar: &mut TarReader<R>,
    opts: &ReadOptions,
    member: &str,
    compression: Compression,
    limit: Option<u64>,
    expected: Option<[u8; 32]>,
    budget: Option<&Rc<PayloadBudget>>,
    f: impl for<'a> FnOnce(&mut InnerTar<'a>) -> Result<T>,
) -> Result<T> {
    let mut hashing = HashingReader::new(&mut *tar, expected.is_some(), budget.cloned());
    let result = (|| {
        let decoder = compression
            .decoder(&mut hashing, opts.max_decoder_memory)
            .map_err(|source| Error::Decompress {
                member: member.into(),
                source,
            })?;
        let mut inner = TarReader::new(
            LimitReader::new(decoder, limit, budget.cloned()),
            member,
            false,
        );
        let out = f(&mut inner)?;
        // Past the end-of-archive marker: a little more (record padding, the compression
        // trailer), not a decompression bomb's worth.
        inner.drain_upto(MAX_INNER_TRAILER)?;
        Ok(out)
    })();
    // Consume the rest of the member; also after a parse error of a checksummed member,
    // since a corrupted member is best reported as a checksum mismatch.
    let mismatch = |digest: [u8; 32], expected: [u8; 32]| Error::ChecksumMismatch {
        path: member.into(),
        expected: hex::encode(expected),
        actual: hex::encode(digest),
    };
    let out = match result {
        Ok(out) => {
            if let Err(e) = io::copy(&mut hashing, &mut io::sink()) {
                let e = io_error(member, e);
                return Err(refine(tar, e, member));
            }
            out
        }
        Err(e) => {
            let parse_error = !matches!(e, Error::Io { .. } | Error::Truncated { .. });
            if let (true, Some(expected)) = (parse_error, expected) {
                if io::copy(&mut hashing, &mut io::sink()).is_ok() {
                    let digest = hashing.finish();
                    if digest != expected {
                        return Err(mismatch(digest, expected));
                    }
                }
            }
            return Err(refine(tar, limit_error(e, member, limit), member));
        }
    };
    let digest = hashing.finish();
    match expected {
        Some(expected) if expected != digest => Err(mismatch(digest, expected)),
        _ => Ok(out),
    }
}

fn io_error(member: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::Truncated {
            context: member.into(),
        }
    } else {
        Error::Io {
            context: member.into(),
            source: e,
        }
    }
}

/// Turns a [`LimitExceeded`] error surfacing anywhere into [`Error::TooLarge`], a
/// [`BudgetExceeded`] one into [`Error::PayloadTooLarge`] or [`Error::CompressionRatio`].
fn limit_error(e: Error, member: &str, limit: Option<u64>) -> Error {
    let is_limit = |s: &io::Error| s.get_ref().is_some_and(|i| i.is::<LimitExceeded>());
    if let Error::Decompress { source, .. } | Error::Io { source, .. } = &e {
        if let Some(b) = source
            .get_ref()
            .and_then(|i| i.downcast_ref::<BudgetExceeded>())
        {
            return b.to_error(member.to_string());
        }
    }
    match (&e, limit) {
        (Error::Decompress { source, .. } | Error::Io { source, .. }, Some(limit))
            if is_limit(source) =>
        {
            Error::TooLarge {
                member: format!("{member} (decompressed)"),
                limit,
            }
        }
        _ => e,
    }
}

/// Reads the current entry of an inner archive (at most `limit` bytes).
fn read_entry<R: Read>(inner: &mut TarReader<R>, path: &str, limit: u64) -> Result<Vec<u8>> {
    if inner.remaining() > limit {
        return Err(Error::TooLarge {
            member: path.into(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(inner.remaining() as usize);
    inner
        .read_to_end(&mut buf)
        .map_err(|e| inner_io(inner, path, e))?;
    Ok(buf)
}

fn read_json_entry<R: Read, T: serde::de::DeserializeOwned>(
    inner: &mut TarReader<R>,
    path: &str,
    limit: u64,
) -> Result<T> {
    let buf = read_entry(inner, path, limit)?;
    serde_json::from_slice(&buf).map_err(|e| Error::metadata(path, e))
}

fn inner_io<R: Read>(inner: &TarReader<R>, member: &str, e: io::Error) -> Error {
    if inner.hit_truncation() || e.kind() == io::ErrorKind::UnexpectedEof {
        Error::Truncated {
            context: member.into(),
        }
    } else {
        Error::Decompress {
            member: member.into(),
            source: e,
        }
    }
}

fn skip_entry<R: Read>(inner: &mut TarReader<R>, member: &str) -> Result<()> {
    io::copy(inner, &mut io::sink()).map_err(|e| inner_io(inner, member, e))?;
    Ok(())
}

/// `headers/NNNN/<rest>` → (NNNN, rest).
fn parse_header_path(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("headers/")?;
    let (num, rest) = rest.split_once('/')?;
    if num.len() != 4 || !num.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    Some((num.parse().ok()?, rest))
}

/// `data/NNNN/<file>` → (NNNN, file).
fn parse_manifest_data_path(path: &str) -> Result<(usize, &str)> {
    let bad = || Error::InvalidManifest {
        member: "manifest".into(),
        reason: format!("malformed entry {path:?}"),
    };
    let rest = path.strip_prefix("data/").ok_or_else(bad)?;
    let (num, file) = rest.split_once('/').ok_or_else(bad)?;
    if num.len() != 4 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if file.is_empty() || file.contains('/') {
        return Err(bad());
    }
    Ok((num.parse().map_err(|_| bad())?, file))
}

/// `data/NNNN.tar[.ext]` → (NNNN, compression).
fn parse_data_member_name(name: &str) -> Option<(usize, Compression)> {
    let rest = name.strip_prefix("data/")?;
    let num = rest.get(..4)?;
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let c = Compression::from_member_name(name, &format!("data/{num}"))?;
    Some((num.parse().ok()?, c))
}

/// Most payloads accepted in `header-info` (mender clients install exactly one; the cap
/// only bounds the memory a hostile header can make the parser allocate).
const MAX_PAYLOADS: usize = 1024;

fn check_update_types(
    list: Option<Vec<crate::info::UpdateTypeJson>>,
    member: &str,
) -> Result<Vec<Payload>> {
    let list = list.unwrap_or_default();
    if list.is_empty() {
        return Err(Error::metadata(member, "no payloads"));
    }
    if list.len() > MAX_PAYLOADS {
        return Err(Error::metadata(
            member,
            format!("{} payloads (at most {MAX_PAYLOADS} supported)", list.len()),
        ));
    }
    list.into_iter()
        .map(|u| {
            if u.update_type.as_deref() == Some("") {
                return Err(Error::metadata(member, "empty payload type"));
            }
            Ok(Payload {
                payload_type: u.update_type,
                ..Payload::default()
            })
        })
        .collect()
}

fn parse_header_info(bytes_member: &str, buf: &[u8], version: u32) -> Result<Header> {
    let mut h = Header::default();
    if version == 2 {
        let hi: HeaderInfoV2 =
            serde_json::from_slice(buf).map_err(|e| Error::metadata(bytes_member, e))?;
        h.name = hi.artifact_name;
        h.device_types = hi.device_types_compatible.unwrap_or_default();
        if h.device_types.is_empty() {
            return Err(Error::metadata(bytes_member, "no compatible device types"));
        }
        h.payloads = check_update_types(hi.updates, bytes_member)?;
    } else {
        let hi: HeaderInfoV3 =
            serde_json::from_slice(buf).map_err(|e| Error::metadata(bytes_member, e))?;
        let provides = hi
            .artifact_provides
            .ok_or_else(|| Error::metadata(bytes_member, "artifact_provides missing"))?;
        h.name = provides.artifact_name;
        h.group = provides.artifact_group.filter(|g| !g.is_empty());
        let depends = hi.artifact_depends.unwrap_or_default();
        h.device_types = depends.device_type.clone().unwrap_or_default();
        for (key, value) in [
            ("artifact_name", depends.artifact_name),
            ("device_type", depends.device_type),
            ("artifact_group", depends.artifact_group),
        ] {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                h.header_depends
                    .insert(key.to_string(), DependValue::Many(v));
            }
        }
        h.payloads = check_update_types(hi.payloads, bytes_member)?;
    }
    if h.name.is_empty() {
        return Err(Error::metadata(bytes_member, "artifact name missing"));
    }
    Ok(h)
}

/// What the entries of a header archive are read with.
struct HeaderCtx<'a> {
    /// The member (`header.tar.gz`, `header-augment.tar`, ...).
    member: &'a str,
    version: u32,
    /// Cap on each JSON entry.
    limit: u64,
}

impl HeaderCtx<'_> {
    fn unexpected(&self, entry: &str) -> Error {
        Error::UnexpectedEntry {
            member: self.member.into(),
            entry: entry.into(),
        }
    }

    fn path(&self, entry: &str) -> String {
        format!("{}/{entry}", self.member)
    }

    /// The first entry must be `header-info`; returns its content.
    fn header_info<R: Read>(&self, inner: &mut TarReader<R>) -> Result<Vec<u8>> {
        match inner.next_entry()? {
            Some(e) if e.name == "header-info" => {
                read_entry(inner, &self.path("header-info"), self.limit)
            }
            Some(e) => Err(Error::metadata(
                self.member,
                format!("first entry must be header-info, found {:?}", e.name),
            )),
            None => Err(Error::metadata(
                self.member,
                "header-info missing (empty header)",
            )),
        }
    }
}

fn parse_header_tar<R: Read>(
    inner: &mut TarReader<R>,
    member: &str,
    version: u32,
    limit: u64,
) -> Result<Header> {
    let ctx = HeaderCtx {
        member,
        version,
        limit,
    };
    let buf = ctx.header_info(inner)?;
    let mut header = parse_header_info(&ctx.path("header-info"), &buf, version)?;
    let mut in_scripts = true;
    while let Some(e) = inner.next_entry()? {
        if e.kind == EntryKind::Directory {
            continue;
        }
        if let Some(script) = e.name.strip_prefix("scripts/") {
            if !in_scripts || script.is_empty() || script.contains('/') {
                return Err(ctx.unexpected(&e.name));
            }
            header.scripts.push(script.to_string());
            skip_entry(inner, member)?;
            continue;
        }
        in_scripts = false;
        let Some((index, rest)) = parse_header_path(&e.name) else {
            return Err(ctx.unexpected(&e.name));
        };
        let Some(payload) = header.payloads.get_mut(index) else {
            return Err(ctx.unexpected(&e.name));
        };
        read_payload_header_entry(inner, &ctx, payload, &e.name, rest)?;
    }
    Ok(header)
}

fn read_payload_header_entry<R: Read>(
    inner: &mut TarReader<R>,
    ctx: &HeaderCtx<'_>,
    payload: &mut Payload,
    entry: &str,
    rest: &str,
) -> Result<()> {
    let path = ctx.path(entry);
    match rest {
        "type-info" => {
            let ti: TypeInfoJson = read_json_entry(inner, &path, ctx.limit)?;
            if ctx.version < 3 {
                return Ok(()); // ignored before v3, as upstream
            }
            if let (Some(t), Some(expected)) = (&ti.type_name, &payload.payload_type) {
                // mender-artifact < 4.3.1 writes "" for rootfs-image payloads.
                if !t.is_empty() && t != expected {
                    return Err(Error::metadata(
                        path,
                        format!("type {t:?} does not match header-info type {expected:?}"),
                    ));
                }
            }
            payload.provides = ti.artifact_provides.unwrap_or_default();
            payload.depends = ti.artifact_depends.unwrap_or_default();
            payload.clears = ti.clears_artifact_provides;
        }
        "meta-data" => {
            let buf = read_entry(inner, &path, ctx.limit)?;
            if !buf.iter().all(u8::is_ascii_whitespace) {
                let v: serde_json::Value =
                    serde_json::from_slice(&buf).map_err(|e| Error::metadata(&path, e))?;
                match v {
                    serde_json::Value::Object(m) => payload.meta_data = m,
                    _ => return Err(Error::metadata(path, "top level must be a JSON object")),
                }
            }
        }
        "files" if ctx.version < 3 => {
            let files: FilesJson = read_json_entry(inner, &path, ctx.limit)?;
            payload.v2_files = files.files;
        }
        r if ctx.version < 3
            && (r.starts_with("checksums/")
                || r.starts_with("signatures/")
                || r.starts_with("scripts/")) =>
        {
            // Legacy v2 entries: no longer used.
            skip_entry(inner, ctx.member)?;
        }
        _ => return Err(ctx.unexpected(entry)),
    }
    Ok(())
}

fn parse_augment_tar<R: Read>(
    inner: &mut TarReader<R>,
    member: &str,
    payload_count: usize,
    limit: u64,
) -> Result<Augment> {
    let ctx = HeaderCtx {
        member,
        version: 3,
        limit,
    };
    // Checked for syntax only; the original header-info is authoritative.
    let buf = ctx.header_info(inner)?;
    serde_json::from_slice::<serde_json::Value>(&buf)
        .map_err(|e| Error::metadata(ctx.path("header-info"), e))?;
    let mut augment = Augment {
        payloads: vec![Payload::default(); payload_count],
    };
    while let Some(e) = inner.next_entry()? {
        if e.kind == EntryKind::Directory {
            continue;
        }
        let Some((index, rest)) = parse_header_path(&e.name) else {
            return Err(ctx.unexpected(&e.name));
        };
        if index >= payload_count || !(rest == "type-info" || rest == "meta-data") {
            return Err(ctx.unexpected(&e.name));
        }
        read_payload_header_entry(inner, &ctx, &mut augment.payloads[index], &e.name, rest)?;
    }
    Ok(augment)
}

fn apply_augment(header: &mut Header, augment: Augment) {
    for (p, a) in header.payloads.iter_mut().zip(augment.payloads) {
        p.provides.extend(a.provides);
        p.depends.extend(a.depends);
        merge_json(&mut p.meta_data, a.meta_data);
        if a.clears.is_some() {
            p.clears = a.clears;
        }
    }
}

/// Deep-merges `over` into `base`: objects merge recursively, other values are replaced
/// (upstream's `mergeJsonStructures`, minus its type-conflict errors).
fn merge_json(base: &mut JsonObject, over: JsonObject) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(serde_json::Value::Object(b)), serde_json::Value::Object(o)) => merge_json(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Only letters, digits and `.,_-` are allowed in payload file names (as upstream).
pub(crate) fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b','))
}

fn read_data_tar<R: Read>(
    inner: &mut TarReader<R>,
    member: &str,
    index: usize,
    manifest: &mut Manifest,
    budget: &PayloadBudget,
    max_compressed: u64,
) -> Result<Vec<FileInfo>> {
    let mut files = Vec::new();
    let mut pool = ChunkPool::default();
    while let Some(e) = inner.next_entry()? {
        if e.kind != EntryKind::File || !valid_file_name(&e.name) {
            return Err(Error::UnexpectedEntry {
                member: member.into(),
                entry: e.name,
            });
        }
        // A declared size that cannot fit is refused before decompressing anything.
        budget
            .check_declared(e.size, max_compressed)
            .map_err(|b| b.to_error(format!("{member} (file {})", e.name)))?;
        let path = format!("data/{index:04}/{}", e.name);
        let expected = manifest.get_and_mark(&path)?;
        let digest =
            sha256_to_end(inner, e.size, &mut pool).map_err(|err| inner_io(inner, member, err))?;
        if digest != expected {
            return Err(Error::ChecksumMismatch {
                path,
                expected: hex::encode(expected),
                actual: hex::encode(digest),
            });
        }
        files.push(FileInfo {
            name: e.name,
            size: Some(e.size),
            checksum: hex::encode(digest),
            date: Some(rfc3339(e.mtime)),
            mtime: Some(e.mtime),
        });
    }
    Ok(files)
}

fn merge_unique<V: Clone>(
    into: &mut BTreeMap<String, V>,
    from: &BTreeMap<String, V>,
    what: &str,
    index: usize,
) -> Result<()> {
    for (k, v) in from {
        if into.insert(k.clone(), v.clone()).is_some() {
            return Err(Error::metadata(
                format!("headers/{index:04}/type-info"),
                format!("conflicting {what} key {k:?}"),
            ));
        }
    }
    Ok(())
}

fn build_info(
    header: Header,
    version: u32,
    signed: bool,
    augmented: bool,
    compression: Compression,
    verified: bool,
    size: u64,
) -> Result<ArtifactInfo> {
    let mut provides = BTreeMap::new();
    let mut depends = BTreeMap::new();
    let mut clears = Vec::new();
    if version >= 3 {
        provides.insert("artifact_name".to_string(), header.name.clone());
        if let Some(g) = &header.group {
            provides.insert("artifact_group".to_string(), g.clone());
        }
        depends = header.header_depends.clone();
        for (i, p) in header.payloads.iter().enumerate() {
            merge_unique(&mut provides, &p.provides, "provides", i)?;
            merge_unique(&mut depends, &p.depends, "depends", i)?;
            clears.extend(p.clears.iter().flatten().cloned());
        }
    }
    Ok(ArtifactInfo {
        format: "mender".into(),
        version,
        name: header.name,
        artifact_group: header.group,
        signed,
        device_types_compatible: header.device_types,
        provides,
        depends,
        clears_provides: clears,
        payloads: header
            .payloads
            .into_iter()
            .map(|p| PayloadInfo {
                payload_type: p.payload_type,
                provides: p.provides,
                depends: p.depends,
                clears_provides: p.clears.unwrap_or_default(),
                meta_data: p.meta_data,
                files: p.files,
            })
            .collect(),
        scripts: header.scripts,
        size,
        compression,
        augmented,
        verified,
    })
}

/// Checksums from `manifest` (and `manifest-augment`), with "seen" marks.
#[derive(Default)]
struct Manifest {
    order: Vec<(String, [u8; 32])>,
    index: HashMap<String, usize>,
    marked: Vec<bool>,
}

impl Manifest {
    fn parse(&mut self, bytes: &[u8], member: &str) -> Result<()> {
        let bad = |reason: String| Error::InvalidManifest {
            member: member.into(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (sum, path) = line
                .split_once("  ")
                .ok_or_else(|| bad(format!("malformed line {line:?}")))?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(sum, &mut digest)
                .map_err(|_| bad(format!("malformed checksum in line {line:?}")))?;
            if path.is_empty() || path.contains("  ") {
                return Err(bad(format!("malformed line {line:?}")));
            }
            if self.index.contains_key(path) {
                return Err(bad(format!("duplicate entry {path:?}")));
            }
            self.index.insert(path.to_string(), self.order.len());
            self.order.push((path.to_string(), digest));
            self.marked.push(false);
        }
        Ok(())
    }

    fn get(&self, path: &str) -> Result<[u8; 32]> {
        self.index
            .get(path)
            .map(|&i| self.order[i].1)
            .ok_or_else(|| Error::MissingChecksum(path.into()))
    }

    fn get_and_mark(&mut self, path: &str) -> Result<[u8; 32]> {
        let i = *self
            .index
            .get(path)
            .ok_or_else(|| Error::MissingChecksum(path.into()))?;
        self.marked[i] = true;
        Ok(self.order[i].1)
    }

    fn check(&mut self, path: &str, digest: &[u8; 32]) -> Result<()> {
        let expected = self.get_and_mark(path)?;
        if &expected != digest {
            return Err(Error::ChecksumMismatch {
                path: path.into(),
                expected: hex::encode(expected),
                actual: hex::encode(digest),
            });
        }
        Ok(())
    }

    fn entries(&self) -> impl Iterator<Item = (&str, &[u8; 32])> {
        self.order.iter().map(|(p, s)| (p.as_str(), s))
    }

    fn unmarked(&self) -> Vec<String> {
        self.order
            .iter()
            .zip(&self.marked)
            .filter(|(_, m)| !**m)
            .map(|((p, _), _)| p.clone())
            .collect()
    }
}

/// Passes bytes through, hashing them (when enabled) and counting them as compressed
/// payload bytes (with a budget).
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    budget: Option<Rc<PayloadBudget>>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R, enabled: bool, budget: Option<Rc<PayloadBudget>>) -> Self {
        HashingReader {
            inner,
            hasher: enabled.then(Sha256::new),
            budget,
        }
    }

    fn finish(self) -> [u8; 32] {
        self.hasher.map(|h| h.finalize().into()).unwrap_or_default()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        if let Some(b) = &self.budget {
            b.compressed
                .set(b.compressed.get().saturating_add(n as u64));
        }
        Ok(n)
    }
}

/// Marker error: the decompressed stream exceeded its limit.
#[derive(Debug)]
struct LimitExceeded;

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("size limit exceeded")
    }
}

impl std::error::Error for LimitExceeded {}

/// Fails with [`LimitExceeded`] once more than `limit` bytes were read, or with
/// [`BudgetExceeded`] once the payload budget is exhausted.
pub(crate) struct LimitReader<R> {
    inner: R,
    left: Option<u64>,
    budget: Option<Rc<PayloadBudget>>,
}

impl<R> LimitReader<R> {
    pub(crate) fn new(inner: R, limit: Option<u64>, budget: Option<Rc<PayloadBudget>>) -> Self {
        LimitReader {
            inner,
            left: limit,
            budget,
        }
    }
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = &mut self.left {
            if n as u64 > *left {
                return Err(io::Error::other(LimitExceeded));
            }
            *left -= n as u64;
        }
        if let Some(b) = &self.budget {
            b.add_decompressed(n as u64).map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

/// Decompression accounting of the payload members (decompression bomb protection), shared
/// by the reader feeding the decoders (compressed bytes, [`HashingReader`]) and the one
/// draining them (decompressed bytes, [`LimitReader`]). Single-threaded: the parser runs on
/// one thread.
pub(crate) struct PayloadBudget {
    max_total: u64,
    max_ratio: u64,
    grace: u64,
    /// Compressed payload bytes handed to decoders so far (the decoders' read-ahead
    /// included, at most a buffer per member).
    compressed: Cell<u64>,
    /// Bytes the payload decoders produced so far.
    decompressed: Cell<u64>,
}

impl PayloadBudget {
    fn new(opts: &ReadOptions) -> Self {
        PayloadBudget {
            max_total: opts.max_payload_size,
            max_ratio: opts.max_compression_ratio,
            grace: opts.compression_ratio_grace,
            compressed: Cell::new(0),
            decompressed: Cell::new(0),
        }
    }

    fn check(&self, decompressed: u64, compressed: u64) -> Result<(), BudgetExceeded> {
        if decompressed > self.max_total {
            return Err(BudgetExceeded::Total {
                limit: self.max_total,
            });
        }
        let allowed = self
            .grace
            .saturating_add(self.max_ratio.saturating_mul(compressed));
        if decompressed > allowed {
            return Err(BudgetExceeded::Ratio {
                decompressed,
                compressed,
                max_ratio: self.max_ratio,
            });
        }
        Ok(())
    }

    /// Counts `n` decompressed bytes.
    fn add_decompressed(&self, n: u64) -> Result<(), BudgetExceeded> {
        let total = self.decompressed.get().saturating_add(n);
        self.decompressed.set(total);
        self.check(total, self.compressed.get())
    }

    /// Whether `size` more decompressed bytes can fit, given that the payload members read
    /// so far hold at most `max_compressed` compressed bytes.
    fn check_declared(&self, size: u64, max_compressed: u64) -> Result<(), BudgetExceeded> {
        self.check(self.decompressed.get().saturating_add(size), max_compressed)
    }
}

/// Marker error: the payload budget is exhausted (carried inside an [`io::Error`] through
/// the decoders and tar readers, then turned into an [`Error`] by [`limit_error`]).
#[derive(Debug, Clone, Copy)]
enum BudgetExceeded {
    Total {
        limit: u64,
    },
    Ratio {
        decompressed: u64,
        compressed: u64,
        max_ratio: u64,
    },
}

impl BudgetExceeded {
    fn to_error(self, member: String) -> Error {
        match self {
            BudgetExceeded::Total { limit } => Error::PayloadTooLarge { member, limit },
            BudgetExceeded::Ratio {
                decompressed,
                compressed,
                max_ratio,
            } => Error::CompressionRatio {
                member,
                decompressed,
                compressed,
                max_ratio,
            },
        }
    }
}

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetExceeded::Total { limit } => {
                write!(f, "decompressed payload data exceeds {limit} bytes")
            }
            BudgetExceeded::Ratio { max_ratio, .. } => {
                write!(f, "compression ratio exceeds {max_ratio}:1")
            }
        }
    }
}

impl std::error::Error for BudgetExceeded {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parsing() {
        let mut m = Manifest::default();
        let sum = "a".repeat(64);
        m.parse(
            format!("{sum}  version\n{sum}  data/0000/f.txt\n").as_bytes(),
            "manifest",
        )
        .unwrap();
        assert!(m.get("version").is_ok());
        assert_eq!(m.unmarked().len(), 2);
        assert!(matches!(
            Manifest::default().parse(b"abc version\n", "manifest"),
            Err(Error::InvalidManifest { .. })
        ));
        assert!(matches!(
            m.parse(format!("{sum}  version\n").as_bytes(), "manifest-augment"),
            Err(Error::InvalidManifest { .. })
        ));
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_header_path("headers/0001/type-info"),
            Some((1, "type-info"))
        );
        assert_eq!(parse_header_path("headers/01/type-info"), None);
        assert_eq!(
            parse_data_member_name("data/0002.tar.xz"),
            Some((2, Compression::Xz))
        );
        assert_eq!(parse_data_member_name("data/0002.tgz"), None);
        assert_eq!(
            parse_manifest_data_path("data/0000/a.b").unwrap(),
            (0, "a.b")
        );
        assert!(parse_manifest_data_path("data/0000/a/b").is_err());
        assert!(valid_file_name("rootfs-1.2,x_y.ext4"));
        assert!(!valid_file_name("../x"));
    }
}
