//! Malformed artifacts: truncation at many offsets, flipped bytes, swapped members,
//! garbage or oversized headers, non-tar input, unknown versions, manifest mismatches.
//! Every case must end in a typed error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{gunzip, gzip, join, set_manifest_sum, split, tar, Member};
use mender_artifact::{
    read_artifact, read_header, verify_artifact, write_artifact, ArtifactSpec, Compression, Error,
    PayloadFile, ReadOptions, ScriptFile,
};

fn payload() -> Vec<u8> {
    (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A valid artifact made by `mender-artifact` when installed, else by this crate's writer.
fn base(compression: &str) -> Vec<u8> {
    if let Some(cli) = common::cli() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("payload.bin"), payload()).unwrap();
        fs::write(d.join("ArtifactInstall_Enter_00"), b"#!/bin/sh\n").unwrap();
        fs::write(d.join("meta.json"), br#"{"a":1}"#).unwrap();
        common::run(
            &cli,
            d,
            &[
                "write",
                "module-image",
                "-T",
                "script",
                "-n",
                "base-1",
                "-t",
                "t1",
                "-f",
                "payload.bin",
                "--script",
                "ArtifactInstall_Enter_00",
                "--meta-data",
                "meta.json",
                "--compression",
                compression,
                "-o",
                "a.mender",
            ],
        );
        return fs::read(d.join("a.mender")).unwrap();
    }
    eprintln!(
        "mender-artifact not installed: malformed tests use artifacts from the crate's writer"
    );
    let mut spec = ArtifactSpec::module_image("base-1", vec!["t1".into()], "script");
    spec.files
        .push(PayloadFile::from_bytes("payload.bin", payload()));
    spec.scripts.push(ScriptFile {
        name: "ArtifactInstall_Enter_00".into(),
        content: b"#!/bin/sh\n".to_vec(),
    });
    spec.compression = match compression {
        "none" => Compression::None,
        "lzma" => Compression::Xz,
        _ => Compression::Gzip,
    };
    let mut out = Vec::new();
    write_artifact(spec, &mut out).unwrap();
    out
}

fn member<'a>(members: &'a mut [Member], prefix: &str) -> &'a mut Member {
    members
        .iter_mut()
        .find(|m| m.name.starts_with(prefix))
        .unwrap()
}

#[test]
fn valid_bases_parse() {
    for c in ["gzip", "none", "lzma"] {
        let b = base(c);
        verify_artifact(&b[..]).unwrap();
        // Re-joining the split members gives an equivalent valid artifact.
        verify_artifact(&join(&split(&b))[..]).unwrap();
    }
}

#[test]
fn truncated_at_every_offset() {
    for c in ["gzip", "none", "lzma"] {
        let b = base(c);
        let header_end = read_header(&b[..]).unwrap().size as usize;
        let mut cuts: Vec<usize> = (0..b.len()).step_by(61).collect();
        cuts.extend((0..b.len()).step_by(512));
        cuts.extend([
            1,
            511,
            513,
            b.len() - 1024,
            b.len() - 513,
            b.len() - 512,
            b.len() - 1,
        ]);
        for cut in cuts {
            let err = verify_artifact(&b[..cut]).expect_err(&format!("{c}: cut at {cut}"));
            assert!(err.is_truncated(), "{c}: cut at {cut}: {err}");
            let h = read_header(&b[..cut]);
            if cut < header_end {
                assert!(
                    h.unwrap_err().is_truncated(),
                    "{c}: header-only cut at {cut}"
                );
            } else {
                assert!(
                    h.is_ok(),
                    "{c}: header-only cut at {cut} (header ends at {header_end})"
                );
            }
        }
    }
}

#[test]
fn flipped_payload_byte_uncompressed() {
    let mut members = split(&base("none"));
    let data = member(&mut members, "data/");
    data.data[512 + 1000] ^= 0x01;
    let bad = join(&members);
    match verify_artifact(&bad[..]).unwrap_err() {
        Error::ChecksumMismatch { path, .. } => assert_eq!(path, "data/0000/payload.bin"),
        e => panic!("unexpected {e}"),
    }
    // Header-only parsing does not read the data.
    read_header(&bad[..]).unwrap();
}

