//! Artifacts made by the real `mender-artifact` CLI (gzip/lzma/none, RSA/ECDSA signed,
//! scripts, meta-data, provides/depends, augmented, v2 rootfs-image), parsed by this crate
//! and compared with what `mender-artifact read` prints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cli_or_skip, cli_read, run, CliRead};
use mender_artifact::{
    read_artifact, read_header, verify_artifact, ArtifactInfo, Compression, DependValue,
    ReadOptions,
};

struct Fixture {
    dir: tempfile::TempDir,
    cli: PathBuf,
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        let cli = cli_or_skip(test)?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("payload.bin"), pseudo_random(100_000)).unwrap();
        fs::write(d.join("second.txt"), b"second file\n").unwrap();
        fs::write(
            d.join("ArtifactInstall_Enter_00"),
            b"#!/bin/sh\necho install\n",
        )
        .unwrap();
        fs::write(d.join("ArtifactCommit_Leave_50_note"), b"#!/bin/sh\ntrue\n").unwrap();
        fs::write(
            d.join("meta.json"),
            br#"{"dest_dir":"/opt/x","n":3,"list":[1,"two"],"nested":{"k":true}}"#,
        )
        .unwrap();
        Some(Fixture { dir, cli })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `mender-artifact write <args> -o <out>`; returns the artifact path.
    fn write(&self, out: &str, args: &[&str]) -> PathBuf {
        let mut all = vec!["write"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", out]);
        run(&self.cli, self.dir.path(), &all);
        self.path(out)
    }

    fn rsa_key(&self) -> String {
        let p = self.path("rsa.pem");
        openssl(&[
            "genrsa",
            "-traditional",
            "-out",
            p.to_str().unwrap(),
            "2048",
        ]);
        p.to_str().unwrap().to_string()
    }

    fn ec_key(&self) -> String {
        let p = self.path("ec.pem");
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            p.to_str().unwrap(),
        ]);
        p.to_str().unwrap().to_string()
    }
}

