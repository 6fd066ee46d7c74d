//! Artifacts for the tests, written by the real `mender-artifact` (Debian package).

use std::path::Path;

/// `mender-artifact write module-image -T kind -n name -t device_type -f payload -o out`;
/// fails unless it exits 0.
pub fn write_module_image(
    kind: &str,
    name: &str,
    device_type: &str,
    payload: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let status = std::process::Command::new("mender-artifact")
        .args(["write", "module-image", "-T", kind, "-n", name])
        .args(["-t", device_type, "-f"])
        .arg(payload)
        .arg("-o")
        .arg(out)
        .status()?;
    anyhow::ensure!(status.success(), "mender-artifact write {name}: {status}");
    Ok(())
}
