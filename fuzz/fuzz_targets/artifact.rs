//! Fuzz target `artifact`: whole artifact bytes through `mender_artifact::read_artifact`,
//! in full and header-only mode.
//!
//! Input: one mode byte, then the artifact. With an odd mode byte the checksums are fixed up
//! first (the `manifest` lines of `version`, `header*.tar*` and the files of uncompressed or
//! gzip'd payloads are recomputed), so that mutations inside the header and payload archives
//! reach the JSON and tar parsing behind the checksum checks instead of stopping at a
//! mismatch. Checks: no panic, and a fully verified artifact also parses header-only, with
//! the same metadata.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use mender_artifact::fuzzing::{read_tar, write_tar};
use mender_artifact::{read_artifact, Compression, ReadMode, ReadOptions};
use sha2::{Digest, Sha256};

/// Limits small enough that one execution stays in milliseconds.
fn options(mode: ReadMode) -> ReadOptions {
    ReadOptions {
        mode,
        max_header_size: 1 << 20,
        max_metadata_size: 64 << 10,
        max_decoder_memory: 16 << 20,
        max_payload_size: 64 << 20,
        max_compression_ratio: 1024,
        compression_ratio_grace: 4 << 20,
    }
}

fn sum(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces (or adds) the checksum lines of `sums` in a manifest.
fn rewrite_manifest(manifest: &[u8], sums: &[(String, String)]) -> Vec<u8> {
    let text = String::from_utf8_lossy(manifest);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            !sums
                .iter()
                .any(|(path, _)| l.ends_with(&format!("  {path}")))
        })
        .map(str::to_string)
        .collect();
    for (path, sum) in sums {
        lines.push(format!("{sum}  {path}"));
    }
    (lines.join("\n") + "\n").into_bytes()
}

fn compression(name: &str, stem: &str) -> Option<Compression> {
    Compression::from_member_name(name, stem)
}

/// The artifact with its manifest checksums recomputed; `None` when it is not a tar.
fn fix_checksums(artifact: &[u8]) -> Option<Vec<u8>> {
    let members = read_tar(artifact, Compression::None, true, 4 << 20).ok()?;
    let mut sums = Vec::new();
    let mut augment_sums = Vec::new();
    for m in &members {
        if m.name == "version" || compression(&m.name, "header").is_some() {
            sums.push((m.name.clone(), sum(&m.data)));
        } else if compression(&m.name, "header-augment").is_some() {
            augment_sums.push((m.name.clone(), sum(&m.data)));
        } else if let Some(index) = m.name.strip_prefix("data/").and_then(|r| r.get(..4)) {
            let c = compression(&m.name, &format!("data/{index}"));
            if let Some(c @ (Compression::None | Compression::Gzip)) = c {
                for f in read_tar(&m.data, c, false, 4 << 20).ok()? {
                    sums.push((format!("data/{index}/{}", f.name), sum(&f.data)));
                }
            }
        }
    }
    let rebuilt: Vec<(String, Vec<u8>)> = members
        .into_iter()
        .map(|m| match m.name.as_str() {
            "manifest" => (m.name, rewrite_manifest(&m.data, &sums)),
            "manifest-augment" => (m.name, rewrite_manifest(&m.data, &augment_sums)),
            _ => (m.name, m.data),
        })
        .collect();
    let entries: Vec<(&str, &[u8])> = rebuilt
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    write_tar(&entries).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input: Cow<[u8]> = if mode & 1 == 1 {
        fix_checksums(rest).map_or(Cow::Borrowed(rest), Cow::Owned)
    } else {
        Cow::Borrowed(rest)
    };
    let full = read_artifact(&input[..], &options(ReadMode::Full));
    let header = read_artifact(&input[..], &options(ReadMode::HeaderOnly));
    if let Ok(info) = &full {
        assert!(info.verified);
        assert!(info.size <= input.len() as u64);
        let h = match &header {
            Ok(h) => h,
            Err(e) => panic!("verified in full, but header-only parsing fails: {e}"),
        };
        assert!(!h.verified);
        assert!(h.size <= info.size);
        assert_eq!(h.name, info.name);
        assert_eq!(h.version, info.version);
        assert_eq!(h.device_types_compatible, info.device_types_compatible);
        assert_eq!(h.provides, info.provides);
        assert_eq!(h.depends, info.depends);
        assert_eq!(h.payloads.len(), info.payloads.len());
        assert_eq!(h.scripts, info.scripts);
        // What the deployments service stores and returns.
        let json = serde_json::to_string(info).expect("ArtifactInfo serializes");
        assert!(!json.is_empty());
    }
});
