//! AWS IoT Core with the integration's own credentials (`aws-sdk-iot`, `aws-sdk-iotdataplane`),
//! as upstream's `iotcore` client: a device is a Thing named after the device id with one
//! certificate (made from a CSR of a fresh P-256 key) carrying the integration's device policy;
//! enabled/disabled is the certificate's ACTIVE/INACTIVE; its state is the Thing's classic
//! shadow. The SDK reads endpoint overrides from the environment (`AWS_ENDPOINT_URL`, so the
//! local stack reaches moto), never the function's own credentials.

use aws_config::BehaviorVersion;
use aws_sdk_iot::config::{Credentials, Region};
use aws_sdk_iot::error::ProvideErrorMetadata;
use aws_sdk_iot::types::CertificateStatus;
use serde_json::{json, Map, Value};

use crate::model::{AwsCredentials, DeviceState};

/// Data endpoint type pushed to devices with their certificate.
const ENDPOINT_TYPE: &str = "iot:Data-ATS";
/// Waiting for a detached principal to disappear: 5 checks, 2 s apart (upstream).
const DETACH_CHECKS: usize = 5;
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("device not found")]
    NotFound,
    #[error("device is not consistent")]
    Inconsistent,
    #[error("giving up on waiting for Thing principal being detached")]
    NotDetached,
    #[error("{0}")]
    Aws(String),
}

/// An SDK error, [`CoreError::NotFound`] when the resource is missing (only where the caller
/// means the Thing or its shadow: see [`failed`]).
fn aws_error<E>(context: &str, e: aws_sdk_iot::error::SdkError<E>) -> CoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let not_found = e.code() == Some("ResourceNotFoundException")
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
    if not_found {
        return CoreError::NotFound;
    }
    failed(context, e)
}

/// An SDK error as a failure, whatever it was.
fn failed<E>(context: &str, e: aws_sdk_iot::error::SdkError<E>) -> CoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    CoreError::Aws(format!(
        "{context}: {}",
        aws_sdk_iot::error::DisplayErrorContext(&e)
    ))
}

/// A new Thing's credentials for the device.
#[derive(Debug)]
pub struct ProvisionedThing {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub endpoint: String,
}

/// An existing Thing: its certificate and whether that is active.
struct Thing {
    certificate_id: String,
    enabled: bool,
}

/// IoT Core clients signed with one integration's credentials.
pub struct IotCore {
    iot: aws_sdk_iot::Client,
    data: aws_sdk_iotdataplane::Client,
}

