//! A device with its auth sets, and the rules that move them: status aggregation, upstream's
//! transition table for operator decisions, and what an auth request does. No I/O here.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The status of an auth set, and of a device (aggregated from its auth sets). Its serde
/// name (`pending`, ...) is the wire format and the stored DynamoDB attribute value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStatus {
    Pending,
    Accepted,
    Rejected,
    Preauthorized,
    Noauth,
}

pub const PENDING: AuthStatus = AuthStatus::Pending;
pub const ACCEPTED: AuthStatus = AuthStatus::Accepted;
pub const REJECTED: AuthStatus = AuthStatus::Rejected;
pub const PREAUTHORIZED: AuthStatus = AuthStatus::Preauthorized;
pub const NOAUTH: AuthStatus = AuthStatus::Noauth;
/// Every status a device can have, in upstream's error-message order.
pub const STATUSES: [AuthStatus; 5] = [PENDING, ACCEPTED, REJECTED, PREAUTHORIZED, NOAUTH];

impl AuthStatus {
    /// The serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStatus::Pending => "pending",
            AuthStatus::Accepted => "accepted",
            AuthStatus::Rejected => "rejected",
            AuthStatus::Preauthorized => "preauthorized",
            AuthStatus::Noauth => "noauth",
        }
    }

    /// The status named `name` (its serde name), `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        STATUSES.into_iter().find(|s| s.as_str() == name)
    }

    /// The names of every status, in upstream's error-message order, joined by `, `.
    pub fn names() -> String {
        STATUSES.map(AuthStatus::as_str).join(", ")
    }
}

