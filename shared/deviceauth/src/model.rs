//! A device with its auth sets, and the rules that move them: status aggregation, upstream's
//! transition table for operator decisions, and what an auth request does. No I/O here.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const PENDING: &str = "pending";
pub const ACCEPTED: &str = "accepted";
pub const REJECTED: &str = "rejected";
pub const PREAUTHORIZED: &str = "preauthorized";
pub const NOAUTH: &str = "noauth";
/// Every status a device can have, in upstream's error-message order.
pub const STATUSES: [&str; 5] = [PENDING, ACCEPTED, REJECTED, PREAUTHORIZED, NOAUTH];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuthSet {
    pub id: String,
    /// Canonical PEM of the device's public key.
    pub pubkey: String,
    pub status: String,
    pub ts: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Device {
    pub id: String,
    /// Canonical identity JSON (sorted keys, Go formatting); its SHA-256 is `id_hash`.
    pub identity: String,
    pub id_hash: String,
    pub status: String,
    pub decommissioning: bool,
    pub provisioned: bool,
    pub created_ts: String,
    pub updated_ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_in_time: Option<String>,
    /// Incremented on every status change; orders the status updates inventory receives.
    pub revision: i64,
    /// Optimistic concurrency: every stored change requires the version it was read at.
    pub version: i64,
    pub auth_sets: Vec<AuthSet>,
}

/// Upstream's aggregation: accepted > preauthorized > pending > rejected > noauth.
pub fn aggregate(auth_sets: &[AuthSet]) -> &'static str {
    let has = |s: &str| auth_sets.iter().any(|a| a.status == s);
    [ACCEPTED, PREAUTHORIZED, PENDING, REJECTED]
        .into_iter()
        .find(|s| has(s))
        .unwrap_or(NOAUTH)
}

/// Why an operator's status change is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TransitionError {
    /// Target is not accepted / rejected / pending.
    InvalidTarget,
    /// The auth set is preauthorized: only the device's own request can accept it.
    NotAllowed,
}

impl Device {
    pub fn new(id: String, identity: String, id_hash: String, now: &str) -> Self {
        Device {
            id,
            identity,
            id_hash,
            status: NOAUTH.into(),
            decommissioning: false,
            provisioned: false,
            created_ts: now.into(),
            updated_ts: now.into(),
            check_in_time: None,
            revision: 1,
            version: 0,
            auth_sets: Vec::new(),
        }
    }

    pub fn auth_set(&self, id: &str) -> Option<&AuthSet> {
        self.auth_sets.iter().find(|a| a.id == id)
    }

    pub fn auth_set_by_key(&self, pubkey: &str) -> Option<&AuthSet> {
        self.auth_sets.iter().find(|a| a.pubkey == pubkey)
    }

    /// Recomputes the aggregate status; on a change bumps `revision` and `updated_ts`.
    /// Returns whether the status changed.
    pub fn recompute_status(&mut self, now: &str) -> bool {
        let status = aggregate(&self.auth_sets);
        if status == self.status {
            return false;
        }
        self.status = status.into();
        self.revision += 1;
        self.updated_ts = now.into();
        true
    }

    /// Sets auth set `aid` to `status` and, when accepting, rejects the device's other accepted
    /// auth sets. The caller enforces the device limit first.
    fn set_auth_status(&mut self, aid: &str, status: &str) {
        for set in &mut self.auth_sets {
            if set.id == aid {
                set.status = status.into();
            } else if status == ACCEPTED && set.status == ACCEPTED {
                set.status = REJECTED.into();
            }
        }
    }

    /// An operator's decision on auth set `aid` (`PUT .../auth/{aid}/status`).
    pub fn decide(&mut self, aid: &str, target: &str) -> Result<(), TransitionError> {
        if ![ACCEPTED, REJECTED, PENDING].contains(&target) {
            return Err(TransitionError::InvalidTarget);
        }
        let current = self
            .auth_set(aid)
            .map(|a| a.status.clone())
            .unwrap_or_default();
        if current == PREAUTHORIZED {
            return Err(TransitionError::NotAllowed);
        }
        if current != target {
            self.set_auth_status(aid, target);
        }
        Ok(())
    }

