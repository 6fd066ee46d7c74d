//! Releases (v1 and v2): artifacts grouped by name, listed with totals, filters and sorting;
//! tags (lower-cased, validated) and notes; all tags and update types; deleting a release is
//! refused while an active deployment uses it and otherwise removes its artifacts.

use black_box_tests::artifact::write_module_image;
use black_box_tests::json_of;
use black_box_tests::mgmt::location_id;
use black_box_tests::tempdir::TempDir;
use black_box_tests::{ensure_mender_cli, TestStack};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_group_tag_annotate_and_delete() -> anyhow::Result<()> {
    ensure_mender_cli()?;
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let work = TempDir::new("releases")?;
    let cli = stack.admin_cli().await?;
    let payload = work.path().join("p.sh");
    std::fs::write(&payload, "#!/bin/sh\ntrue\n")?;
    for (name, device_type, kind) in [
        ("rel-a", "board-1", "script"),
        ("rel-a", "board-2", "script"),
        ("rel-b", "board-1", "single-file"),
    ] {
        let out = work.path().join(format!("{name}-{device_type}.mender"));
        write_module_image(kind, name, device_type, &payload, &out)?;
        let upload = cli.upload_artifact(&out).await?;
        anyhow::ensure!(upload.success(), "{upload:?}");
    }

    let (status, headers, list) = admin
        .request(
            Method::GET,
            "/api/management/v2/deployments/deployments/releases?sort=name:desc",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("x-total-count").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let list = json_of(&list);
    assert_eq!(list[0]["name"], "rel-b");
    assert_eq!(list[1]["name"], "rel-a");
    assert_eq!(list[1]["artifacts_count"], 2);
    let (_, _, v1) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/deployments/releases?name=REL-A",
            None,
        )
        .await?;
    assert_eq!(json_of(&v1)[0]["Name"], "rel-a");
    assert_eq!(json_of(&v1)[0]["ArtifactsCount"], 2);

    // Tags and notes.
    let tags = "/api/management/v2/deployments/deployments/releases/rel-a/tags";
    let (status, _, _) = admin
        .request(
            Method::PUT,
            tags,
            Some(json!(["Stable", "stable", "lab-1"])),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = admin
        .request(Method::PUT, tags, Some(json!(["no spaces"])))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = admin
        .request(
            Method::PATCH,
            "/api/management/v2/deployments/deployments/releases/rel-a",
            Some(json!({"notes": "first release"})),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, rel) = admin
        .request(
            Method::GET,
            "/api/management/v2/deployments/deployments/releases/rel-a",
            None,
        )
        .await?;
    let rel = json_of(&rel);
    assert_eq!(rel["tags"], json!(["lab-1", "stable"]));
    assert_eq!(rel["notes"], "first release");
    let (status, _, _) = admin
        .request(
            Method::GET,
            "/api/management/v2/deployments/deployments/releases/nope",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, filtered) = admin
        .request(
            Method::GET,
            "/api/management/v2/deployments/deployments/releases?tag=STABLE",
            None,
        )
        .await?;
    assert_eq!(json_of(&filtered).as_array().map(Vec::len), Some(1));
    let (_, _, all_tags) = admin
        .request(
            Method::GET,
            "/api/management/v2/deployments/releases/all/tags",
            None,
        )
        .await?;
    assert_eq!(json_of(&all_tags), json!(["lab-1", "stable"]));
    let (_, _, types) = admin
        .request(
            Method::GET,
            "/api/management/v2/deployments/releases/all/types",
            None,
        )
        .await?;
    assert_eq!(json_of(&types), json!(["script", "single-file"]));

    // Delete: refused while in use, then allowed.
    let (status, headers, _) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/deployments",
            Some(json!({"name": "d", "artifact_name": "rel-b", "devices": ["x"]})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let deployment = location_id(&headers);
    let (status, _, refused) = admin
        .request(
            Method::DELETE,
            "/api/management/v2/deployments/deployments/releases?name=rel-b",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(json_of(&refused)["active_deployments"], json!([deployment]));
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            "/api/management/v2/deployments/deployments/releases?name=rel-a",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, artifacts) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/artifacts",
            None,
        )
        .await?;
    let names: Vec<Value> = json_of(&artifacts)
        .as_array()
        .map(|a| a.iter().map(|x| x["name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec![json!("rel-b")]);
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            "/api/management/v2/deployments/deployments/releases",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    stack.stop().await;
    Ok(())
}