#[test]
fn flipped_payload_byte_compressed() {
    for c in ["gzip", "lzma"] {
        let mut members = split(&base(c));
        let data = member(&mut members, "data/");
        let mid = data.data.len() / 2;
        data.data[mid] ^= 0x40;
        let err = verify_artifact(&join(&members)[..]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ChecksumMismatch { .. } | Error::Decompress { .. }
            ),
            "{c}: {err}"
        );
    }
}

#[test]
fn flipped_header_byte() {
    for c in ["none", "gzip"] {
        let mut members = split(&base(c));
        let header = member(&mut members, "header.tar");
        let mid = header.data.len() / 2;
        header.data[mid] ^= 0x01;
        let err = read_header(&join(&members)[..]).unwrap_err();
        match err {
            Error::ChecksumMismatch { path, .. } => assert!(path.starts_with("header.tar")),
            e => panic!("{c}: unexpected {e}"),
        }
    }
}

#[test]
fn flipped_version_byte() {
    let mut members = split(&base("gzip"));
    members[0].data[2] ^= 0x20; // "format" → "foRmat": still JSON-ish, checksum differs
    let err = verify_artifact(&join(&members)[..]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ChecksumMismatch { .. } | Error::InvalidMetadata { .. }
        ),
        "{err}"
    );
}

#[test]
fn members_out_of_order() {
    let members = split(&base("gzip"));
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["version", "manifest", "header.tar.gz", "data/0000.tar.gz"]
    );
    for (a, b) in [(0, 1), (1, 2), (2, 3), (0, 3)] {
        let mut m = members.clone();
        m.swap(a, b);
        let err = verify_artifact(&join(&m)[..]).unwrap_err();
        assert!(
            matches!(err, Error::UnexpectedMember { .. }),
            "swap {a},{b}: {err}"
        );
    }
    // Missing header.
    let mut m = members.clone();
    m.remove(2);
    assert!(matches!(
        verify_artifact(&join(&m)[..]).unwrap_err(),
        Error::UnexpectedMember { .. }
    ));
    // Data for a payload that does not exist.
    let mut m = members.clone();
    m[3].name = "data/0001.tar.gz".into();
    assert!(matches!(
        verify_artifact(&join(&m)[..]).unwrap_err(),
        Error::UnexpectedMember { .. }
    ));
    // Duplicate data member.
    let mut m = members.clone();
    m.push(m[3].clone());
    assert!(matches!(
        verify_artifact(&join(&m)[..]).unwrap_err(),
        Error::UnexpectedMember { .. }
    ));
    // Unknown member.
    let mut m = members;
    m.insert(
        2,
        Member {
            name: "surprise".into(),
            data: b"x".to_vec(),
        },
    );
    assert!(matches!(
        verify_artifact(&join(&m)[..]).unwrap_err(),
        Error::UnexpectedMember { .. }
    ));
}

#[test]
fn header_replaced_by_garbage() {
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut members = split(&base("gzip"));
    member(&mut members, "header.tar").data = garbage.clone();
    let err = verify_artifact(&join(&members)[..]).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    // Same garbage with a matching manifest checksum: a decompression error.
    set_manifest_sum(&mut members, "header.tar.gz", &garbage);
    let err = verify_artifact(&join(&members)[..]).unwrap_err();
    assert!(matches!(err, Error::Decompress { .. }), "{err}");
    // Uncompressed header that is not a tar.
    let mut members = split(&base("none"));
    member(&mut members, "header.tar").data = garbage.clone();
    set_manifest_sum(&mut members, "header.tar", &garbage);
    let err = verify_artifact(&join(&members)[..]).unwrap_err();
    assert!(matches!(err, Error::InvalidTar { .. }), "{err}");
}