impl IotCore {
    pub async fn new(creds: &AwsCredentials) -> IotCore {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(creds.region.clone().unwrap_or_default()))
            .credentials_provider(Credentials::new(
                creds.access_key_id.clone().unwrap_or_default(),
                creds.secret_access_key.clone().unwrap_or_default(),
                None,
                None,
                "iot-manager-integration",
            ))
            .load()
            .await;
        IotCore {
            iot: aws_sdk_iot::Client::new(&sdk),
            data: aws_sdk_iotdataplane::Client::new(&sdk),
        }
    }

    async fn thing(&self, id: &str) -> Result<Thing, CoreError> {
        self.iot
            .describe_thing()
            .thing_name(id)
            .send()
            .await
            .map_err(|e| aws_error("describe thing", e))?;
        let principals = self
            .iot
            .list_thing_principals()
            .thing_name(id)
            .send()
            .await
            .map_err(|e| failed("list thing principals", e))?;
        let principals = principals.principals();
        if principals.len() > 1 {
            return Err(CoreError::Inconsistent);
        }
        let mut out = Thing {
            certificate_id: String::new(),
            enabled: false,
        };
        for principal in principals {
            let id = principal.rsplit('/').next().unwrap_or("").to_owned();
            let cert = self
                .iot
                .describe_certificate()
                .certificate_id(&id)
                .send()
                .await
                .map_err(|e| failed("describe certificate", e))?;
            out.enabled = cert
                .certificate_description()
                .and_then(|d| d.status())
                .is_some_and(|s| *s == CertificateStatus::Active);
            out.certificate_id = id;
        }
        Ok(out)
    }

    /// Creates the Thing (certificate, policy, principal) or sets its certificate's status.
    /// Returns the new Thing's credentials when it was created.
    pub async fn upsert(
        &self,
        id: &str,
        enabled: bool,
        policy: &str,
    ) -> Result<Option<ProvisionedThing>, CoreError> {
        match self.thing(id).await {
            Ok(thing) => {
                if thing.enabled != enabled && !thing.certificate_id.is_empty() {
                    let status = if enabled {
                        CertificateStatus::Active
                    } else {
                        CertificateStatus::Inactive
                    };
                    self.iot
                        .update_certificate()
                        .certificate_id(&thing.certificate_id)
                        .new_status(status)
                        .send()
                        .await
                        .map_err(|e| failed("update certificate", e))?;
                }
                return Ok(None);
            }
            Err(CoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CoreError::Aws(format!("failed to generate key for device: {e}")))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| CoreError::Aws(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, id);
        let csr = params
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .map_err(|e| {
                CoreError::Aws(format!("error creating certificate signing request: {e}"))
            })?;
        self.iot
            .create_thing()
            .thing_name(id)
            .send()
            .await
            .map_err(|e| failed("failed to create Thing", e))?;
        let cert = self
            .iot
            .create_certificate_from_csr()
            .certificate_signing_request(csr)
            .set_as_active(enabled)
            .send()
            .await
            .map_err(|e| failed("create certificate", e))?;
        let arn = cert.certificate_arn().unwrap_or_default().to_owned();
        let endpoint = self
            .iot
            .describe_endpoint()
            .endpoint_type(ENDPOINT_TYPE)
            .send()
            .await
            .map_err(|e| failed("describe endpoint", e))?;
        self.iot
            .attach_policy()
            .policy_name(policy)
            .target(&arn)
            .send()
            .await
            .map_err(|e| failed("failed to attach device certificate policy", e))?;
        self.iot
            .attach_thing_principal()
            .thing_name(id)
            .principal(&arn)
            .send()
            .await
            .map_err(|e| failed("failed to attach thing principal", e))?;
        Ok(Some(ProvisionedThing {
            certificate_pem: cert.certificate_pem().unwrap_or_default().to_owned(),
            private_key_pem: key.serialize_pem(),
            endpoint: endpoint.endpoint_address().unwrap_or_default().to_owned(),
        }))
    }

    /// Detaches the certificate (and its policies), deactivates and deletes it, then deletes
    /// the Thing; [`CoreError::NotFound`] when there is no Thing.
    pub async fn delete(&self, id: &str) -> Result<(), CoreError> {
        let thing = self
            .iot
            .describe_thing()
            .thing_name(id)
            .send()
            .await
            .map_err(|e| aws_error("describe thing", e))?;
        let principals = self
            .iot
            .list_thing_principals()
            .thing_name(id)
            .send()
            .await
            .map_err(|e| failed("list thing principals", e))?
            .principals()
            .to_vec();
        for principal in &principals {
            self.iot
                .detach_thing_principal()
                .thing_name(id)
                .principal(principal)
                .send()
                .await
                .map_err(|e| failed("detach thing principal", e))?;
            let certificate = principal.rsplit('/').next().unwrap_or("");
            let policies = self
                .iot
                .list_attached_policies()
                .target(principal)
                .send()
                .await
                .map_err(|e| failed("list attached policies", e))?;
            for policy in policies.policies().iter().filter_map(|p| p.policy_name()) {
                self.iot
                    .detach_policy()
                    .policy_name(policy)
                    .target(principal)
                    .send()
                    .await
                    .map_err(|e| failed("detach policy", e))?;
            }
            self.iot
                .update_certificate()
                .certificate_id(certificate)
                .new_status(CertificateStatus::Inactive)
                .send()
                .await
                .map_err(|e| failed("update certificate", e))?;
            self.iot
                .delete_certificate()
                .certificate_id(certificate)
                .force_delete(true)
                .send()
                .await
                .map_err(|e| failed("delete certificate", e))?;
        }
        if !principals.is_empty() {
            let mut detached = false;
            for check in 0..DETACH_CHECKS {
                let left = self
                    .iot
                    .list_thing_principals()
                    .thing_name(id)
                    .send()
                    .await
                    .map_err(|e| failed("list thing principals", e))?;
                if left.principals().is_empty() {
                    detached = true;
                    break;
                }
                if check + 1 < DETACH_CHECKS {
                    tokio::time::sleep(DETACH_WAIT).await;
                }
            }
            if !detached {
                return Err(CoreError::NotDetached);
            }
        }
        self.iot
            .delete_thing()
            .thing_name(id)
            .expected_version(thing.version())
            .send()
            .await
            .map_err(|e| failed("delete thing", e))?;
        Ok(())
    }

    /// The shadow's desired and reported state; `None` when there is no Thing, empty maps when
    /// the Thing has no shadow yet.
    pub async fn get_state(&self, id: &str) -> Result<Option<DeviceState>, CoreError> {
        match self.data.get_thing_shadow().thing_name(id).send().await {
            Ok(out) => {
                let payload = out.payload().map(|b| b.as_ref()).unwrap_or_default();
                parse_shadow(payload).map(Some)
            }
            Err(e) => match aws_error("get thing shadow", e) {
                CoreError::NotFound => match self.thing(id).await {
                    Err(CoreError::NotFound) => Ok(None),
                    _ => Ok(Some(DeviceState {
                        desired: Some(Map::new()),
                        reported: Some(Map::new()),
                    })),
                },
                other => Err(other),
            },
        }
    }

    /// Replaces the shadow's desired state; `None` when there is no Thing.
    pub async fn set_desired(
        &self,
        id: &str,
        desired: Option<&Map<String, Value>>,
    ) -> Result<Option<DeviceState>, CoreError> {
        // the shadow update needs the Thing; a shadow of no Thing would be created silently
        match self.thing(id).await {
            Err(CoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let payload = json!({"state": {"desired": desired}}).to_string();
        let out = self
            .data
            .update_thing_shadow()
            .thing_name(id)
            .payload(aws_sdk_iotdataplane::primitives::Blob::new(payload))
            .send()
            .await;
        match out {
            Ok(out) => {
                let payload = out.payload().map(|b| b.as_ref()).unwrap_or_default();
                parse_shadow(payload).map(Some)
            }
            Err(e) => match aws_error("update thing shadow", e) {
                CoreError::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// `{"state": {"desired": {...}, "reported": {...}}, ...}` as a [`DeviceState`].
fn parse_shadow(payload: &[u8]) -> Result<DeviceState, CoreError> {
    #[derive(serde::Deserialize)]
    struct Shadow {
        #[serde(default)]
        state: DeviceState,
    }
    serde_json::from_slice::<Shadow>(payload)
        .map(|s| s.state)
        .map_err(|e| CoreError::Aws(format!("shadow: {e}")))
}