    /// A preauthorized auth set matched a device's request: it becomes accepted.
    pub fn accept_preauthorized(&mut self, aid: &str) {
        self.set_auth_status(aid, ACCEPTED);
    }

    /// Ids of auth sets whose tokens must not work (everything not accepted).
    pub fn revoked_auth_sets(&self) -> Vec<String> {
        self.auth_sets
            .iter()
            .filter(|a| a.status != ACCEPTED)
            .map(|a| a.id.clone())
            .collect()
    }

    pub fn identity_data(&self) -> Value {
        serde_json::from_str(&self.identity).unwrap_or_else(|_| json!({}))
    }

    /// The device as the management API shows it.
    pub fn to_json(&self) -> Value {
        let identity = self.identity_data();
        let auth_sets: Vec<Value> = self
            .auth_sets
            .iter()
            .map(|a| {
                json!({"id": a.id, "identity_data": identity, "pubkey": a.pubkey, "ts": a.ts, "status": a.status})
            })
            .collect();
        let mut v = json!({
            "id": self.id,
            "identity_data": identity,
            "status": self.status,
            "decommissioning": self.decommissioning,
            "created_ts": self.created_ts,
            "updated_ts": self.updated_ts,
            "auth_sets": auth_sets,
        });
        if let Some(t) = &self.check_in_time {
            v["check_in_time"] = Value::String(t.clone());
        }
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set(id: &str, status: &str) -> AuthSet {
        AuthSet {
            id: id.into(),
            pubkey: format!("key-{id}"),
            status: status.into(),
            ts: "t".into(),
        }
    }

    fn device(sets: Vec<AuthSet>) -> Device {
        let mut d = Device::new("d".into(), "{}".into(), "h".into(), "t0");
        d.auth_sets = sets;
        d.recompute_status("t0");
        d
    }

    #[test]
    fn aggregation_order() {
        assert_eq!(aggregate(&[]), NOAUTH);
        assert_eq!(aggregate(&[set("a", REJECTED), set("b", PENDING)]), PENDING);
        assert_eq!(
            aggregate(&[set("a", PENDING), set("b", PREAUTHORIZED)]),
            PREAUTHORIZED
        );
        assert_eq!(
            aggregate(&[set("a", PREAUTHORIZED), set("b", ACCEPTED)]),
            ACCEPTED
        );
        assert_eq!(aggregate(&[set("a", REJECTED)]), REJECTED);
    }

    #[test]
    fn accepting_rejects_the_other_accepted_set() {
        let mut d = device(vec![set("a", ACCEPTED), set("b", PENDING)]);
        d.decide("b", ACCEPTED).unwrap();
        assert_eq!(d.auth_set("a").unwrap().status, REJECTED);
        assert_eq!(d.auth_set("b").unwrap().status, ACCEPTED);
        assert_eq!(d.revoked_auth_sets(), vec!["a".to_string()]);
        assert!(!d.recompute_status("t1"));
    }

    #[test]
    fn status_change_bumps_revision() {
        let mut d = device(vec![set("a", PENDING)]);
        let rev = d.revision;
        d.decide("a", ACCEPTED).unwrap();
        assert!(d.recompute_status("t1"));
        assert_eq!((d.status.as_str(), d.revision), (ACCEPTED, rev + 1));
        d.decide("a", ACCEPTED).unwrap();
        assert!(!d.recompute_status("t2"));
    }

    #[test]
    fn transitions_refused() {
        let mut d = device(vec![set("a", PREAUTHORIZED), set("b", PENDING)]);
        assert_eq!(d.decide("a", ACCEPTED), Err(TransitionError::NotAllowed));
        assert_eq!(
            d.decide("b", PREAUTHORIZED),
            Err(TransitionError::InvalidTarget)
        );
        assert_eq!(d.decide("b", "bogus"), Err(TransitionError::InvalidTarget));
    }
}
