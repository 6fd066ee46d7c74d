//! Configuration deployments (SPEC §5.13): created in process by deviceconfig's deploy (upstream
//! does it through the internal `POST .../configuration/deployments/{id}/devices/{device}`),
//! offered by `next` with a server-signed link, whose `GET` generates the artifact on the fly:
//! uncompressed, v3, one `mender-configure` payload whose meta-data is the configuration.
//!
//! Link signature as upstream's `model.RequestSignature`: base64url (no padding) of
//! HMAC-SHA256 over `"<METHOD>\n<path>\nx-men-expire=<RFC 3339>\ntenant_id=<tenant>\n"`. The key
//! is derived from the JWT signing key (upstream generates a random one per process unless
//! `presign.secret` is set, which cannot work across Lambda instances).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use mender_artifact::{write_artifact, ArtifactSpec, Compression};
use mender_aws::dynamo::DynamoError;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{
    empty_statistics, Artifact, Deployment, DeploymentStatus, DeviceDeployment, DeviceStatus,
};
use crate::service::{Deployments, Error, Instructions};
use crate::store::Store;

/// `Deployment.kind` of a configuration deployment.
pub const CONFIGURATION: &str = "configuration";
/// The update module of the generated artifact (upstream `ArtifactConfigureType`).
pub const CONFIGURE_TYPE: &str = "mender-configure";
/// Its clears-provides (upstream `ArtifactConfigureProvidesCleared`).
pub const CONFIGURE_CLEARS: &str = "data-partition.mender-configure.*";
/// Path prefix of the download route.
pub const DOWNLOAD_PATH: &str = "/api/devices/v1/deployments/download/configuration";
/// Upstream's `presign.expire_seconds` default.
pub const LINK_LIFETIME_SECS: i64 = 900;

const OMITTED: &str = "...<omitted>";
const SHOWN_LENGTH: usize = 3;

/// The deployment's `configuration` as upstream renders it: base64 of the JSON object whose
/// values are cut to 3 characters plus `...<omitted>`.
pub fn shown(configuration: &str) -> Value {
    let b64 = |bytes: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    match serde_json::from_str::<std::collections::BTreeMap<String, String>>(configuration) {
        Ok(mut map) => {
            for value in map.values_mut() {
                if value.len() > SHOWN_LENGTH {
                    let cut = (0..=SHOWN_LENGTH)
                        .rev()
                        .find(|i| value.is_char_boundary(*i))
                        .unwrap_or(0);
                    *value = format!("{}{OMITTED}", &value[..cut]);
                }
            }
            b64(serde_json::to_string(&map).unwrap_or_default().as_bytes())
        }
        Err(_) => b64(configuration.as_bytes()),
    }
}

/// The configuration text of a constructor: a JSON string is taken as its content, anything
/// else as the raw JSON (upstream's `configuration.UnmarshalJSON`).
pub fn configuration_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The signer of configuration download links.
#[derive(Clone)]
pub struct Presign {
    key: Vec<u8>,
}

impl std::fmt::Debug for Presign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presign")
    }
}

/// Why a download link is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// 400 `invalid request parameters: ...`.
    #[error("invalid request parameters: {0}")]
    Invalid(String),
    /// 403.
    #[error("URL expired")]
    Expired,
    /// 403.
    #[error("signature invalid")]
    Signature,
}