fn openssl(args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(st.status.success(), "openssl {args:?}: {st:?}");
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Parses `path` in full and header-only modes and checks both against the CLI's view.
fn check(fx: &Fixture, path: &Path) -> ArtifactInfo {
    let cli = cli_read(&fx.cli, path);
    let bytes = fs::read(path).unwrap();
    let full = verify_artifact(&bytes[..]).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let header = read_header(&bytes[..]).unwrap();
    assert!(full.verified && !header.verified);
    assert_eq!(full.size, bytes.len() as u64);
    assert!(header.size < full.size);
    compare(&cli, &full, true);
    compare(&cli, &header, false);
    // Header-only and full agree on everything but file size/date and byte counts.
    assert_eq!(header.name, full.name);
    assert_eq!(header.provides, full.provides);
    assert_eq!(header.depends, full.depends);
    assert_eq!(header.scripts, full.scripts);
    full
}

fn compare(cli: &CliRead, info: &ArtifactInfo, full: bool) {
    assert_eq!(info.name, cli.name);
    assert_eq!(info.version, cli.version);
    assert_eq!(info.signed, cli.signed);
    assert_eq!(info.device_types_compatible, cli.device_types);
    assert_eq!(
        info.artifact_group.clone().unwrap_or_default(),
        cli.provides_group
    );
    let mut scripts = info.scripts.clone();
    let mut cli_scripts = cli.scripts.clone();
    scripts.sort();
    cli_scripts.sort();
    assert_eq!(scripts, cli_scripts);
    if info.version >= 3 {
        let names = match info.depends.get("artifact_name") {
            Some(DependValue::Many(v)) => v.clone(),
            _ => vec![],
        };
        assert_eq!(names, cli.depends_names);
        let groups = match info.depends.get("artifact_group") {
            Some(DependValue::Many(v)) => v.clone(),
            _ => vec![],
        };
        assert_eq!(groups, cli.depends_groups);
    }
    assert_eq!(info.payloads.len(), cli.updates.len());
    for (p, u) in info.payloads.iter().zip(&cli.updates) {
        assert_eq!(p.payload_type.as_deref().unwrap_or(""), u.payload_type);
        assert_eq!(p.provides, u.provides);
        let depends: BTreeMap<String, String> = p
            .depends
            .iter()
            .map(|(k, v)| (k.clone(), v.values().join(" ")))
            .collect();
        assert_eq!(depends, u.depends);
        assert_eq!(p.clears_provides, u.clears);
        match &u.meta_data {
            Some(m) => assert_eq!(&serde_json::Value::Object(p.meta_data.clone()), m),
            None => assert!(p.meta_data.is_empty()),
        }
        let mut ours: Vec<(String, u64, String)> = p
            .files
            .iter()
            .map(|f| (f.name.clone(), f.size.unwrap_or(0), f.checksum.clone()))
            .collect();
        let mut theirs = u.files.clone();
        if !full {
            theirs.iter_mut().for_each(|f| f.1 = 0);
        }
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
        for f in &p.files {
            assert_eq!(f.date.is_some(), full);
        }
    }
    // Top-level provides = header-info ∪ type-info provides.
    for u in &cli.updates {
        for (k, v) in &u.provides {
            assert_eq!(info.provides.get(k), Some(v));
        }
    }
    if info.version >= 3 {
        assert_eq!(info.provides.get("artifact_name"), Some(&info.name));
        assert_eq!(
            info.depends.get("device_type"),
            Some(&DependValue::Many(info.device_types_compatible.clone()))
        );
    }
}

fn rich_args(compression: &str) -> Vec<&str> {
    vec![
        "module-image",
        "-T",
        "script",
        "-n",
        "release-1.0",
        "-t",
        "beaglebone",
        "-t",
        "raspberrypi4",
        "-f",
        "payload.bin",
        "-f",
        "second.txt",
        "--provides",
        "custom.key:val",
        "--provides",
        "other.key:v2",
        "--depends",
        "foo:bar",
        "--depends",
        "rootfs-image.version:1.0",
        "-N",
        "release-0.9",
        "-N",
        "release-0.8",
        "-g",
        "prod",
        "-G",
        "beta",
        "--clears-provides",
        "custom.*",
        "--script",
        "ArtifactInstall_Enter_00",
        "--script",
        "ArtifactCommit_Leave_50_note",
        "--meta-data",
        "meta.json",
        "--compression",
        compression,
    ]
}

#[test]
fn gzip_with_everything() {
    let Some(fx) = Fixture::new("gzip_with_everything") else {
        return;
    };
    let p = fx.write("gz.mender", &rich_args("gzip"));
    let info = check(&fx, &p);
    assert_eq!(info.compression, Compression::Gzip);
    assert!(!info.signed);
    assert_eq!(info.artifact_group.as_deref(), Some("prod"));
    assert_eq!(info.device_types_compatible, ["beaglebone", "raspberrypi4"]);
    assert_eq!(info.provides["rootfs-image.script.version"], "release-1.0");
    assert_eq!(info.provides["custom.key"], "val");
    assert_eq!(info.provides["artifact_group"], "prod");
    assert_eq!(
        info.depends["artifact_name"],
        DependValue::Many(vec!["release-0.9".into(), "release-0.8".into()])
    );
    assert_eq!(info.depends["foo"], DependValue::One("bar".into()));
    assert_eq!(info.clears_provides, ["custom.*", "rootfs-image.script.*"]);
    assert_eq!(info.scripts.len(), 2);
    let p0 = &info.payloads[0];
    assert_eq!(p0.meta_data["nested"]["k"], serde_json::json!(true));
    let f = p0.files.iter().find(|f| f.name == "payload.bin").unwrap();
    assert_eq!(f.size, Some(100_000));
    assert_eq!(f.checksum, common::sha256_hex(&pseudo_random(100_000)));
    // Plain struct serialises.
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["payloads"][0]["type"], "script");
}

#[test]
fn lzma_compression() {
    let Some(fx) = Fixture::new("lzma_compression") else {
        return;
    };
    let p = fx.write("xz.mender", &rich_args("lzma"));
    assert_eq!(check(&fx, &p).compression, Compression::Xz);
}

#[test]
fn no_compression() {
    let Some(fx) = Fixture::new("no_compression") else {
        return;
    };
    let p = fx.write("none.mender", &rich_args("none"));
    assert_eq!(check(&fx, &p).compression, Compression::None);
}

#[test]
fn rsa_signed() {
    let Some(fx) = Fixture::new("rsa_signed") else {
        return;
    };
    let key = fx.rsa_key();
    let mut args = rich_args("gzip");
    args.extend_from_slice(&["-k", &key]);
    let info = check(&fx, &fx.write("rsa.mender", &args));
    assert!(info.signed);
}