#[test]
fn oversized_headers() {
    let zeros = vec![0u8; 20 << 20];
    // 20 MiB of zeros, gzipped (an empty tar followed by zero padding).
    let mut members = split(&base("gzip"));
    let z = gzip(&zeros);
    member(&mut members, "header.tar").data = z.clone();
    set_manifest_sum(&mut members, "header.tar.gz", &z);
    let err = verify_artifact(&join(&members)[..]).unwrap_err();
    assert!(matches!(err, Error::InvalidMetadata { .. }), "{err}");

    // A valid header-info followed by a 20 MiB state script: over the 10 MiB cap.
    let mut members = split(&base("gzip"));
    let original = gunzip(&member(&mut members, "header.tar").data);
    let header_info = {
        let inner = split(&original);
        inner[0].data.clone()
    };
    let big = tar(&[
        ("header-info", &header_info),
        ("scripts/ArtifactInstall_Enter_01", &zeros),
    ]);
    let z = gzip(&big);
    member(&mut members, "header.tar").data = z.clone();
    set_manifest_sum(&mut members, "header.tar.gz", &z);
    let err = verify_artifact(&join(&members)[..]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    // Uncompressed 20 MiB header.tar.
    let mut members = split(&base("none"));
    member(&mut members, "header.tar").data = big.clone();
    set_manifest_sum(&mut members, "header.tar", &big);
    let err = read_header(&join(&members)[..]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    // A 20 MiB manifest.
    let mut members = split(&base("gzip"));
    member(&mut members, "manifest").data = zeros;
    let err = read_header(&join(&members)[..]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[test]
fn not_a_tar() {
    let random: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let json = br#"{"format":"mender","version":3}"#.repeat(40);
    for (what, input) in [
        ("random", random.clone()),
        ("json", json),
        ("gzip", gzip(&random)),
    ] {
        let err = verify_artifact(&input[..]).unwrap_err();
        assert!(matches!(err, Error::InvalidTar { .. }), "{what}: {err}");
    }
    assert!(verify_artifact(&b""[..]).unwrap_err().is_truncated());
    // An empty tar archive.
    let err = verify_artifact(&tar(&[])[..]).unwrap_err();
    assert!(matches!(err, Error::UnexpectedMember { .. }), "{err}");
}

#[test]
fn unknown_versions() {
    for (version, check) in [
        (r#"{"format":"mender","version":4}"#, "version 4"),
        (r#"{"format":"mender","version":1}"#, "version 1"),
        (r#"{"format":"other","version":3}"#, "format"),
        (r#"{"format":"mender","version":"3"}"#, "invalid"),
        ("not json", "invalid"),
    ] {
        let mut members = split(&base("gzip"));
        members[0].data = version.as_bytes().to_vec();
        set_manifest_sum(&mut members, "version", version.as_bytes());
        let err = verify_artifact(&join(&members)[..]).unwrap_err();
        match (check, &err) {
            ("version 4", Error::UnsupportedVersion(4))
            | ("version 1", Error::UnsupportedVersion(1))
            | ("format", Error::UnsupportedFormat(_))
            | ("invalid", Error::InvalidMetadata { .. }) => {}
            _ => panic!("{version}: {err}"),
        }
    }
}

#[test]
fn manifest_mismatches() {
    // A file listed in the manifest but absent from the data.
    let mut members = split(&base("gzip"));
    set_manifest_sum(&mut members, "data/0000/ghost.bin", b"boo");
    let bad = join(&members);
    match verify_artifact(&bad[..]).unwrap_err() {
        Error::MissingFiles(f) => assert_eq!(f, ["data/0000/ghost.bin"]),
        e => panic!("{e}"),
    }
    let info = read_header(&bad[..]).unwrap();
    assert_eq!(info.payloads[0].files.len(), 2);

    // A data file absent from the manifest.
    let mut members = split(&base("none"));
    let data = member(&mut members, "data/");
    let mut inner = split(&data.data);
    inner.push(Member {
        name: "extra.bin".into(),
        data: b"extra".to_vec(),
    });
    data.data = join(&inner);
    match verify_artifact(&join(&members)[..]).unwrap_err() {
        Error::MissingChecksum(p) => assert_eq!(p, "data/0000/extra.bin"),
        e => panic!("{e}"),
    }

    // A manifest entry for a payload that does not exist.
    let mut members = split(&base("gzip"));
    set_manifest_sum(&mut members, "data/0003/x", b"x");
    assert!(matches!(
        read_header(&join(&members)[..]).unwrap_err(),
        Error::InvalidManifest { .. }
    ));

    // Garbled manifest line.
    let mut members = split(&base("gzip"));
    member(&mut members, "manifest")
        .data
        .extend_from_slice(b"xyz data/0000/f\n");
    assert!(matches!(
        read_header(&join(&members)[..]).unwrap_err(),
        Error::InvalidManifest { .. }
    ));
}

#[test]
fn bad_header_contents() {
    // header-info not first / bad JSON / type mismatch, with consistent checksums.
    type Entries = Vec<(&'static str, Vec<u8>)>;
    let cases: Vec<(&str, Entries)> = vec![
        (
            "not first",
            vec![("headers/0000/type-info", br#"{"type":"script"}"#.to_vec())],
        ),
        ("bad json", vec![("header-info", b"{nope".to_vec())]),
        (
            "no payloads",
            vec![(
                "header-info",
                br#"{"payloads":[],"artifact_provides":{"artifact_name":"x"},"artifact_depends":{"device_type":["t"]}}"#.to_vec(),
            )],
        ),
        (
            "type mismatch",
            vec![
                (
                    "header-info",
                    br#"{"payloads":[{"type":"script"}],"artifact_provides":{"artifact_name":"x"},"artifact_depends":{"device_type":["t"]}}"#.to_vec(),
                ),
                ("headers/0000/type-info", br#"{"type":"other"}"#.to_vec()),
            ],
        ),
        (
            "meta-data not an object",
            vec![
                (
                    "header-info",
                    br#"{"payloads":[{"type":"script"}],"artifact_provides":{"artifact_name":"x"},"artifact_depends":{"device_type":["t"]}}"#.to_vec(),
                ),
                ("headers/0000/meta-data", b"[1,2]".to_vec()),
            ],
        ),
        (
            "payload index out of range",
            vec![
                (
                    "header-info",
                    br#"{"payloads":[{"type":"script"}],"artifact_provides":{"artifact_name":"x"},"artifact_depends":{"device_type":["t"]}}"#.to_vec(),
                ),
                ("headers/0001/type-info", br#"{"type":"script"}"#.to_vec()),
            ],
        ),
        (
            "too many payloads",
            vec![(
                "header-info",
                format!(
                    r#"{{"payloads":[{}],"artifact_provides":{{"artifact_name":"x"}}}}"#,
                    vec![r#"{"type":"s"}"#; 2000].join(",")
                )
                .into_bytes(),
            )],
        ),
    ];
    for (what, entries) in cases {
        let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let z = gzip(&tar(&refs));
        let mut members = split(&base("gzip"));
        member(&mut members, "header.tar").data = z.clone();
        set_manifest_sum(&mut members, "header.tar.gz", &z);
        let err = read_header(&join(&members)[..]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidMetadata { .. } | Error::UnexpectedEntry { .. }
            ),
            "{what}: {err}"
        );
    }
}

/// Bytes after the end-of-archive marker are ignored and not read (see also
/// `bombs::data_after_the_artifact_end_is_not_read`): `size` stops at the marker.
#[test]
fn trailing_bytes_are_ignored() {
    let mut b = base("gzip");
    let len = b.len();
    b.extend_from_slice(&[0u8; 8192]);
    let info = verify_artifact(&b[..]).unwrap();
    assert_eq!(info.size as usize, len);
    b.extend_from_slice(b"not a tar header");
    assert_eq!(verify_artifact(&b[..]).unwrap().size as usize, len);
    let opts = ReadOptions::header_only();
    assert!(read_artifact(&b[..], &opts).unwrap().size < len as u64);
}

#[test]
fn byte_mutations_never_panic() {
    for c in ["gzip", "none"] {
        let b = base(c);
        let mut errors = 0;
        for pos in (0..b.len()).step_by(23) {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut m = b.clone();
                m[pos] ^= mask;
                // Any outcome but a panic is fine; most mutations must be caught.
                if verify_artifact(&m[..]).is_err() {
                    errors += 1;
                }
                let _ = read_header(&m[..]);
            }
        }
        assert!(errors > 0, "{c}");
    }
}