fn escape(segment: &str) -> String {
    // url.PathEscape: unreserved characters and sub-delims allowed in a path segment stay.
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_escape(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Presign {
    /// A signer whose key is derived from `secret` (the JWT private key's PEM).
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"mender-rs configuration download links\n");
        hash.update(secret);
        Presign {
            key: hash.finalize().to_vec(),
        }
    }

    fn mac(&self, method: &str, path: &str, expire: &str, tenant: &str) -> Vec<u8> {
        let message = format!("{method}\n{path}\nx-men-expire={expire}\ntenant_id={tenant}\n");
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return Vec::new();
        };
        mac.update(message.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The decoded path of a device's download link.
    pub fn path(deployment_id: &str, device_type: &str, device_id: &str) -> String {
        format!("{DOWNLOAD_PATH}/{deployment_id}/{device_type}/{device_id}")
    }

    /// `<scheme>://<host><path>?[tenant_id=..&]x-men-expire=..&x-men-signature=..` valid until
    /// `expire`; returns the URL.
    pub fn link(
        &self,
        base: &str,
        deployment_id: &str,
        device_type: &str,
        device_id: &str,
        tenant: &str,
        expire: chrono::DateTime<chrono::Utc>,
    ) -> String {
        let expire = expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let path = Self::path(deployment_id, device_type, device_id);
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.mac("GET", &path, &expire, tenant));
        let mut query = Vec::new();
        if !tenant.is_empty() {
            query.push(format!("tenant_id={}", query_escape(tenant)));
        }
        query.push(format!("x-men-expire={}", query_escape(&expire)));
        query.push(format!("x-men-signature={signature}"));
        format!(
            "{base}{DOWNLOAD_PATH}/{}/{}/{}?{}",
            escape(deployment_id),
            escape(device_type),
            escape(device_id),
            query.join("&")
        )
    }

    /// Checks a download request's parameters (decoded `path`, query `x-men-expire`,
    /// `x-men-signature`, `tenant_id`) as upstream: required, not expired, signature valid.
    pub fn verify(
        &self,
        path: &str,
        expire: Option<&str>,
        signature: Option<&str>,
        tenant: &str,
    ) -> Result<(), LinkError> {
        let expire = expire.filter(|e| !e.is_empty());
        let signature = signature.filter(|s| !s.is_empty());
        let mut missing = Vec::new();
        if expire.is_none() {
            missing.push("x-men-expire: cannot be blank");
        }
        if signature.is_none() {
            missing.push("x-men-signature: cannot be blank");
        }
        let (Some(expire), Some(signature)) = (expire, signature) else {
            return Err(LinkError::Invalid(format!("{}.", missing.join("; "))));
        };
        let at = chrono::DateTime::parse_from_rfc3339(expire).map_err(|_| {
            LinkError::Invalid("parameter 'x-men-expire' is not a valid timestamp".into())
        })?;
        if chrono::Utc::now() > at {
            return Err(LinkError::Expired);
        }
        let given = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .unwrap_or_default();
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return Err(LinkError::Signature);
        };
        mac.update(format!("GET\n{path}\nx-men-expire={expire}\ntenant_id={tenant}\n").as_bytes());
        mac.verify_slice(&given).map_err(|_| LinkError::Signature)
    }
}

/// The artifact upstream's `GenerateConfigurationImage` writes for a configuration deployment
/// and a device type.
pub fn configuration_artifact(
    deployment: &Deployment,
    device_type: &str,
) -> Result<Vec<u8>, Error> {
    let text = deployment.configuration.as_deref().unwrap_or("{}");
    let meta: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| Error::Internal(format!("malformed configuration in deployment: {e}")))?;
    let mut spec = ArtifactSpec::module_image(
        deployment.artifact_name.clone(),
        vec![device_type.to_owned()],
        CONFIGURE_TYPE,
    );
    spec.meta_data = Some(meta);
    spec.software_filesystem = Some("data-partition".into());
    spec.software_name = Some(CONFIGURE_TYPE.into());
    spec.software_version = Some(deployment.artifact_name.clone());
    spec.no_default_clears_provides = true;
    spec.clears_provides = vec![CONFIGURE_CLEARS.into()];
    spec.compression = Compression::None;
    let mut out = Vec::new();
    write_artifact(spec, &mut out).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(out)
}

/// What deviceconfig's deploy asks for (upstream's `ConfigurationDeploymentConstructor` plus
/// the path's ids and the device's groups).
#[derive(Debug, Clone, Default)]
pub struct NewConfigurationDeployment {
    /// Chosen by the caller; must be a UUID.
    pub deployment_id: String,
    pub device_id: String,
    /// Also the artifact name (`configuration-<deployment id>` from deviceconfig).
    pub name: String,
    /// The configuration object, JSON text.
    pub configuration: String,
    pub retries: u64,
    pub groups: Vec<String>,
}

