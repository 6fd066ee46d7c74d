//! The service's rules against the in-memory store: deployments for devices, `next`, status
//! transitions with their counters and finish, aborting, artifact uniqueness, deletion refused
//! while in use, upload reservations, history stamps, and the retry after a lost race.

#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::{Deployments, Error, NewDeployment};
use crate::configuration::NewConfigurationDeployment;
use crate::model::{Artifact, Deployment, DeploymentStatus, DeviceStatus};
use crate::store::{ArtifactStore, DeviceDeploymentStore, MemoryStore};

const T: &str = "tenant";

fn service() -> Deployments<MemoryStore> {
    Deployments {
        store: MemoryStore::new(),
    }
}

fn artifact(id: &str, name: &str, device_types: &[&str], size: u64) -> Artifact {
    Artifact {
        id: id.into(),
        name: name.into(),
        device_types_compatible: device_types.iter().map(|t| (*t).to_owned()).collect(),
        size,
        ..Default::default()
    }
}

fn request(name: &str, artifact_name: &str) -> NewDeployment {
    NewDeployment {
        name: name.into(),
        artifact_name: artifact_name.into(),
        ..Default::default()
    }
}

/// A deployment of release `rel` (artifact `a1`, device type `dt`, 10 bytes) to `devices`.
async fn deployed(svc: &Deployments<MemoryStore>, devices: &[&str]) -> Deployment {
    if svc.store.get_artifact(T, "a1").await.unwrap().is_none() {
        svc.add_artifact(T, artifact("a1", "rel", &["dt"], 10))
            .await
            .unwrap();
    }
    let targets = devices.iter().map(|d| (*d).to_owned()).collect();
    svc.create_deployment(T, &request(&devices.join(","), "rel"), targets, vec![])
        .await
        .unwrap()
}

/// A counter of the stored deployment.
async fn count(svc: &Deployments<MemoryStore>, id: &str, status: DeviceStatus) -> i64 {
    let deployment = svc.deployment(T, id).await.unwrap();
    deployment.statistics[status.as_str()]
}

async fn device_status(svc: &Deployments<MemoryStore>, id: &str, device: &str) -> DeviceStatus {
    let dd = svc.store.device_deployment(T, id, device).await.unwrap();
    dd.unwrap().status
}

/// The error's kind and text (what `crate::http` answers with).
fn kind(e: Error) -> (&'static str, String) {
    match e {
        Error::BadRequest(m) => ("bad request", m),
        Error::NotFound(m) => ("not found", m),
        Error::Conflict(m) => ("conflict", m),
        Error::ArtifactExists(c) => ("artifact exists", c.to_string()),
        Error::Unprocessable(m) => ("unprocessable", m),
        Error::ReleasesInUse(ids) => ("releases in use", ids.join(",")),
        Error::Storage(e) => ("storage", e.to_string()),
        Error::Internal(m) => ("internal", m),
    }
}

