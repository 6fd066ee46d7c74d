//! deviceconfig (SPEC §6): per device, the **configured** (desired) and **reported** key-value
//! configurations, the last configuration deployment and their timestamps. The rules here
//! (validation of configuration objects, upstream's messages) are plain Rust; [`store`] is what
//! the service needs from storage (the DynamoDB table `DeviceconfigTable` in `store::dynamo`,
//! access patterns at its top; an in-memory map for tests in `store::memory`), [`http`] how
//! the errors are answered.
//!
//! Deploying a configuration is done by the caller (the management function) through
//! deployments' domain code, in process, as upstream's `deploy_device_configuration` workflow
//! does over HTTP; this crate only records the new deployment id.

pub mod http;
pub mod store;

use std::collections::BTreeMap;

use mender_aws::dynamo::DynamoError;
use serde_json::Value;

use store::Side;
pub use store::{DeviceConfig, DynamoStore, MemoryStore, Store};

/// A configuration object: keys to string values.
pub type Configuration = BTreeMap<String, String>;

/// Upstream's `AttributesMaxLength`.
pub const MAX_ATTRIBUTES: usize = 100;
/// Upstream's `lengthLessThan4096` (keys and values).
pub const MAX_LENGTH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    /// `device does not exist` (upstream `store.ErrDeviceNoExist`).
    #[error("device does not exist")]
    NotFound,
    #[error("device already exists")]
    Exists,
    #[error("storage: {0}")]
    Storage(#[from] DynamoError),
}

/// Go's `%T` of a decoded JSON value (what upstream's validation error names).
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Go's name of a JSON value's kind in `json: cannot unmarshal <kind> into ...`.
fn go_json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses a configuration body as upstream does: a JSON object (or `null`: empty) else
/// `400 malformed request body: ...`; every key non-empty and at most 4096 characters, every
/// value a string of at most 4096 characters, else `400 invalid request body: ...` (ozzo's
/// `key: ...; value: ...` texts); more than 100 keys is refused too (upstream refuses them in
/// its store, with a 500).
pub fn parse_configuration(body: &[u8]) -> Result<Configuration, Error> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::BadRequest("malformed request body: EOF".into()));
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("malformed request body: {e}")))?
    };
    let map = match value {
        Value::Null => return Ok(Configuration::new()),
        Value::Object(map) => map,
        other => {
            return Err(Error::BadRequest(format!(
                "malformed request body: json: cannot unmarshal {} into Go value of type \
                 map[string]interface {{}}",
                go_json_kind(&other)
            )))
        }
    };
    let mut out = Configuration::new();
    for (key, value) in map {
        let mut problems = Vec::new();
        if key.is_empty() {
            problems.push("key: cannot be blank".to_owned());
        } else if key.chars().count() > MAX_LENGTH {
            problems.push(format!("key: the length must be no more than {MAX_LENGTH}"));
        }
        match &value {
            Value::String(s) if s.chars().count() > MAX_LENGTH => problems.push(format!(
                "value: the length must be no more than {MAX_LENGTH}"
            )),
            Value::String(_) => {}
            other => problems.push(format!("value: invalid type: {}", go_type(other))),
        }
        if !problems.is_empty() {
            return Err(Error::BadRequest(format!(
                "invalid request body: {}.",
                problems.join("; ")
            )));
        }
        if let Value::String(s) = value {
            out.insert(key, s);
        }
    }
    if out.len() > MAX_ATTRIBUTES {
        return Err(Error::BadRequest(format!(
            "invalid request body: too many configuration attributes, maximum is {MAX_ATTRIBUTES}"
        )));
    }
    Ok(out)
}

/// The deviceconfig service over a [`Store`] (the DynamoDB table unless told otherwise).
#[derive(Clone, Debug)]
pub struct Deviceconfig<S = DynamoStore> {
    pub store: S,
}