impl std::fmt::Display for AuthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
/// Most auth sets a device keeps once a device's auth request adds one (upstream has no limit).
/// A device is one DynamoDB item (400 KB max) listing every auth set: 16 sets of the largest
/// key (RSA 16384, ~2.9 KB of PEM) stay under 50 KB, and a device sending requests with ever new
/// keys replaces its own oldest pending (then rejected) sets instead of growing the item.
pub const MAX_AUTH_SETS: usize = 16;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuthSet {
    pub id: String,
    /// Canonical PEM of the device's public key.
    pub pubkey: String,
    pub status: AuthStatus,
    pub ts: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Device {
    pub id: String,
    /// Canonical identity JSON (sorted keys, Go formatting); its SHA-256 is `id_hash`.
    pub identity: String,
    pub id_hash: String,
    pub status: AuthStatus,
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
    /// The status the stored item is counted under (`None`: not stored yet); the store keeps
    /// it, so a status change moves the counters.
    #[serde(skip)]
    pub stored_status: Option<AuthStatus>,
}

/// Upstream's aggregation: accepted > preauthorized > pending > rejected > noauth.
pub fn aggregate(auth_sets: &[AuthSet]) -> AuthStatus {
    let has = |s: AuthStatus| auth_sets.iter().any(|a| a.status == s);
    [ACCEPTED, PREAUTHORIZED, PENDING, REJECTED]
        .into_iter()
        .find(|&s| has(s))
        .unwrap_or(NOAUTH)
}

/// The device already holds [`MAX_AUTH_SETS`] auth sets, all accepted or preauthorized: none
/// may be dropped to make room for a new pending one.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthSetsFull;

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
            status: NOAUTH,
            decommissioning: false,
            provisioned: false,
            created_ts: now.into(),
            updated_ts: now.into(),
            check_in_time: None,
            revision: 1,
            version: 0,
            auth_sets: Vec::new(),
            stored_status: None,
        }
    }

    pub fn auth_set(&self, id: &str) -> Option<&AuthSet> {
        self.auth_sets.iter().find(|a| a.id == id)
    }

    pub fn auth_set_by_key(&self, pubkey: &str) -> Option<&AuthSet> {
        self.auth_sets.iter().find(|a| a.pubkey == pubkey)
    }

    /// Adds `set` (a new pending auth set) keeping at most [`MAX_AUTH_SETS`]: to make room it
    /// drops the oldest pending sets (by `ts`, then position), then the oldest rejected ones;
    /// accepted and preauthorized sets are never dropped. Returns the dropped sets (their
    /// tokens must go), or [`AuthSetsFull`] with the device unchanged when there is no room.
    pub fn add_pending_auth_set(&mut self, set: AuthSet) -> Result<Vec<AuthSet>, AuthSetsFull> {
        let excess = (self.auth_sets.len() + 1).saturating_sub(MAX_AUTH_SETS);
        let mut victims: Vec<usize> = Vec::new();
        for status in [PENDING, REJECTED] {
            let mut candidates: Vec<usize> = (0..self.auth_sets.len())
                .filter(|&i| self.auth_sets[i].status == status)
                .collect();
            // Stable: equal times keep their position order.
            candidates.sort_by_key(|&i| parse_ts(&self.auth_sets[i].ts));
            victims.extend(candidates);
        }
        if victims.len() < excess {
            return Err(AuthSetsFull);
        }
        victims.truncate(excess);
        victims.sort_unstable();
        let mut dropped = Vec::with_capacity(excess);
        for i in victims.into_iter().rev() {
            dropped.push(self.auth_sets.remove(i));
        }
        dropped.reverse();
        self.auth_sets.push(set);
        Ok(dropped)
    }

    /// Recomputes the aggregate status; on a change bumps `revision` and `updated_ts`.
    /// Returns whether the status changed.
    pub fn recompute_status(&mut self, now: &str) -> bool {
        let status = aggregate(&self.auth_sets);
        if status == self.status {
            return false;
        }
        self.status = status;
        self.revision += 1;
        self.updated_ts = now.into();
        true
    }

    /// Sets auth set `aid` to `status` and, when accepting, rejects the device's other accepted
    /// auth sets. The caller enforces the device limit first.
    fn set_auth_status(&mut self, aid: &str, status: AuthStatus) {
        for set in &mut self.auth_sets {
            if set.id == aid {
                set.status = status;
            } else if status == ACCEPTED && set.status == ACCEPTED {
                set.status = REJECTED;
            }
        }
    }

    /// An operator's decision on auth set `aid` (`PUT .../auth/{aid}/status`).
    /// `target` is the requested status name.
    pub fn decide(&mut self, aid: &str, target: &str) -> Result<(), TransitionError> {
        let target = AuthStatus::parse(target)
            .filter(|t| [ACCEPTED, REJECTED, PENDING].contains(t))
            .ok_or(TransitionError::InvalidTarget)?;
        let current = self.auth_set(aid).map(|a| a.status);
        if current == Some(PREAUTHORIZED) {
            return Err(TransitionError::NotAllowed);
        }
        if current != Some(target) {
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

    /// The device as iot-manager's `device-provisioned` event carries it (upstream's device
    /// event: id, status, auth sets, creation time).
    pub fn lifecycle_event(&self) -> Value {
        let identity = self.identity_data();
        let auth_sets: Vec<Value> = self
            .auth_sets
            .iter()
            .map(|a| {
                json!({"id": a.id, "device_id": self.id, "identity_data": identity, "pubkey": a.pubkey, "status": a.status, "ts": a.ts})
            })
            .collect();
        json!({
            "id": self.id,
            "status": self.status,
            "auth_sets": auth_sets,
            "created_ts": self.created_ts,
        })
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

/// An auth set's time for ordering: RFC 3339 strings do not sort as text when the fraction
/// is omitted for whole seconds (`...:00Z` vs `...:00.5Z`). Unparseable times sort first.
fn parse_ts(ts: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(ts).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set(id: &str, status: AuthStatus) -> AuthSet {
        AuthSet {
            id: id.into(),
            pubkey: format!("key-{id}"),
            status,
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
        d.decide("b", ACCEPTED.as_str()).unwrap();
        assert_eq!(d.auth_set("a").unwrap().status, REJECTED);
        assert_eq!(d.auth_set("b").unwrap().status, ACCEPTED);
        assert_eq!(d.revoked_auth_sets(), vec!["a".to_string()]);
        assert!(!d.recompute_status("t1"));
    }

    #[test]
    fn status_change_bumps_revision() {
        let mut d = device(vec![set("a", PENDING)]);
        let rev = d.revision;
        d.decide("a", ACCEPTED.as_str()).unwrap();
        assert!(d.recompute_status("t1"));
        assert_eq!((d.status, d.revision), (ACCEPTED, rev + 1));
        d.decide("a", ACCEPTED.as_str()).unwrap();
        assert!(!d.recompute_status("t2"));
    }

    #[test]
    fn transitions_refused() {
        let mut d = device(vec![set("a", PREAUTHORIZED), set("b", PENDING)]);
        assert_eq!(
            d.decide("a", ACCEPTED.as_str()),
            Err(TransitionError::NotAllowed)
        );
        assert_eq!(
            d.decide("b", PREAUTHORIZED.as_str()),
            Err(TransitionError::InvalidTarget)
        );
        assert_eq!(d.decide("b", "bogus"), Err(TransitionError::InvalidTarget));
    }

    fn timed(id: &str, status: AuthStatus, ts: &str) -> AuthSet {
        AuthSet {
            ts: ts.into(),
            ..set(id, status)
        }
    }

    fn ids(d: &Device) -> Vec<&str> {
        d.auth_sets.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn pending_sets_are_added_until_the_cap() {
        let mut d = device(vec![]);
        for i in 0..MAX_AUTH_SETS {
            let dropped = d.add_pending_auth_set(set(&format!("p{i}"), PENDING));
            assert_eq!(dropped, Ok(vec![]));
        }
        assert_eq!(d.auth_sets.len(), MAX_AUTH_SETS);
        // At the cap the oldest pending set (all same ts: the first) makes room.
        let dropped = d.add_pending_auth_set(set("new", PENDING)).unwrap();
        assert_eq!(dropped, vec![set("p0", PENDING)]);
        assert_eq!(d.auth_sets.len(), MAX_AUTH_SETS);
        assert_eq!(d.auth_sets.last().unwrap().id, "new");
        assert_eq!(d.auth_sets[0].id, "p1");
    }

    #[test]
    fn oldest_pending_by_time_then_rejected_go_first() {
        let mut sets = vec![
            timed("acc", ACCEPTED, "2024-01-01T00:00:00Z"),
            timed("pre", PREAUTHORIZED, "2024-01-01T00:00:00Z"),
            timed("rej-old", REJECTED, "2024-01-01T00:00:01Z"),
            timed("rej-new", REJECTED, "2024-01-01T00:00:02Z"),
            // Later than ":05Z" although it sorts before it as text.
            timed("pend-late", PENDING, "2024-01-01T00:00:05.500Z"),
            timed("pend-early", PENDING, "2024-01-01T00:00:05Z"),
        ];
        for i in sets.len()..MAX_AUTH_SETS {
            sets.push(timed(&format!("acc{i}"), ACCEPTED, "2024-01-02T00:00:00Z"));
        }
        let mut d = device(sets);
        let t = "2024-01-03T00:00:00Z";
        let order: Vec<String> = (0..4)
            .map(|i| {
                let dropped = d
                    .add_pending_auth_set(timed(&format!("n{i}"), PENDING, t))
                    .unwrap();
                assert_eq!(dropped.len(), 1);
                dropped[0].id.clone()
            })
            .collect();
        // The new sets are pending too, but newer than every old pending set.
        assert_eq!(order, ["pend-early", "pend-late", "n0", "n1"]);
        assert!(ids(&d).contains(&"rej-old") && ids(&d).contains(&"n3"));
        assert_eq!(d.auth_sets.len(), MAX_AUTH_SETS);
    }

    #[test]
    fn rejected_sets_make_room_when_nothing_is_pending() {
        let mut sets = vec![
            timed("rej-new", REJECTED, "2024-01-01T00:00:02Z"),
            timed("rej-old", REJECTED, "2024-01-01T00:00:01Z"),
        ];
        for i in sets.len()..MAX_AUTH_SETS {
            sets.push(set(&format!("acc{i}"), ACCEPTED));
        }
        let mut d = device(sets);
        let dropped = d.add_pending_auth_set(set("n", PENDING)).unwrap();
        assert_eq!(
            dropped.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["rej-old"]
        );
        let dropped = d.add_pending_auth_set(set("m", PENDING)).unwrap();
        assert_eq!(dropped[0].id, "n");
    }

    #[test]
    fn accepted_and_preauthorized_sets_are_never_dropped() {
        let sets: Vec<AuthSet> = (0..MAX_AUTH_SETS)
            .map(|i| {
                set(
                    &format!("s{i}"),
                    if i % 2 == 0 { ACCEPTED } else { PREAUTHORIZED },
                )
            })
            .collect();
        let mut d = device(sets.clone());
        assert_eq!(d.add_pending_auth_set(set("n", PENDING)), Err(AuthSetsFull));
        assert_eq!(d.auth_sets, sets);
    }

    #[test]
    fn a_device_over_the_cap_is_brought_back_to_it() {
        let sets: Vec<AuthSet> = (0..MAX_AUTH_SETS + 3)
            .map(|i| set(&format!("p{i}"), PENDING))
            .collect();
        let mut d = device(sets);
        let dropped = d.add_pending_auth_set(set("n", PENDING)).unwrap();
        assert_eq!(
            dropped.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["p0", "p1", "p2", "p3"]
        );
        assert_eq!(d.auth_sets.len(), MAX_AUTH_SETS);
        assert_eq!(d.auth_sets.last().unwrap().id, "n");
    }
}
