//! deviceconfig through the HTTP API, and a real `mender-client` applying a configuration.
//!
//! * `device_and_management_api`: provisioning creates the device's record, the management
//!   `PUT`/`GET` and the device `GET`/`PUT`, upstream's validation texts and statuses, 404s,
//!   the deploy's errors (unknown device, malformed body, update control map), and
//!   decommissioning deletes the record.
//! * `configuration_deployment_and_download`: deploy creates a configuration deployment in
//!   deployments; `next` offers it with a server-signed link on the caller's host; the link's
//!   `GET` is a `mender-configure` artifact whose meta-data is the configuration (read by our
//!   reader and by `mender-artifact read`); tampered, incomplete, expired links and unknown
//!   deployments are refused as upstream.
//! * `real_client_applies_configuration`: the Debian `mender-client` with upstream's
//!   `mender-configure` update module receives the configuration set through the management
//!   API, writes it to its configuration file, runs the apply scripts and reports success.

use std::time::Duration;

use black_box_tests::device::Device;
use black_box_tests::json_of;
use black_box_tests::mender_client::install_file;
use black_box_tests::mgmt::https_client;
use black_box_tests::tempdir::TempDir;
use black_box_tests::{mender_available, wait_for, ClientOptions, MenderClient, Mgmt, TestStack};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn config_path(device_id: &str) -> String {
    format!("/api/management/v1/deviceconfig/configurations/device/{device_id}")
}

const DEVICE_PATH: &str = "/api/devices/v1/deviceconfig/configuration";

/// A device call with the device's token (or `token`), raw body.
async fn device_call(
    stack: &TestStack,
    device: &Device,
    method: Method,
    path: &str,
    raw: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, Value)> {
    let http = https_client(&stack.ca_cert())?;
    let mut request = http
        .request(method, format!("{}{path}", stack.url()))
        .bearer_auth(token.or(device.token.as_deref()).unwrap_or_default());
    if let Some(raw) = raw {
        request = request
            .header("Content-Type", "application/json")
            .body(raw.to_owned());
    }
    let response = request.send().await?;
    let status = response.status();
    Ok((status, json_of(&response.bytes().await?)))
}

/// A management call with a raw body.
async fn raw_mgmt(
    admin: &Mgmt,
    method: Method,
    path: &str,
    raw: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let response = admin
        .http()
        .request(method, format!("{}{path}", admin.base_url()))
        .bearer_auth(admin.token())
        .header("Content-Type", "application/json")
        .body(raw.to_owned())
        .send()
        .await?;
    let status = response.status();
    Ok((status, json_of(&response.bytes().await?)))
}