#[tokio::test]
async fn a_deployment_targets_each_device_once_and_counts_it_pending() {
    let svc = service();
    svc.add_artifact(T, artifact("a1", "rel", &["dt"], 10))
        .await
        .unwrap();
    let targets = vec!["b".to_owned(), "a".to_owned(), "b".to_owned()];
    let d = svc
        .create_deployment(T, &request("d", "rel"), targets.clone(), vec![])
        .await
        .unwrap();
    assert_eq!(d.device_list, ["a", "b"]);
    assert_eq!(d.max_devices, 2);
    assert_eq!(d.artifacts, ["a1"]);
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!(stored.status, DeploymentStatus::Pending);
    assert_eq!(stored.statistics["pending"], 2);
    assert_eq!(stored.statistics.len(), 13);
    let devices = svc.deployment_devices(T, &d.id).await.unwrap();
    let ids: Vec<_> = devices.iter().map(|dd| dd.device_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(devices.iter().all(|dd| dd.status == DeviceStatus::Pending));

    // The same active deployment again, one for nothing, one of an unknown release.
    let same = request("d", "rel");
    let again = svc.create_deployment(T, &same, targets, vec![]);
    assert_eq!(
        kind(again.await.unwrap_err()),
        (
            "conflict",
            "Invalid deployment definition: there is already an active deployment with the same parameters".into()
        )
    );
    let none = svc.create_deployment(T, &same, vec![], vec![]);
    assert_eq!(kind(none.await.unwrap_err()).0, "bad request");
    let nope = request("d", "nope");
    let unknown = svc.create_deployment(T, &nope, vec!["a".into()], vec![]);
    assert_eq!(
        kind(unknown.await.unwrap_err()),
        ("unprocessable", "No artifact for the deployment".into())
    );
    assert_eq!(svc.deployments(T).await.unwrap().len(), 1);
}

#[tokio::test]
async fn next_gives_the_smallest_compatible_artifact_and_counts_the_first_fetch_once() {
    let svc = service();
    // Two artifacts of one release for `dt` differ in their other depends.
    let mut big = artifact("big", "rel", &["dt"], 100);
    big.artifact_depends.insert("rootfs".into(), json!("v1"));
    for a in [
        big,
        artifact("small", "rel", &["dt", "dt2"], 10),
        artifact("other", "rel", &["dt3"], 1),
    ] {
        svc.add_artifact(T, a).await.unwrap();
    }
    let d = svc
        .create_deployment(T, &request("d", "rel"), vec!["dev".into()], vec![])
        .await
        .unwrap();
    for _ in 0..2 {
        let next = svc.next(T, "dev", "dt", "old").await.unwrap().unwrap();
        assert_eq!(next.artifact.id, "small");
        assert_eq!(next.deployment.id, d.id);
    }
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!((stored.device_count, stored.total_size), (1, 10));
    assert_eq!(
        device_status(&svc, &d.id, "dev").await,
        DeviceStatus::Pending
    );
    // Another device asks for nothing.
    assert!(svc.next(T, "idle", "dt", "old").await.unwrap().is_none());
    let missing = svc.next(T, "dev", "", "old").await.unwrap_err();
    assert_eq!(
        kind(missing),
        ("bad request", "Missing identity data".into())
    );
}

#[tokio::test]
async fn next_settles_already_installed_and_noartifact_devices() {
    let svc = service();
    let d = deployed(&svc, &["x", "y"]).await;
    // x runs the release already, y is of a type no artifact supports.
    assert!(svc.next(T, "x", "dt", "rel").await.unwrap().is_none());
    assert!(svc.next(T, "y", "dt9", "old").await.unwrap().is_none());
    assert_eq!(
        device_status(&svc, &d.id, "x").await,
        DeviceStatus::AlreadyInstalled
    );
    assert_eq!(
        device_status(&svc, &d.id, "y").await,
        DeviceStatus::Noartifact
    );
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!(stored.statistics["already-installed"], 1);
    assert_eq!(stored.statistics["noartifact"], 1);
    assert_eq!(stored.statistics["pending"], 0);
    // Nothing to download: x counts, its bytes do not.
    assert_eq!((stored.device_count, stored.total_size), (1, 0));
    assert_eq!(stored.status, DeploymentStatus::Finished);
    assert!(stored.finished.is_some());
    assert!(svc
        .store
        .active_for_device(T, "x")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn status_reports_move_the_counters_and_finish_the_deployment() {
    let svc = service();
    let d = deployed(&svc, &["a", "b"]).await;
    svc.report_status(T, "a", &d.id, "downloading", None)
        .await
        .unwrap();
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!(stored.status, DeploymentStatus::Inprogress);
    assert_eq!(stored.statistics["downloading"], 1);
    assert_eq!(stored.statistics["pending"], 1);
    let dd = svc.store.device_deployment(T, &d.id, "a").await.unwrap();
    let started = dd.unwrap().started.unwrap();
    // A repeat changes nothing, a new substate is kept.
    svc.report_status(T, "a", &d.id, "downloading", None)
        .await
        .unwrap();
    svc.report_status(T, "a", &d.id, "installing", Some("copying".into()))
        .await
        .unwrap();
    let dd = svc.store.device_deployment(T, &d.id, "a").await.unwrap();
    let dd = dd.unwrap();
    assert_eq!(dd.substate.as_deref(), Some("copying"));
    assert_eq!(dd.started.as_deref(), Some(started.as_str()));
    assert_eq!(count(&svc, &d.id, DeviceStatus::Downloading).await, 0);
    assert_eq!(count(&svc, &d.id, DeviceStatus::Installing).await, 1);

    svc.report_status(T, "a", &d.id, "success", None)
        .await
        .unwrap();
    let dd = svc.store.device_deployment(T, &d.id, "a").await.unwrap();
    assert!(dd.unwrap().finished.is_some());
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!(stored.status, DeploymentStatus::Inprogress);
    assert!(stored.finished.is_none());
    svc.report_status(T, "b", &d.id, "failure", None)
        .await
        .unwrap();
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!(stored.status, DeploymentStatus::Finished);
    assert!(stored.finished.is_some());
    let total: i64 = stored.statistics.values().sum();
    assert_eq!(total, 2);

    let bad = svc.report_status(T, "a", &d.id, "pending", None).await;
    assert_eq!(
        kind(bad.unwrap_err()),
        ("bad request", "invalid status: pending".into())
    );
    let unknown = svc.report_status(T, "zz", &d.id, "success", None).await;
    assert_eq!(
        kind(unknown.unwrap_err()),
        ("not found", "Resource not found".into())
    );
}

#[tokio::test]
async fn aborting_ends_every_unfinished_device_and_refuses_later_reports() {
    let svc = service();
    let d = deployed(&svc, &["a", "b", "c"]).await;
    svc.report_status(T, "a", &d.id, "success", None)
        .await
        .unwrap();
    svc.report_status(T, "b", &d.id, "downloading", None)
        .await
        .unwrap();
    svc.abort(T, &d.id).await.unwrap();
    assert_eq!(device_status(&svc, &d.id, "a").await, DeviceStatus::Success);
    assert_eq!(device_status(&svc, &d.id, "b").await, DeviceStatus::Aborted);
    assert_eq!(device_status(&svc, &d.id, "c").await, DeviceStatus::Aborted);
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!(stored.statistics["aborted"], 2);
    assert_eq!(stored.statistics["success"], 1);
    assert_eq!(stored.statistics["downloading"], 0);
    assert_eq!(stored.status, DeploymentStatus::Finished);

    let late = svc.report_status(T, "b", &d.id, "installing", None).await;
    assert_eq!(
        kind(late.unwrap_err()),
        ("conflict", "Deployment aborted".into())
    );
    let again = svc.abort(T, &d.id).await;
    assert_eq!(
        kind(again.unwrap_err()),
        ("unprocessable", "Deployment already finished".into())
    );

    // A decommissioned device's deployments end too.
    let e = deployed(&svc, &["d"]).await;
    svc.end_device_deployments(T, "d", DeviceStatus::Decommissioned)
        .await
        .unwrap();
    let late = svc.report_status(T, "d", &e.id, "installing", None).await;
    assert_eq!(
        kind(late.unwrap_err()),
        ("conflict", "Device decommissioned".into())
    );
    assert_eq!(
        svc.deployment(T, &e.id).await.unwrap().status,
        DeploymentStatus::Finished
    );
}

#[tokio::test]
async fn an_artifact_name_and_depends_are_unique() {
    let svc = service();
    svc.add_artifact(T, artifact("1", "rel", &["dt1", "dt2"], 1))
        .await
        .unwrap();
    let clash = svc.add_artifact(T, artifact("2", "rel", &["dt2", "dt3"], 1));
    assert_eq!(
        kind(clash.await.unwrap_err()),
        ("artifact exists", json!({"device_type": "dt2"}).to_string())
    );
    // Nothing of the refused artifact is stored: dt3 is still free.
    assert!(svc.artifact(T, "2").await.is_err());
    svc.add_artifact(T, artifact("3", "rel", &["dt3"], 1))
        .await
        .unwrap();
    // Another name, or the same device type with other depends, is another artifact.
    svc.add_artifact(T, artifact("4", "other", &["dt1"], 1))
        .await
        .unwrap();
    let mut depends = artifact("5", "rel", &["dt1"], 1);
    depends
        .artifact_depends
        .insert("checksum".into(), json!("x"));
    svc.add_artifact(T, depends).await.unwrap();
    // Deleting an artifact frees its name and depends.
    svc.delete_artifact(T, "1").await.unwrap();
    svc.add_artifact(T, artifact("6", "rel", &["dt1", "dt2"], 1))
        .await
        .unwrap();
    let ids: Vec<String> = svc
        .artifacts(T)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, ["4", "3", "5", "6"]);
    assert!(!svc
        .is_artifact_unique(T, "other", &["dt1".into()])
        .await
        .unwrap());
    assert!(svc
        .is_artifact_unique(T, "other", &["dt2".into()])
        .await
        .unwrap());
}

#[tokio::test]
async fn a_new_artifact_joins_the_unfinished_deployments_of_its_release() {
    let svc = service();
    let active = deployed(&svc, &["a"]).await;
    let done = deployed(&svc, &["b"]).await;
    svc.abort(T, &done.id).await.unwrap();
    svc.add_artifact(T, artifact("a2", "rel", &["dt2"], 5))
        .await
        .unwrap();
    assert_eq!(
        svc.deployment(T, &active.id).await.unwrap().artifacts,
        ["a1", "a2"]
    );
    assert_eq!(svc.deployment(T, &done.id).await.unwrap().artifacts, ["a1"]);
    // ... so a device of the new type gets it.
    let next = svc.next(T, "a", "dt2", "old").await.unwrap().unwrap();
    assert_eq!(next.artifact.id, "a2");
}

#[tokio::test]
async fn artifacts_and_releases_in_use_are_not_deleted() {
    let svc = service();
    let d = deployed(&svc, &["a"]).await;
    svc.set_release_notes(T, "rel", "notes".into())
        .await
        .unwrap();
    let artifact = svc.delete_artifact(T, "a1").await;
    assert_eq!(
        kind(artifact.unwrap_err()),
        ("conflict", "Artifact is used in active deployment".into())
    );
    let release = svc.delete_releases(T, &["rel".into()]).await;
    assert_eq!(
        kind(release.unwrap_err()),
        ("releases in use", d.id.clone())
    );
    assert_eq!(svc.release(T, "rel").await.unwrap().notes, "notes");

    svc.abort(T, &d.id).await.unwrap();
    let deleted = svc.delete_releases(T, &["rel".into()]).await.unwrap();
    assert_eq!(deleted, ["a1"]);
    assert!(svc.artifacts(T).await.unwrap().is_empty());
    assert!(svc.store.release_metas(T).await.unwrap().is_empty());
    let nothing = svc.delete_releases(T, &[]).await;
    assert_eq!(kind(nothing.unwrap_err()).0, "bad request");
}

#[tokio::test]
async fn a_status_report_that_lost_a_race_is_retried_on_the_new_state() {
    let svc = service();
    let d = deployed(&svc, &["a"]).await;
    svc.report_status(T, "a", &d.id, "downloading", None)
        .await
        .unwrap();
    // Another report moves the device to installing between this one's read and its write.
    let mut other = svc
        .store
        .device_deployment(T, &d.id, "a")
        .await
        .unwrap()
        .unwrap();
    other.status = DeviceStatus::Installing;
    svc.store.race_next_transition(
        other,
        DeviceStatus::Downloading,
        &[("c_downloading", -1), ("c_installing", 1)],
    );
    svc.report_status(T, "a", &d.id, "success", None)
        .await
        .unwrap();
    assert_eq!(device_status(&svc, &d.id, "a").await, DeviceStatus::Success);
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!(stored.statistics["success"], 1);
    assert_eq!(stored.statistics["installing"], 0);
    assert_eq!(stored.statistics["downloading"], 0);
    assert_eq!(stored.status, DeploymentStatus::Finished);
}

#[tokio::test]
async fn a_device_that_changes_its_request_after_starting_fails() {
    let svc = service();
    let d = deployed(&svc, &["a"]).await;
    assert!(svc.next(T, "a", "dt", "old").await.unwrap().is_some());
    // While pending, another request is fine.
    assert!(svc.next(T, "a", "dt", "older").await.unwrap().is_some());
    svc.report_status(T, "a", &d.id, "downloading", None)
        .await
        .unwrap();
    assert!(svc.next(T, "a", "dt", "old").await.unwrap().is_some());
    let changed = svc.next(T, "a", "dt", "other").await;
    assert_eq!(
        kind(changed.unwrap_err()),
        (
            "conflict",
            "Device provided conflicting request data".into()
        )
    );
    assert_eq!(device_status(&svc, &d.id, "a").await, DeviceStatus::Failure);
    assert_eq!(count(&svc, &d.id, DeviceStatus::Failure).await, 1);
    assert_eq!(count(&svc, &d.id, DeviceStatus::Downloading).await, 0);
}

#[tokio::test]
async fn upload_ids_are_reserved_once_and_direct_uploads_move_forward_only() {
    let svc = service();
    svc.reserve_artifact_id(T, "x").await.unwrap();
    let taken = svc.reserve_artifact_id(T, "x").await;
    assert_eq!(
        kind(taken.unwrap_err()),
        (
            "conflict",
            "artifact with the same id already exists".into()
        )
    );
    svc.release_artifact_id(T, "x", false).await.unwrap();
    svc.reserve_artifact_id(T, "x").await.unwrap();
    svc.add_artifact(T, artifact("live", "rel", &["dt"], 1))
        .await
        .unwrap();
    assert!(svc.reserve_artifact_id(T, "live").await.is_err());

    let id = svc.start_direct_upload(T).await.unwrap();
    let status = |id: String| {
        let svc = &svc;
        async move { svc.direct_upload_status(T, &id).await.unwrap() }
    };
    assert_eq!(status(id.clone()).await.as_deref(), Some("pending"));
    svc.complete_direct_upload(T, &id).await.unwrap();
    let again = svc.complete_direct_upload(T, &id).await;
    assert_eq!(
        kind(again.unwrap_err()),
        ("not found", "Resource not found".into())
    );
    svc.finish_direct_upload(T, &id, "completed").await.unwrap();
    svc.finish_direct_upload(T, &id, "aborted").await.unwrap();
    assert_eq!(status(id).await.as_deref(), Some("completed"));
    assert_eq!(status("nope".into()).await, None);
}

#[tokio::test]
async fn a_configuration_deployment_id_is_taken_once() {
    let svc = service();
    let new = NewConfigurationDeployment {
        deployment_id: uuid::Uuid::new_v4().to_string(),
        device_id: "dev".into(),
        name: "configuration-1".into(),
        configuration: r#"{"k":"v"}"#.into(),
        ..Default::default()
    };
    let d = svc
        .create_configuration_deployment(T, new.clone())
        .await
        .unwrap();
    let again = svc.create_configuration_deployment(T, new).await;
    assert_eq!(
        kind(again.unwrap_err()),
        ("conflict", "Deployment with given ID already exists".into())
    );
    let next = svc.next(T, "dev", "dt", "old").await.unwrap().unwrap();
    assert_eq!(next.artifact.id, format!("{}dev", d.id));
    let stored = svc.deployment(T, &d.id).await.unwrap();
    assert_eq!((stored.device_count, stored.total_size), (1, 0));
}

#[tokio::test]
async fn history_is_stamped_deleted_once_and_only_when_finished() {
    let svc = service();
    let first = deployed(&svc, &["d"]).await;
    svc.abort(T, &first.id).await.unwrap();
    let second = deployed(&svc, &["d", "e"]).await;
    assert_eq!(svc.delete_device_history(T, "d").await.unwrap(), 1);
    assert_eq!(svc.delete_device_history(T, "d").await.unwrap(), 0);
    let history = svc.device_history(T, "d").await.unwrap();
    let ids: Vec<&str> = history.iter().map(|(d, _)| d.id.as_str()).collect();
    if first.created == second.created {
        // Same millisecond: ordered by deployment id.
        assert_eq!(ids.len(), 2);
    } else {
        assert_eq!(ids, [second.id.as_str(), first.id.as_str()]);
    }
    let stamped: Vec<bool> = history.iter().map(|(_, dd)| dd.deleted.is_some()).collect();
    let finished: Vec<bool> = history
        .iter()
        .map(|(_, dd)| dd.status.is_terminal())
        .collect();
    assert_eq!(stamped, finished);
}

#[tokio::test]
async fn statistics_of_repeated_ids_are_read_once_and_logs_need_a_deployment() {
    let svc = service();
    let d = deployed(&svc, &["a"]).await;
    let ids = vec![d.id.clone(), d.id.clone(), "unknown".into()];
    let found = svc.statistics_of(T, &ids).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1["pending"], 1);
    let none = svc.statistics_of(T, &["unknown".into()]).await;
    assert_eq!(
        kind(none.unwrap_err()),
        ("not found", "Deployment not found".into())
    );

    let line = json!({"timestamp": "2024-01-01T00:00:00Z", "level": "info", "message": "hi"});
    let orphan = svc
        .put_log(T, "a", "nope", std::slice::from_ref(&line))
        .await;
    assert_eq!(
        kind(orphan.unwrap_err()),
        ("not found", "Deployment not found".into())
    );
    svc.put_log(T, "a", &d.id, &[line]).await.unwrap();
    let dd = svc.store.device_deployment(T, &d.id, "a").await.unwrap();
    assert!(dd.unwrap().log);
    assert_eq!(
        svc.log_text(T, &d.id, "a").await.unwrap(),
        "2024-01-01 00:00:00 +0000 UTC info: hi\n"
    );
}