#[test]
fn ecdsa_signed_minimal() {
    let Some(fx) = Fixture::new("ecdsa_signed_minimal") else {
        return;
    };
    let key = fx.ec_key();
    let args = [
        "module-image",
        "-T",
        "single-file",
        "-n",
        "ec-1",
        "-t",
        "qemux86-64",
        "-f",
        "second.txt",
        "-k",
        &key,
    ];
    let info = check(&fx, &fx.write("ec.mender", &args));
    assert!(info.signed);
    assert!(info.scripts.is_empty());
    assert!(info.payloads[0].meta_data.is_empty());
    assert_eq!(
        info.provides,
        BTreeMap::from([
            ("artifact_name".to_string(), "ec-1".to_string()),
            (
                "rootfs-image.single-file.version".to_string(),
                "ec-1".to_string()
            ),
        ])
    );
}

#[test]
fn ecdsa_signed_lzma_with_scripts() {
    let Some(fx) = Fixture::new("ecdsa_signed_lzma_with_scripts") else {
        return;
    };
    let key = fx.ec_key();
    let mut args = rich_args("lzma");
    args.extend_from_slice(&["-k", &key]);
    let info = check(&fx, &fx.write("ec-xz.mender", &args));
    assert!(info.signed);
    assert_eq!(info.compression, Compression::Xz);
}

#[test]
fn augmented_signed() {
    let Some(fx) = Fixture::new("augmented_signed") else {
        return;
    };
    let key = fx.rsa_key();
    fs::write(fx.path("aug.json"), br#"{"delta":"yes"}"#).unwrap();
    let args = [
        "module-image",
        "-T",
        "delta",
        "-n",
        "aug-1",
        "-t",
        "t1",
        "-f",
        "payload.bin",
        "--augment-type",
        "delta",
        "--augment-file",
        "second.txt",
        "--augment-provides",
        "aug.key:av",
        "--augment-meta-data",
        "aug.json",
        "-k",
        &key,
    ];
    let info = check(&fx, &fx.write("aug.mender", &args));
    assert!(info.augmented && info.signed);
    assert_eq!(info.payloads[0].files.len(), 2);
    assert_eq!(info.provides["aug.key"], "av");
    assert_eq!(info.payloads[0].meta_data["delta"], "yes");
}

#[test]
fn rootfs_image_v3_and_v2() {
    let Some(fx) = Fixture::new("rootfs_image_v3_and_v2") else {
        return;
    };
    let v3 = fx.write(
        "r3.mender",
        &["rootfs-image", "-n", "r3", "-t", "t1", "-f", "payload.bin"],
    );
    let info = check(&fx, &v3);
    assert_eq!(
        info.payloads[0].payload_type.as_deref(),
        Some("rootfs-image")
    );
    assert_eq!(info.provides["rootfs-image.version"], "r3");
    assert!(info.provides.contains_key("rootfs-image.checksum"));

    let v2 = fx.write(
        "r2.mender",
        &[
            "rootfs-image",
            "-v",
            "2",
            "-n",
            "r2",
            "-t",
            "t1",
            "-t",
            "t2",
            "-f",
            "payload.bin",
        ],
    );
    let info = check(&fx, &v2);
    assert_eq!(info.version, 2);
    assert_eq!(info.device_types_compatible, ["t1", "t2"]);
    assert!(info.provides.is_empty() && info.depends.is_empty());
    assert_eq!(info.payloads[0].files[0].size, Some(100_000));
}

#[test]
fn empty_payload_module() {
    let Some(fx) = Fixture::new("empty_payload_module") else {
        return;
    };
    let p = fx.write(
        "e.mender",
        &["module-image", "-T", "noop", "-n", "e1", "-t", "t1"],
    );
    let info = check(&fx, &p);
    assert!(info.payloads[0].files.is_empty());
}

#[test]
fn small_reads_and_tiny_limits() {
    let Some(fx) = Fixture::new("small_reads_and_tiny_limits") else {
        return;
    };
    let p = fx.write("gz.mender", &rich_args("gzip"));
    let bytes = fs::read(&p).unwrap();
    // A reader returning 1..7 bytes at a time.
    struct Dribble<'a>(&'a [u8], usize);
    impl std::io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let info = verify_artifact(Dribble(&bytes, 0)).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    let opts = ReadOptions {
        max_header_size: 1024,
        ..ReadOptions::full()
    };
    let err = read_artifact(&bytes[..], &opts).unwrap_err();
    assert!(
        matches!(err, mender_artifact::Error::TooLarge { .. }),
        "{err}"
    );
    let opts = ReadOptions {
        max_metadata_size: 100,
        ..ReadOptions::full()
    };
    let err = read_artifact(&bytes[..], &opts).unwrap_err();
    assert!(
        matches!(err, mender_artifact::Error::TooLarge { .. }),
        "{err}"
    );
}