/// The device's record once the provision step created it.
async fn provisioned(admin: &Mgmt, device_id: &str) -> anyhow::Result<Value> {
    let path = config_path(device_id);
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let (status, record) = admin.request_json(Method::GET, &path, None).await.ok()?;
            (status == StatusCode::OK).then_some(record)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_and_management_api() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (device, id) = stack.admitted_device(&admin, "02:00:00:00:c0:01").await?;

    // Provisioning created an empty record.
    let record = provisioned(&admin, &id).await?;
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["configured"], json!({}));
    assert_eq!(record["reported"], json!({}));
    assert!(record["updated_ts"].is_string(), "{record}");
    assert!(record.get("deployment_id").is_none(), "{record}");
    assert!(record.get("reported_ts").is_none(), "{record}");
    let (status, configured) =
        device_call(&stack, &device, Method::GET, DEVICE_PATH, None, None).await?;
    assert_eq!((status, configured), (StatusCode::OK, json!({})));

    // Management PUT replaces the configured map; the device reads it.
    let path = config_path(&id);
    let (status, _) = raw_mgmt(&admin, Method::PUT, &path, r#"{"a":"1","b":"x"}"#).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = raw_mgmt(&admin, Method::PUT, &path, r#"{"a":"2","c":""}"#).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, record) = admin.request_json(Method::GET, &path, None).await?;
    assert_eq!(record["configured"], json!({"a": "2", "c": ""}));
    let (status, configured) =
        device_call(&stack, &device, Method::GET, DEVICE_PATH, None, None).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(configured, json!({"a": "2", "c": ""}));

    // The device reports what it applied.
    let (status, _) = device_call(
        &stack,
        &device,
        Method::PUT,
        DEVICE_PATH,
        Some(r#"{"a":"2"}"#),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, record) = admin.request_json(Method::GET, &path, None).await?;
    assert_eq!(record["reported"], json!({"a": "2"}));
    assert_eq!(record["configured"], json!({"a": "2", "c": ""}));
    assert!(record["reported_ts"].is_string(), "{record}");

    // Validation, with upstream's texts.
    let cases = [
        (r#"{"a":1}"#, "invalid request body: value: invalid type: float64."),
        (r#"{"a":true}"#, "invalid request body: value: invalid type: bool."),
        (r#"{"a":null}"#, "invalid request body: value: invalid type: <nil>."),
        (
            r#"{"a":["x"]}"#,
            "invalid request body: value: invalid type: []interface {}.",
        ),
        (r#"{"":"x"}"#, "invalid request body: key: cannot be blank."),
        (
            "[]",
            "malformed request body: json: cannot unmarshal array into Go value of type map[string]interface {}",
        ),
    ];
    for (raw, message) in cases {
        let (status, error) = raw_mgmt(&admin, Method::PUT, &path, raw).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}: {error}");
        assert_eq!(error["error"], message, "{raw}");
        assert!(error["request_id"].is_string());
        let (status, error) =
            device_call(&stack, &device, Method::PUT, DEVICE_PATH, Some(raw), None).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "device {raw}");
        assert_eq!(error["error"], message, "device {raw}");
    }
    let long_key = format!(r#"{{"{}":"v"}}"#, "k".repeat(4097));
    let (status, error) = raw_mgmt(&admin, Method::PUT, &path, &long_key).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error["error"],
        "invalid request body: key: the length must be no more than 4096."
    );
    let long_value = format!(r#"{{"k":"{}"}}"#, "v".repeat(4097));
    let (status, error) = raw_mgmt(&admin, Method::PUT, &path, &long_value).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error["error"],
        "invalid request body: value: the length must be no more than 4096."
    );
    let (status, error) = raw_mgmt(&admin, Method::PUT, &path, "{").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["error"]
        .as_str()
        .unwrap_or_default()
        .starts_with("malformed request body: "));
    // Nothing of that was stored.
    let (_, record) = admin.request_json(Method::GET, &path, None).await?;
    assert_eq!(record["configured"], json!({"a": "2", "c": ""}));

    // Unknown devices: 404 on GET and deploy; PUT upserts.
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, error) = admin
        .request_json(Method::GET, &config_path(&unknown), None)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"], "device does not exist");
    let deploy_unknown = format!("{}/deploy", config_path(&unknown));
    let (status, error) =
        raw_mgmt(&admin, Method::POST, &deploy_unknown, r#"{"retries":0}"#).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"], "device does not exist");
    let (status, _) = raw_mgmt(&admin, Method::PUT, &config_path(&unknown), r#"{"k":"v"}"#).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, record) = admin
        .request_json(Method::GET, &config_path(&unknown), None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["configured"], json!({"k": "v"}));
    assert_eq!(record["reported"], json!({}));

    // Deploy: malformed bodies, the update control map (Enterprise only).
    let deploy = format!("{path}/deploy");
    for (raw, message) in [
        ("", "malformed request body: EOF"),
        (
            r#"{"retries":-1}"#,
            "malformed request body: json: cannot unmarshal number -1 into Go struct field DeployConfigurationRequest.retries of type uint",
        ),
        (
            r#"{"retries":"1"}"#,
            "malformed request body: json: cannot unmarshal string into Go struct field DeployConfigurationRequest.retries of type uint",
        ),
    ] {
        let (status, error) = raw_mgmt(&admin, Method::POST, &deploy, raw).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}");
        assert_eq!(error["error"], message, "{raw}");
    }
    let (status, error) = raw_mgmt(
        &admin,
        Method::POST,
        &deploy,
        r#"{"retries":1,"update_control_map":{"priority":1}}"#,
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        error["error"],
        "forbidden: update control map is available only for Enterprise customers"
    );
    let (_, record) = admin.request_json(Method::GET, &path, None).await?;
    assert!(record.get("deployment_id").is_none(), "{record}");

    // Tokens: none, or the other audience's.
    let http = https_client(&stack.ca_cert())?;
    let status = http
        .get(format!("{}{path}", stack.url()))
        .send()
        .await?
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = device_call(
        &stack,
        &device,
        Method::GET,
        DEVICE_PATH,
        None,
        Some(admin.token()),
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let device_token = device.token.clone().unwrap_or_default();
    let response = http
        .get(format!("{}{path}", stack.url()))
        .bearer_auth(&device_token)
        .send()
        .await?;
    assert!(
        [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&response.status()),
        "{}",
        response.status()
    );

    // A device without a record: the device GET is 404, its PUT upserts.
    stack
        .stack
        .services
        .deviceconfig
        .delete_device("", &id)
        .await?;
    let (status, error) =
        device_call(&stack, &device, Method::GET, DEVICE_PATH, None, None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"], "device does not exist");
    let (status, _) = device_call(
        &stack,
        &device,
        Method::PUT,
        DEVICE_PATH,
        Some(r#"{"r":"1"}"#),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, record) = admin.request_json(Method::GET, &path, None).await?;
    assert_eq!(record["reported"], json!({"r": "1"}));
    assert_eq!(record["configured"], json!({}));
    assert!(record["updated_ts"].is_null(), "{record}");

    // Decommissioning deletes the record.
    admin.decommission(&id).await?;
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let (status, _) = admin.request_json(Method::GET, &path, None).await.ok()?;
            (status == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await?;
    stack.stop().await;
    Ok(())
}

/// The query parameters of a URL, decoded.
fn query(url: &str) -> Vec<(String, String)> {
    let Ok(url) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_deployment_and_download() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (device, id) = stack.admitted_device(&admin, "02:00:00:00:c0:02").await?;
    provisioned(&admin, &id).await?;
    let path = config_path(&id);
    let (status, _) = raw_mgmt(
        &admin,
        Method::PUT,
        &path,
        r#"{"timezone":"Europe/Oslo","x":"1"}"#,
    )
    .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, deployed) = raw_mgmt(
        &admin,
        Method::POST,
        &format!("{path}/deploy"),
        r#"{"retries":2}"#,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{deployed}");
    let deployment_id = deployed["deployment_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&deployment_id).is_ok(), "{deployed}");
    let (_, record) = admin.request_json(Method::GET, &path, None).await?;
    assert_eq!(record["deployment_id"], deployment_id.as_str());

    // The deployment in deployments.
    let (status, deployment) = admin
        .request_json(
            Method::GET,
            &format!("/api/management/v1/deployments/deployments/{deployment_id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{deployment}");
    assert_eq!(deployment["type"], "configuration");
    let name = format!("configuration-{deployment_id}");
    assert_eq!(deployment["name"], name.as_str());
    assert_eq!(deployment["artifact_name"], name.as_str());
    assert_eq!(deployment["max_devices"], 1);
    assert_eq!(deployment["status"], "pending");
    use base64::Engine as _;
    let shown = base64::engine::general_purpose::STANDARD
        .decode(deployment["configuration"].as_str().unwrap_or_default())?;
    assert_eq!(
        json_of(&shown),
        json!({"timezone": "Eur...<omitted>", "x": "1"})
    );

    // next: the deployment with a link signed for this device.
    let http = https_client(&stack.ca_cert())?;
    let next = http
        .post(format!(
            "{}/api/devices/v2/deployments/device/deployments/next",
            stack.url()
        ))
        .bearer_auth(device.token.as_deref().unwrap_or_default())
        .json(&json!({"device_provides": {"device_type": "rpi4", "artifact_name": "initial"}}))
        .send()
        .await?;
    assert_eq!(next.status(), StatusCode::OK);
    let next = json_of(&next.bytes().await?);
    assert_eq!(next["id"], deployment_id.as_str());
    assert_eq!(
        next["artifact"]["id"],
        format!("{deployment_id}{id}").as_str()
    );
    assert_eq!(next["artifact"]["artifact_name"], name.as_str());
    assert_eq!(next["artifact"]["device_types_compatible"], json!(["rpi4"]));
    let uri = next["artifact"]["source"]["uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let expected_prefix = format!(
        "{}/api/devices/v1/deployments/download/configuration/{deployment_id}/rpi4/{id}?x-men-expire=",
        stack.url()
    );
    assert!(uri.starts_with(&expected_prefix), "{uri}");
    assert!(next["artifact"]["source"]["expire"].is_string());

    // The download: a mender-configure artifact with the configuration as meta-data.
    let response = http.get(&uri).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.mender-artifact"
    );
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"artifact.mender\""
    );
    let bytes = response.bytes().await?;
    let info = mender_artifact::verify_artifact(std::io::Cursor::new(bytes.to_vec()))?;
    assert_eq!(info.name, name);
    assert_eq!(info.version, 3);
    assert_eq!(info.device_types_compatible, vec!["rpi4".to_string()]);
    assert_eq!(info.payloads.len(), 1);
    assert_eq!(
        info.payloads[0].payload_type.as_deref(),
        Some("mender-configure")
    );
    assert_eq!(
        Value::Object(info.payloads[0].meta_data.clone()),
        json!({"timezone": "Europe/Oslo", "x": "1"})
    );
    assert_eq!(
        info.provides.get("data-partition.mender-configure.version"),
        Some(&name)
    );
    assert_eq!(
        info.clears_provides,
        vec!["data-partition.mender-configure.*".to_string()]
    );
    let work = TempDir::new("deviceconfig")?;
    let file = work.path().join("configuration.mender");
    std::fs::write(&file, &bytes)?;
    if let Ok(out) = std::process::Command::new("mender-artifact")
        .arg("read")
        .arg(&file)
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "mender-artifact read: {text}");
        assert!(text.contains("mender-configure"), "{text}");
    }

    // Bad links.
    let params = query(&uri);
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let base = uri.split_once('?').map(|(b, _)| b).unwrap_or_default();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let response = http.get(url).send().await?;
            let status = response.status();
            anyhow::Ok((status, json_of(&response.bytes().await?)))
        }
    };
    let (status, error) = get(base.to_owned()).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error["error"],
        "invalid request parameters: x-men-expire: cannot be blank; x-men-signature: cannot be blank."
    );
    let mut sig = param("x-men-signature");
    sig.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
    let expire = param("x-men-expire");
    let (status, error) = get(format!(
        "{base}?x-men-expire={expire}&x-men-signature={sig}"
    ))
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error["error"], "signature invalid");
    // Another device id with this device's signature.
    let other = uri.replace(&format!("/{id}?"), &format!("/{}?", uuid::Uuid::new_v4()));
    let (status, error) = get(other).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error["error"], "signature invalid");
    let (status, error) = get(format!(
        "{base}?x-men-expire=yesterday&x-men-signature={sig}"
    ))
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error["error"],
        "invalid request parameters: parameter 'x-men-expire' is not a valid timestamp"
    );
    let presign = &stack.stack.services.presign;
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let expired = presign.link(stack.url(), &deployment_id, "rpi4", &id, "", past);
    let (status, error) = get(expired).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error["error"], "URL expired");
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let missing = uuid::Uuid::new_v4().to_string();
    let unknown = presign.link(stack.url(), &missing, "rpi4", &id, "", later);
    let (status, error) = get(unknown).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        error["error"],
        format!("deployment with id '{missing}' not found").as_str()
    );

    // The device's status reports finish it.
    for status in ["downloading", "installing", "success"] {
        let response = http
            .put(format!(
                "{}/api/devices/v1/deployments/device/deployments/{deployment_id}/status",
                stack.url()
            ))
            .bearer_auth(device.token.as_deref().unwrap_or_default())
            .json(&json!({ "status": status }))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{status}");
    }
    let (_, deployment) = admin
        .request_json(
            Method::GET,
            &format!("/api/management/v1/deployments/deployments/{deployment_id}"),
            None,
        )
        .await?;
    assert_eq!(deployment["status"], "finished");
    assert_eq!(deployment["statistics"]["status"]["success"], 1);
    stack.stop().await;
    Ok(())
}

