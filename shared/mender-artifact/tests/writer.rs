//! Artifacts written by this crate: `mender-artifact read`/`validate` must accept them, the
//! reader must parse them back, and a single-file artifact must match what upstream's
//! `single-file-artifact-gen` (i.e. `mender-artifact write module-image -T single-file`
//! with `dest_dir`, `filename`, `permissions` files) produces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::{cli_or_skip, cli_read, gunzip, run, split};
use mender_artifact::{
    verify_artifact, write_artifact, ArtifactSpec, Compression, DependValue, PayloadFile,
    ScriptFile,
};

fn write_to(spec: ArtifactSpec, path: &Path) -> u64 {
    let f = fs::File::create(path).unwrap();
    let n = write_artifact(spec, std::io::BufWriter::new(f)).unwrap();
    assert_eq!(fs::metadata(path).unwrap().len(), n);
    n
}

#[test]
fn single_file_matches_upstream_generator() {
    let Some(cli) = cli_or_skip("single_file_matches_upstream_generator") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(d.join("app.conf"), &content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.join("app.conf"), fs::Permissions::from_mode(0o640)).unwrap();
    }

    // Ours.
    let spec = ArtifactSpec::single_file(
        "cfg-1",
        vec!["raspberrypi4".into(), "qemux86-64".into()],
        "/etc/app",
        PayloadFile::from_path(d.join("app.conf")).unwrap(),
    )
    .unwrap();
    let ours_path = d.join("ours.mender");
    write_to(spec, &ours_path);

    // Upstream's generator, step by step.
    fs::write(d.join("dest_dir"), "/etc/app\n").unwrap();
    fs::write(d.join("filename"), "app.conf\n").unwrap();
    fs::write(d.join("permissions"), "640\n").unwrap();
    run(
        &cli,
        d,
        &[
            "write",
            "module-image",
            "-T",
            "single-file",
            "-t",
            "raspberrypi4",
            "-t",
            "qemux86-64",
            "-o",
            "theirs.mender",
            "-n",
            "cfg-1",
            "-f",
            "dest_dir",
            "-f",
            "filename",
            "-f",
            "permissions",
            "-f",
            "app.conf",
        ],
    );
    let theirs_path = d.join("theirs.mender");

    run(&cli, d, &["validate", ours_path.to_str().unwrap()]);
    let cli_ours = cli_read(&cli, &ours_path);
    let cli_theirs = cli_read(&cli, &theirs_path);
    assert_eq!(cli_ours, cli_theirs);

    let ours = verify_artifact(fs::File::open(&ours_path).unwrap()).unwrap();
    let theirs = verify_artifact(fs::File::open(&theirs_path).unwrap()).unwrap();
    assert_eq!(ours.provides, theirs.provides);
    assert_eq!(ours.depends, theirs.depends);
    assert_eq!(ours.clears_provides, theirs.clears_provides);
    let strip = |i: &mender_artifact::ArtifactInfo| {
        i.payloads[0]
            .files
            .iter()
            .map(|f| (f.name.clone(), f.size, f.checksum.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&ours), strip(&theirs));
    assert_eq!(ours.size, theirs.size, "same layout, same size");

    // Byte-identical metadata members.
    let (o, t) = (
        split(&fs::read(&ours_path).unwrap()),
        split(&fs::read(&theirs_path).unwrap()),
    );
    let names = |m: &[common::Member]| m.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&o), names(&t));
    assert_eq!(o[0].data, t[0].data, "version");
    // Manifests are identical except for the compressed header's checksum.
    let lines = |m: &common::Member| {
        String::from_utf8(m.data.clone())
            .unwrap()
            .lines()
            .map(|l| {
                if l.ends_with("header.tar.gz") {
                    "header".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(lines(&o[1]), lines(&t[1]), "manifest");
    let (oh, th) = (split(&gunzip(&o[2].data)), split(&gunzip(&t[2].data)));
    assert_eq!(names(&oh), names(&th));
    for (a, b) in oh.iter().zip(&th) {
        assert_eq!(a.data, b.data, "{}", a.name);
    }
}

#[test]
fn rich_module_image_all_compressions() {
    let Some(cli) = cli_or_skip("rich_module_image_all_compressions") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for c in [
        Compression::Gzip,
        Compression::None,
        Compression::Xz,
        Compression::Zstd,
    ] {
        let mut spec =
            ArtifactSpec::module_image("rich-2", vec!["t1".into(), "t2".into()], "script");
        spec.files.push(PayloadFile::from_bytes(
            "run.sh",
            b"#!/bin/sh\necho hi\n".to_vec(),
        ));
        spec.files.push(
            PayloadFile::from_bytes("blob.bin", vec![0xabu8; 3 << 20])
                .with_mode(0o600)
                .with_mtime(1_700_000_000),
        );
        spec.provides.insert("custom.key".into(), "val".into());
        spec.depends
            .insert("foo".into(), DependValue::One("bar".into()));
        spec.depends.insert(
            "rootfs-image.version".into(),
            DependValue::Many(vec!["1".into(), "2".into()]),
        );
        spec.meta_data =
            Some(serde_json::from_str(r#"{"k":"v","n":[1,2,"x"],"o":{"x":null}}"#).unwrap());
        spec.clears_provides.push("custom.*".into());
        spec.provides_group = Some("grp".into());
        spec.depends_artifact_names = vec!["rich-1".into()];
        spec.depends_groups = vec!["grp0".into()];
        spec.scripts.push(ScriptFile {
            name: "ArtifactInstall_Enter_10_hello".into(),
            content: b"#!/bin/sh\necho hello\n".to_vec(),
        });
        spec.compression = c;
        let path = dir.path().join(format!("rich-{c:?}.mender"));
        write_to(spec, &path);

        let info = verify_artifact(fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(info.compression, c);
        assert_eq!(info.artifact_group.as_deref(), Some("grp"));
        assert_eq!(info.scripts, ["ArtifactInstall_Enter_10_hello"]);
        assert_eq!(info.payloads[0].files[1].mtime, Some(1_700_000_000));
        assert_eq!(
            info.payloads[0].depends["rootfs-image.version"],
            DependValue::Many(vec!["1".into(), "2".into()])
        );
        assert_eq!(
            info.provides,
            BTreeMap::from([
                ("artifact_name".to_string(), "rich-2".to_string()),
                ("artifact_group".to_string(), "grp".to_string()),
                ("custom.key".to_string(), "val".to_string()),
                (
                    "rootfs-image.script.version".to_string(),
                    "rich-2".to_string()
                ),
            ])
        );

        if c == Compression::Zstd {
            // mender-artifact 3.9 (Debian) cannot read zstd artifacts; newer versions can.
            continue;
        }
        run(&cli, dir.path(), &["validate", path.to_str().unwrap()]);
        let r = cli_read(&cli, &path);
        assert_eq!(r.name, "rich-2");
        assert_eq!(r.device_types, ["t1", "t2"]);
        assert_eq!(r.provides_group, "grp");
        assert_eq!(r.depends_names, ["rich-1"]);
        assert_eq!(r.depends_groups, ["grp0"]);
        assert_eq!(r.scripts, ["ArtifactInstall_Enter_10_hello"]);
        let u = &r.updates[0];
        assert_eq!(u.payload_type, "script");
        assert_eq!(u.provides, info.payloads[0].provides);
        assert_eq!(u.depends["foo"], "bar");
        assert_eq!(u.clears, ["custom.*", "rootfs-image.script.*"]);
        assert_eq!(
            u.meta_data.as_ref().unwrap(),
            &serde_json::Value::Object(info.payloads[0].meta_data.clone())
        );
        let files: Vec<_> = info.payloads[0]
            .files
            .iter()
            .map(|f| (f.name.clone(), f.size.unwrap(), f.checksum.clone()))
            .collect();
        assert_eq!(u.files, files);
    }
}

#[test]
fn invalid_specs_are_rejected() {
    let mk = || ArtifactSpec::module_image("n", vec!["t".into()], "script");
    let mut s = mk();
    s.device_types.clear();
    assert!(write_artifact(s, std::io::sink()).is_err());
    let mut s = mk();
    s.files
        .push(PayloadFile::from_bytes("../evil", b"x".to_vec()));
    assert!(write_artifact(s, std::io::sink()).is_err());
    let mut s = mk();
    s.files.push(PayloadFile::from_bytes("a", b"x".to_vec()));
    s.files.push(PayloadFile::from_bytes("a", b"y".to_vec()));
    assert!(write_artifact(s, std::io::sink()).is_err());
    let mut s = mk();
    s.scripts.push(ScriptFile {
        name: "Download_Enter_00".into(),
        content: vec![],
    });
    assert!(write_artifact(s, std::io::sink()).is_err());
    assert!(ArtifactSpec::single_file(
        "n",
        vec!["t".into()],
        "relative/dir",
        PayloadFile::from_bytes("f", b"x".to_vec())
    )
    .is_err());
}
