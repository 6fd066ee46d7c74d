//! Shared helpers for the integration tests: running the real `mender-artifact` CLI,
//! parsing what `mender-artifact read` prints, and taking artifacts apart / putting them
//! back together to make malformed variants.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Path of the `mender-artifact` binary, or `None` (tests then print a skip notice).
pub fn cli() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("mender-artifact"))
        .find(|p| p.is_file())
}

/// Returns the CLI path or prints why the test is skipped.
pub fn cli_or_skip(test: &str) -> Option<PathBuf> {
    let c = cli();
    if c.is_none() {
        eprintln!("SKIPPED {test}: the mender-artifact binary is not installed");
    }
    c
}

/// Runs `mender-artifact <args>` in `dir`, panicking with its output on failure.
pub fn run(cli: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(cli)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mender-artifact");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "mender-artifact {args:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// One update as printed by `mender-artifact read`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CliUpdate {
    pub payload_type: String,
    pub provides: BTreeMap<String, String>,
    pub depends: BTreeMap<String, String>,
    pub clears: Vec<String>,
    pub meta_data: Option<serde_json::Value>,
    /// (name, size, checksum)
    pub files: Vec<(String, u64, String)>,
}

/// What `mender-artifact read` prints.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CliRead {
    pub name: String,
    pub version: u32,
    pub signed: bool,
    pub device_types: Vec<String>,
    pub provides_group: String,
    pub depends_names: Vec<String>,
    pub depends_groups: Vec<String>,
    pub scripts: Vec<String>,
    pub updates: Vec<CliUpdate>,
}

fn go_list(s: &str) -> Vec<String> {
    let s = s
        .trim()
        .trim_matches('\'')
        .trim_start_matches('[')
        .trim_end_matches(']');
    // Device types print as `[a b]`, depends as `[a, b]`.
    s.split_whitespace()
        .map(|x| x.trim_end_matches(',').to_string())
        .collect()
}

/// Runs `mender-artifact read` and parses its output.
pub fn cli_read(cli: &Path, artifact: &Path) -> CliRead {
    let text = run(
        cli,
        artifact.parent().unwrap(),
        &["read", artifact.to_str().unwrap()],
    );
    parse_cli_read(&text)
}

pub fn parse_cli_read(text: &str) -> CliRead {
    #[derive(PartialEq)]
    enum Section {
        None,
        Scripts,
        Provides,
        Depends,
        Meta,
        Files,
    }
    let mut r = CliRead::default();
    let mut section = Section::None;
    let mut meta = String::new();
    let mut file: Option<(String, u64)> = None;
    let start = text.find("Mender artifact:").expect("read output");
    for raw in text[start..].lines() {
        let line = raw.trim();
        let upd = r.updates.last_mut();
        if let Some(v) = line.strip_prefix("Name: ") {
            r.name = v.to_string();
        } else if let Some(v) = line.strip_prefix("Version: ") {
            r.version = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("Signature: ") {
            r.signed = !v.contains("no signature");
        } else if let Some(v) = line.strip_prefix("Compatible devices: ") {
            r.device_types = go_list(v);
        } else if let Some(v) = line.strip_prefix("Provides group:") {
            r.provides_group = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("Depends on one of artifact(s): ") {
            r.depends_names = go_list(v);
        } else if let Some(v) = line.strip_prefix("Depends on one of group(s): ") {
            r.depends_groups = go_list(v);
        } else if line == "State scripts:" {
            section = Section::Scripts;
        } else if line == "Updates:" {
            section = Section::None;
        } else if line.len() <= 4
            && line.ends_with(':')
            && line[..line.len() - 1].parse::<u32>().is_ok()
        {
            r.updates.push(CliUpdate::default());
            section = Section::None;
        } else if let (Some(v), Some(u)) = (line.strip_prefix("Type:"), upd) {
            u.payload_type = v.trim().to_string();
        } else if line.starts_with("Provides:") {
            section = Section::Provides;
        } else if line.starts_with("Depends:") {
            section = Section::Depends;
        } else if let Some(v) = line.strip_prefix("Clears Provides: ") {
            r.updates.last_mut().unwrap().clears = serde_json::from_str(v).unwrap();
            section = Section::None;
        } else if line.starts_with("Metadata:") {
            section = if line.contains("Nothing") {
                Section::None
            } else {
                Section::Meta
            };
            meta.clear();
        } else if line == "Files:" {
            if section == Section::Meta {
                r.updates.last_mut().unwrap().meta_data =
                    Some(serde_json::from_str(&meta).unwrap());
            }
            section = Section::Files;
        } else if section == Section::Scripts && !line.is_empty() {
            r.scripts.push(line.to_string());
        } else if section == Section::Meta {
            meta.push_str(line);
        } else if section == Section::Provides || section == Section::Depends {
            if let Some((k, v)) = line.split_once(": ") {
                let u = r.updates.last_mut().unwrap();
                let map = if section == Section::Provides {
                    &mut u.provides
                } else {
                    &mut u.depends
                };
                map.insert(k.to_string(), v.to_string());
            }
        } else if section == Section::Files {
            if let Some(v) = line.strip_prefix("name:") {
                file = Some((v.trim().to_string(), 0));
            } else if let Some(v) = line.strip_prefix("size:") {
                if let Some(f) = &mut file {
                    f.1 = v.trim().parse().unwrap();
                }
            } else if let Some(v) = line.strip_prefix("checksum:") {
                let (name, size) = file.take().unwrap();
                r.updates
                    .last_mut()
                    .unwrap()
                    .files
                    .push((name, size, v.trim().to_string()));
            }
        }
    }
    r
}

/// One member of the outer tar: name and content.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub data: Vec<u8>,
}

/// Splits an artifact (plain ustar written by mender-artifact) into its members.
pub fn split(artifact: &[u8]) -> Vec<Member> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= artifact.len() {
        let h = &artifact[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..end].to_vec()).unwrap();
        let size_txt = String::from_utf8(h[124..136].to_vec()).unwrap();
        let size =
            usize::from_str_radix(size_txt.trim_matches(|c| c == '\0' || c == ' '), 8).unwrap();
        pos += 512;
        out.push(Member {
            name,
            data: artifact[pos..pos + size].to_vec(),
        });
        pos += size.div_ceil(512) * 512;
    }
    out
}

/// A ustar header block for a regular file.
pub fn ustar_header(name: &str, size: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = b'0';
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

/// Builds a tar archive from (name, content) pairs.
pub fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        out.extend_from_slice(&ustar_header(name, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Reassembles members into an artifact.
pub fn join(members: &[Member]) -> Vec<u8> {
    let entries: Vec<(&str, &[u8])> = members
        .iter()
        .map(|m| (m.name.as_str(), m.data.as_slice()))
        .collect();
    tar(&entries)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Replaces the checksum of `path` in the `manifest` member (adds it if absent).
pub fn set_manifest_sum(members: &mut [Member], path: &str, data: &[u8]) {
    let m = members.iter_mut().find(|m| m.name == "manifest").unwrap();
    let text = String::from_utf8(m.data.clone()).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.ends_with(&format!("  {path}")))
        .map(str::to_string)
        .collect();
    lines.push(format!("{}  {path}", sha256_hex(data)));
    m.data = (lines.join("\n") + "\n").into_bytes();
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Reader that counts the bytes handed out.
pub struct Counting<R> {
    pub inner: R,
    pub count: u64,
    pub max_read: usize,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        self.max_read = self.max_read.max(n);
        Ok(n)
    }
}

/// Peak resident set size of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