/// Upstream's update module (github.com/mendersoftware/mender-configure-module,
/// `src/mender-configure`, Apache-2.0), verbatim: it stores the artifact's meta-data as the
/// device configuration (`$TEST_CONFIG`, default `/var/lib/mender-configure/device-config.json`)
/// and runs every script in `$TEST_APPLY_DIR` with it.
const MENDER_CONFIGURE_MODULE: &str = r#"#!/bin/sh
# Copyright 2022 Northern.tech AS
#
#    Licensed under the Apache License, Version 2.0 (the "License");
#    you may not use this file except in compliance with the License.
#    You may obtain a copy of the License at
#
#        http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS,
#    WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
#    See the License for the specific language governing permissions and
#    limitations under the License.

set -e

CONFIG=${TEST_CONFIG:-/var/lib/mender-configure/device-config.json}
APPLY_DIR=${TEST_APPLY_DIR:-/usr/lib/mender-configure/apply-device-config.d}
DEFAULT_PERMISSIONS="0600"

STATE="$1"
FILES="$2"

# Primarily used by tests, but can be enabled by anyone.
QUIET=${QUIET:-0}

BACKUP="$FILES/tmp/device-config-backup.json"

# create the configuration directory if it doesn't exist
CONFIG_DIR=$(dirname "$CONFIG")
if ! [ -d "$CONFIG_DIR" ]; then
    mkdir -p "$CONFIG_DIR"
