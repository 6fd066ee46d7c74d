//! Benchmark: parses an artifact file header-only and in full, next to the same work done by
//! other tools on the same file (`mender-artifact read`, `mender-artifact validate`,
//! `openssl dgst -sha256`), and prints the best time of N runs of each, the throughputs, the
//! ratio of the reader's throughput to openssl's and the process's peak RSS (VmHWM).
//!
//! `cargo run --release -p mender-artifact --bin artifact-bench -- FILE [RUNS]`
//!
//! The full-verification runs are interleaved (reader, openssl, validate, reader, ...) after
//! one warm-up pass, so the page cache is warm and a burst of load elsewhere affects all of
//! them alike. The other tools' times are of the whole process (start-up included); a tool
//! that is not installed is reported as such. Only figures are printed: nothing is asserted.

use std::fs::File;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mender_artifact::{read_header, verify_artifact, ArtifactInfo, Result};

const DEFAULT_RUNS: usize = 5;

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn timed(path: &str, f: fn(File) -> Result<ArtifactInfo>) -> Result<(ArtifactInfo, Duration)> {
    let file = File::open(path).map_err(|source| mender_artifact::Error::Io {
        context: path.to_string(),
        source,
    })?;
    let start = Instant::now();
    let info = f(file)?;
    Ok((info, start.elapsed()))
}

/// An external command run on the file, with the best time of its successful runs.
struct Tool {
    label: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    best: Option<Duration>,
    failure: Option<String>,
}

impl Tool {
    fn new(label: &'static str, program: &'static str, args: &'static [&'static str]) -> Self {
        Tool {
            label,
            program,
            args,
            best: None,
            failure: None,
        }
    }

    fn run(&mut self, path: &str) {
        if self.failure.is_some() {
            return;
        }
        let start = Instant::now();
        let status = Command::new(self.program)
            .args(self.args)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let elapsed = start.elapsed();
        match status {
            Ok(s) if s.success() => self.best = Some(self.best.map_or(elapsed, |b| b.min(elapsed))),
            Ok(s) => self.failure = Some(format!("failed ({s})")),
            Err(e) => self.failure = Some(format!("not available ({e})")),
        }
    }

    /// Best time in seconds, if any run succeeded.
    fn secs(&self) -> Option<f64> {
        self.best.map(|b| b.as_secs_f64().max(1e-9))
    }

    fn print(&self, len: u64) {
        let name = format!("{}:", self.label);
        match (self.secs(), &self.failure) {
            (Some(s), None) => println!("{name:<27} {:.3} s, {:.1} MB/s", s, len as f64 / s / 1e6),
            (_, Some(f)) => println!("{name:<27} {f}"),
            (None, None) => println!("{name:<27} not run"),
        }
    }
}

fn ratio(reader: f64, other: Option<f64>) -> String {
    // Throughput ratio on the same bytes = inverse ratio of the times.
    other.map_or_else(|| "n/a".into(), |o| format!("{:.2}x", o / reader))
}

fn run(path: &str, runs: usize) -> Result<()> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!("file:                       {path} ({len} bytes)");
    println!("runs:                       best of {runs} each, interleaved, after a warm-up pass");

    // Header-only: the Rust reader against `mender-artifact read`.
    let mut read_cli = Tool::new("mender-artifact read", "mender-artifact", &["read"]);
    let mut best_header = Duration::MAX;
    let mut header = None;
    for _ in 0..runs {
        let (info, t) = timed(path, read_header)?;
        best_header = best_header.min(t);
        header = Some(info);
    }
    for _ in 0..runs {
        read_cli.run(path);
    }
    if let Some(h) = &header {
        println!(
            "header-only parse:          {:.3} ms (read {} bytes; name {:?}, {} payload(s), signed {})",
            best_header.as_secs_f64() * 1e3,
            h.size,
            h.name,
            h.payloads.len(),
            h.signed
        );
    }
    match read_cli.secs() {
        Some(s) => println!(
            "{:<27} {:.3} ms (whole process)",
            "mender-artifact read:",
            s * 1e3
        ),
        None => read_cli.print(len),
    }

    // Full verification against openssl's SHA-256 of the file and `mender-artifact validate`.
    let mut openssl = Tool::new("openssl dgst -sha256", "openssl", &["dgst", "-sha256"]);
    let mut validate = Tool::new("mender-artifact validate", "mender-artifact", &["validate"]);
    // Warm-up: the whole file into the page cache.
    timed(path, verify_artifact)?;
    let mut best = Duration::MAX;
    let mut info = None;
    for _ in 0..runs {
        let (i, t) = timed(path, verify_artifact)?;
        best = best.min(t);
        info = Some(i);
        openssl.run(path);
        validate.run(path);
    }
    let Some(info) = info else {
        return Ok(());
    };
    let payload: u64 = info
        .payloads
        .iter()
        .flat_map(|p| &p.files)
        .filter_map(|f| f.size)
        .sum();
    let secs = best.as_secs_f64().max(1e-9);
    println!(
        "full verification (reader): {:.3} s, {:.1} MB/s of artifact, {:.1} MB/s of payload ({} bytes, {:?})",
        secs,
        len as f64 / secs / 1e6,
        payload as f64 / secs / 1e6,
        payload,
        info.compression
    );
    openssl.print(len);
    validate.print(len);
    println!(
        "reader / openssl:           {} (throughput ratio; reader / validate: {})",
        ratio(secs, openssl.secs()),
        ratio(secs, validate.secs())
    );
    println!("peak RSS (VmHWM):           {}", peak_rss());
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: artifact-bench FILE [RUNS]");
        return ExitCode::from(2);
    };
    let runs = match args.next().map(|r| r.parse::<usize>()) {
        None => DEFAULT_RUNS,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: artifact-bench FILE [RUNS]  (RUNS: a positive number)");
            return ExitCode::from(2);
        }
    };
    match run(&path, runs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