impl<S: Store> Deviceconfig<S> {
    /// The device's record; [`Error::NotFound`] when it was never provisioned nor configured.
    pub async fn device(&self, tenant: &str, device_id: &str) -> Result<DeviceConfig, Error> {
        self.store
            .get(tenant, device_id)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Management `PUT`: replaces the configured map (upsert), sets `updated_ts`.
    pub async fn set_configured(
        &self,
        tenant: &str,
        device_id: &str,
        configuration: &Configuration,
    ) -> Result<(), Error> {
        Ok(self
            .store
            .set_map(tenant, device_id, Side::Configured, configuration)
            .await?)
    }

    /// Device `PUT`: replaces the reported map (upsert), sets `reported_ts`.
    pub async fn set_reported(
        &self,
        tenant: &str,
        device_id: &str,
        configuration: &Configuration,
    ) -> Result<(), Error> {
        Ok(self
            .store
            .set_map(tenant, device_id, Side::Reported, configuration)
            .await?)
    }

    /// Records a new configuration deployment of the device (which must exist) and returns its
    /// id (a new UUID) with the configured map to deploy.
    pub async fn new_deployment(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<(String, Configuration), Error> {
        let device = self.device(tenant, device_id).await?;
        let id = uuid::Uuid::new_v4().to_string();
        match self.store.set_deployment_id(tenant, device_id, &id).await {
            Ok(()) => Ok((id, device.configured)),
            Err(DynamoError::ConditionFailed) => Err(Error::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Provisioning (`provision_device` workflow): an empty record; an existing one is kept.
    /// Idempotent.
    pub async fn provision(&self, tenant: &str, device_id: &str) -> Result<(), Error> {
        match self.store.create(tenant, device_id).await {
            Ok(()) | Err(DynamoError::ConditionFailed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Decommissioning: deletes the record. Idempotent.
    pub async fn delete_device(&self, tenant: &str, device_id: &str) -> Result<(), Error> {
        Ok(self.store.delete(tenant, device_id).await?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Validation, and the service's rules against the in-memory store.

    use super::*;
    use crate::store::MemoryStore;

    const T: &str = "tenant";

    fn service() -> Deviceconfig<MemoryStore> {
        Deviceconfig {
            store: MemoryStore::new(),
        }
    }

    fn configuration(pairs: &[(&str, &str)]) -> Configuration {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn message(body: &str) -> String {
        match parse_configuration(body.as_bytes()) {
            Err(Error::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configurations_are_flat_string_maps() {
        let c = parse_configuration(br#"{"a":"1","b":""}"#).unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_configuration(b"null").unwrap().is_empty());
        assert_eq!(
            message(r#"{"a":1}"#),
            "invalid request body: value: invalid type: float64."
        );
        assert_eq!(
            message(r#"{"a":null}"#),
            "invalid request body: value: invalid type: <nil>."
        );
        assert_eq!(
            message(r#"{"a":{}}"#),
            "invalid request body: value: invalid type: map[string]interface {}."
        );
        assert_eq!(
            message(r#"{"":"x"}"#),
            "invalid request body: key: cannot be blank."
        );
        let long = "k".repeat(4097);
        assert_eq!(
            message(&format!(r#"{{"{long}":true}}"#)),
            "invalid request body: key: the length must be no more than 4096; value: invalid type: bool."
        );
        assert!(message("[]").starts_with("malformed request body: json: cannot unmarshal array"));
        assert!(message("{").starts_with("malformed request body: "));
        assert_eq!(message(""), "malformed request body: EOF");
        let many: serde_json::Map<String, Value> = (0..101)
            .map(|i| (format!("k{i}"), Value::String("v".into())))
            .collect();
        assert!(message(&Value::Object(many).to_string()).contains("too many"));
    }

    #[tokio::test]
    async fn an_unknown_device_is_not_found() {
        let dc = service();
        assert!(matches!(dc.device(T, "d").await, Err(Error::NotFound)));
        assert!(matches!(
            dc.new_deployment(T, "d").await,
            Err(Error::NotFound)
        ));
        // The refused deployment created no record.
        assert_eq!(dc.store.get(T, "d").await.unwrap(), None);
        // Records are per tenant.
        dc.set_configured("other", "d", &configuration(&[("a", "1")]))
            .await
            .unwrap();
        assert!(matches!(dc.device(T, "d").await, Err(Error::NotFound)));
    }

    #[tokio::test]
    async fn configured_and_reported_are_kept_apart() {
        let dc = service();
        // Only the device reported: its record exists, nothing is configured, no `updated_ts`.
        dc.set_reported(T, "d", &configuration(&[("r", "1")]))
            .await
            .unwrap();
        let record = dc.device(T, "d").await.unwrap();
        assert_eq!(record.id, "d");
        assert_eq!(record.reported, configuration(&[("r", "1")]));
        assert!(record.configured.is_empty());
        assert!(record.updated_ts.is_none() && record.reported_ts.is_some());
        // Configuring leaves the report alone.
        dc.set_configured(T, "d", &configuration(&[("c", "2")]))
            .await
            .unwrap();
        let record = dc.device(T, "d").await.unwrap();
        assert_eq!(record.configured, configuration(&[("c", "2")]));
        assert_eq!(record.reported, configuration(&[("r", "1")]));
        assert!(record.updated_ts.is_some() && record.reported_ts.is_some());
    }

    #[tokio::test]
    async fn a_put_replaces_the_whole_map() {
        let dc = service();
        dc.set_configured(T, "d", &configuration(&[("a", "1"), ("b", "2")]))
            .await
            .unwrap();
        dc.set_configured(T, "d", &configuration(&[("c", "3")]))
            .await
            .unwrap();
        dc.set_reported(T, "d", &configuration(&[("x", "1")]))
            .await
            .unwrap();
        dc.set_reported(T, "d", &Configuration::new())
            .await
            .unwrap();
        let record = dc.device(T, "d").await.unwrap();
        assert_eq!(record.configured, configuration(&[("c", "3")]));
        assert!(record.reported.is_empty());
    }

    #[tokio::test]
    async fn a_deployment_is_recorded_with_the_configured_map() {
        let dc = service();
        let wanted = configuration(&[("a", "1")]);
        dc.set_configured(T, "d", &wanted).await.unwrap();
        let (first, deployed) = dc.new_deployment(T, "d").await.unwrap();
        assert_eq!(deployed, wanted);
        assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
        let record = dc.device(T, "d").await.unwrap();
        assert_eq!(record.deployment_id.as_deref(), Some(first.as_str()));
        // Each deployment is a new one; the last is recorded.
        let (second, _) = dc.new_deployment(T, "d").await.unwrap();
        assert_ne!(first, second);
        let record = dc.device(T, "d").await.unwrap();
        assert_eq!(record.deployment_id.as_deref(), Some(second.as_str()));
        assert_eq!(record.configured, wanted);
    }

    /// A store whose record is decommissioned right after it is read.
    struct Vanishing(MemoryStore);

    impl Store for Vanishing {
        async fn get(&self, t: &str, d: &str) -> Result<Option<DeviceConfig>, DynamoError> {
            let record = self.0.get(t, d).await?;
            self.0.delete(t, d).await?;
            Ok(record)
        }
        async fn set_map(
            &self,
            t: &str,
            d: &str,
            side: Side,
            c: &Configuration,
        ) -> Result<(), DynamoError> {
            self.0.set_map(t, d, side, c).await
        }
        async fn set_deployment_id(&self, t: &str, d: &str, id: &str) -> Result<(), DynamoError> {
            self.0.set_deployment_id(t, d, id).await
        }
        async fn create(&self, t: &str, d: &str) -> Result<(), DynamoError> {
            self.0.create(t, d).await
        }
        async fn delete(&self, t: &str, d: &str) -> Result<(), DynamoError> {
            self.0.delete(t, d).await
        }
    }

    #[tokio::test]
    async fn deploying_to_a_device_removed_meanwhile_is_not_found() {
        let dc = Deviceconfig {
            store: Vanishing(MemoryStore::new()),
        };
        dc.set_configured(T, "d", &configuration(&[("a", "1")]))
            .await
            .unwrap();
        assert!(matches!(
            dc.new_deployment(T, "d").await,
            Err(Error::NotFound)
        ));
        // No record was brought back by the deployment.
        assert_eq!(dc.store.0.get(T, "d").await.unwrap(), None);
    }

    #[tokio::test]
    async fn provisioning_keeps_an_existing_record() {
        let dc = service();
        dc.provision(T, "new").await.unwrap();
        dc.provision(T, "new").await.unwrap();
        let record = dc.device(T, "new").await.unwrap();
        assert!(record.configured.is_empty() && record.reported.is_empty());
        assert!(record.updated_ts.is_some() && record.deployment_id.is_none());
        // A device that reported before it was provisioned keeps its report.
        dc.set_reported(T, "early", &configuration(&[("r", "1")]))
            .await
            .unwrap();
        dc.provision(T, "early").await.unwrap();
        let record = dc.device(T, "early").await.unwrap();
        assert_eq!(record.reported, configuration(&[("r", "1")]));
        assert!(record.updated_ts.is_none());
    }

    #[tokio::test]
    async fn decommissioning_is_idempotent() {
        let dc = service();
        dc.provision(T, "d").await.unwrap();
        dc.provision(T, "kept").await.unwrap();
        dc.delete_device(T, "d").await.unwrap();
        dc.delete_device(T, "d").await.unwrap();
        assert!(matches!(dc.device(T, "d").await, Err(Error::NotFound)));
        assert!(dc.device(T, "kept").await.is_ok());
        // Provisioned again: a new empty record.
        dc.provision(T, "d").await.unwrap();
        assert!(dc.device(T, "d").await.is_ok());
    }
}