fi

safe_copy() {
    if [ -n "$3" ]; then
        echo "safe_copy can only handle one file copy at a time" 1>&2
        exit 2
    fi
    touch "$2".tmp
    chmod $DEFAULT_PERMISSIONS "$2".tmp
    cat "$1" > "$2".tmp
    sync "$2".tmp
    mv "$2".tmp "$2"
    sync "$(dirname "$2")"
}

apply_scripts() {
    global_return_code=0
    for script in "$APPLY_DIR"/*; do
        if [ "$script" = "$APPLY_DIR/*" ]; then
            # No files present, glob failed and returned verbatim '*'.
            exit 0
        fi

        if [ "$QUIET" = 0 ]; then
            echo "Executing $script"
        fi
        return_code=0
        "$script" "$CONFIG" || return_code=$?
        if [ $return_code -ne 0 ]; then
            # Set the overall return code, but prioritize real errors over
            # "reboot return code" (20).
            if [ $return_code -ne 20 ] || [ $global_return_code -eq 0 ]; then
                global_return_code=$return_code
            fi
            echo "Script \"$script\" returned exit code $return_code." 1>&2
        fi
    done

    return $global_return_code
}

case "$STATE" in

    --apply-only)
        # Special mode when called during startup.
        apply_scripts
        ;;

    SupportsRollback)
        echo "Yes"
        ;;

    ArtifactInstall)
        if [ -e "$CONFIG" ]; then
            safe_copy "$CONFIG" "$BACKUP"
        else
            touch "$FILES/tmp/no-original"
            sync "$FILES/tmp/no-original"
            sync "$FILES/tmp"
        fi
        safe_copy "$FILES/header/meta-data" "$CONFIG"
        RET=0
        apply_scripts || RET=$?
        if [ $RET -eq 20 ]; then
            touch "$FILES/tmp/needs-reboot"
            sync "$FILES/tmp/needs-reboot"
            sync "$FILES/tmp"
            exit 0
        else
            exit $RET
        fi
        ;;

    NeedsArtifactReboot)
        if [ -e "$FILES/tmp/needs-reboot" ]; then
            echo "Automatic"
        else
            echo "No"
        fi
        ;;

    ArtifactRollback)
        if [ -e "$FILES/tmp/no-original" ]; then
            # There was no preexisting configuration. Nothing to restore.
            rm -f "$CONFIG"
            sync "$(dirname "$CONFIG")"
            exit 0
        elif ! [ -e "$BACKUP" ]; then
            # The update was interrupted before we could make a backup: Nothing
            # to do.
            exit 0
        fi
        safe_copy "$BACKUP" "$CONFIG"
        RET=0
        apply_scripts || RET=$?
        if [ $RET -eq 20 ]; then
            touch "$FILES/tmp/needs-reboot"
            sync "$FILES/tmp/needs-reboot"
            sync "$FILES/tmp"
            exit 0
        else
            exit $RET
        fi
        ;;

esac

exit 0
"#;

/// Where mender-client 3.x looks for update modules (not configurable).
const MODULES_DIR: &str = "/usr/share/mender/modules/v3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_applies_configuration() -> anyhow::Result<()> {
    anyhow::ensure!(
        mender_available(),
        "Debian mender-client missing: run scripts/deps.sh"
    );
    install_file(
        &std::path::Path::new(MODULES_DIR).join("mender-configure"),
        MENDER_CONFIGURE_MODULE,
        0o755,
    )?;
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let work = TempDir::new("deviceconfig-e2e")?;
    let config_file = work.path().join("mender-configure/device-config.json");
    let apply_dir = work.path().join("apply-device-config.d");
    let applied = work.path().join("applied.json");
    std::fs::create_dir_all(&apply_dir)?;
    let script = apply_dir.join("50-record");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncp \"$1\" {}\n", applied.display()),
    )?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;

    let mac = "02:00:00:00:c0:03";
    let mut options = ClientOptions::new(stack.url(), &stack.ca_cert(), mac);
    options.env = vec![
        ("TEST_CONFIG".into(), config_file.display().to_string()),
        ("TEST_APPLY_DIR".into(), apply_dir.display().to_string()),
        ("QUIET".into(), "1".into()),
    ];
    let client = MenderClient::start_with(options)?;
    let device = admin
        .wait_for_device_by_mac(mac, black_box_tests::FIRST_REQUEST_WAIT)
        .await?;
    let device_id = device["id"].as_str().unwrap_or_default().to_owned();
    admin.accept_device(&device_id).await?;
    provisioned(&admin, &device_id).await?;

    let path = config_path(&device_id);
    let configuration = json!({"timezone": "Europe/Oslo", "greeting": "hello world"});
    let (status, _) = admin
        .request_json(Method::PUT, &path, Some(configuration.clone()))
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, deployed) = admin
        .request_json(
            Method::POST,
            &format!("{path}/deploy"),
            Some(json!({"retries": 0})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{deployed}");
    let deployment_id = deployed["deployment_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let pid = client.pid().unwrap_or_default();
    let deployment_path = format!("/api/management/v1/deployments/deployments/{deployment_id}");
    let finished = wait_for(
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let _ = std::process::Command::new("kill")
                .args(["-s", "USR1", &pid.to_string()])
                .status();
            let (_, d) = admin
                .request_json(Method::GET, &deployment_path, None)
                .await
                .ok()?;
            (d["status"] == "finished").then_some(d)
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "configuration deployment did not finish: {e}\n{}",
            client.log_tail(60)
        )
    })?;
    assert_eq!(
        finished["statistics"]["status"]["success"],
        1,
        "{finished}\n{}",
        client.log_tail(60)
    );
    let (_, devices) = admin
        .request_json(Method::GET, &format!("{deployment_path}/devices"), None)
        .await?;
    assert_eq!(devices[0]["id"], device_id.as_str(), "{devices}");
    assert_eq!(devices[0]["status"], "success", "{devices}");
    let stored: Value = serde_json::from_slice(&std::fs::read(&config_file)?)?;
    assert_eq!(stored, configuration);
    let applied: Value = serde_json::from_slice(&std::fs::read(&applied)?)?;
    assert_eq!(applied, configuration);
    drop(client);
    stack.stop().await;
    Ok(())
}