impl<S: Store> Deployments<S> {
    /// Creates a configuration deployment of one device with the caller's id (upstream
    /// `CreateDeviceConfigurationDeployment`): type `configuration`, artifact name = `name`,
    /// one pending device. 400 when the id is not a UUID or the name is blank, 409 when the id
    /// exists.
    pub async fn create_configuration_deployment(
        &self,
        tenant: &str,
        new: NewConfigurationDeployment,
    ) -> Result<Deployment, Error> {
        let NewConfigurationDeployment {
            deployment_id,
            device_id,
            name,
            configuration,
            retries,
            groups,
        } = new;
        let (deployment_id, device_id, name) = (&deployment_id, &device_id, &name);
        if uuid::Uuid::parse_str(deployment_id).is_err() {
            return Err(Error::BadRequest(
                "Deployment ID must be a valid UUID".into(),
            ));
        }
        if name.trim().is_empty() {
            return Err(Error::BadRequest(
                "Validating request body: name: cannot be blank.".into(),
            ));
        }
        if configuration.is_empty() {
            return Err(Error::BadRequest(
                "Validating request body: configuration: cannot be blank.".into(),
            ));
        }
        let created = mender_http::time::now_string();
        let mut statistics = empty_statistics();
        statistics.insert(DeviceStatus::Pending.to_string(), 1);
        let deployment = Deployment {
            id: deployment_id.to_owned(),
            name: name.to_owned(),
            artifact_name: name.to_owned(),
            created: created.clone(),
            status: DeploymentStatus::Pending,
            device_list: vec![device_id.to_owned()],
            max_devices: 1,
            groups,
            kind: CONFIGURATION.into(),
            configuration: Some(configuration),
            retries,
            statistics,
            ..Default::default()
        };
        let device = DeviceDeployment {
            id: uuid::Uuid::new_v4().to_string(),
            deployment_id: deployment.id.clone(),
            device_id: device_id.to_owned(),
            status: DeviceStatus::Pending,
            created,
            ..Default::default()
        };
        match self
            .store
            .create_deployment(tenant, &deployment, &[device])
            .await
        {
            Ok(()) => Ok(deployment),
            Err(DynamoError::ConditionFailed) => Err(Error::Conflict(
                "Deployment with given ID already exists".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// `next` for a configuration deployment: the artifact is generated on download, its id is
    /// the deployment id followed by the device id, compatible with the requesting device type.
    pub(crate) async fn configuration_instructions(
        &self,
        tenant: &str,
        deployment: Deployment,
        dd: &DeviceDeployment,
        device_type: &str,
        request: &str,
    ) -> Result<Instructions, Error> {
        let artifact = Artifact {
            id: format!("{}{}", deployment.id, dd.device_id),
            name: deployment.artifact_name.clone(),
            device_types_compatible: vec![device_type.to_owned()],
            ..Default::default()
        };
        if dd.artifact_id.is_none() {
            self.store
                .record_fetch(tenant, dd, &artifact.id, request, 0)
                .await?;
        }
        Ok(Instructions {
            deployment,
            artifact,
        })
    }

    /// The generated artifact of a configuration deployment for `device_type`; 404
    /// `deployment with id '<id>' not found` when there is no such configuration deployment.
    pub async fn configuration_download(
        &self,
        tenant: &str,
        deployment_id: &str,
        device_type: &str,
    ) -> Result<Vec<u8>, Error> {
        let deployment = self
            .store
            .get_deployment(tenant, deployment_id)
            .await?
            .filter(Deployment::is_configuration)
            .ok_or_else(|| {
                Error::NotFound(format!("deployment with id '{deployment_id}' not found"))
            })?;
        configuration_artifact(&deployment, device_type)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_and_expire() {
        let p = Presign::from_secret(b"key");
        let expire = chrono::Utc::now() + chrono::Duration::seconds(60);
        let url = p.link("https://h", "d", "raspberry pi", "dev", "", expire);
        assert!(url.starts_with(
            "https://h/api/devices/v1/deployments/download/configuration/d/raspberry%20pi/dev?x-men-expire="
        ));
        let query: Vec<(String, String)> = serde_urlencoded_pairs(url.split_once('?').unwrap().1);
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let path = Presign::path("d", "raspberry pi", "dev");
        p.verify(&path, get("x-men-expire"), get("x-men-signature"), "")
            .unwrap();
        assert_eq!(
            p.verify(&path, get("x-men-expire"), get("x-men-signature"), "t"),
            Err(LinkError::Signature)
        );
        assert_eq!(
            p.verify(&path, None, None, ""),
            Err(LinkError::Invalid(
                "x-men-expire: cannot be blank; x-men-signature: cannot be blank.".into()
            ))
        );
        let old = (chrono::Utc::now() - chrono::Duration::seconds(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(
            p.verify(&path, Some(&old), get("x-men-signature"), ""),
            Err(LinkError::Expired)
        );
    }

    fn serde_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":")))
            .collect()
    }

    #[test]
    fn configuration_is_shown_cut() {
        let v = shown(r#"{"a":"abcdef","b":"x"}"#);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            r#"{"a":"abc...<omitted>","b":"x"}"#
        );
    }

    #[test]
    fn artifact_is_a_configure_module_image() {
        let d = Deployment {
            artifact_name: "configuration-x".into(),
            configuration: Some(r#"{"k":"v"}"#.into()),
            kind: CONFIGURATION.into(),
            ..Default::default()
        };
        let bytes = configuration_artifact(&d, "dt").unwrap();
        let info = mender_artifact::verify_artifact(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(info.name, "configuration-x");
        assert_eq!(info.device_types_compatible, vec!["dt".to_string()]);
        let payload = &info.payloads[0];
        assert_eq!(payload.payload_type.as_deref(), Some(CONFIGURE_TYPE));
        assert_eq!(payload.meta_data.get("k"), Some(&Value::String("v".into())));
        assert_eq!(
            info.provides.get("data-partition.mender-configure.version"),
            Some(&"configuration-x".to_string())
        );
        assert_eq!(info.clears_provides, vec![CONFIGURE_CLEARS.to_string()]);
    }
}
