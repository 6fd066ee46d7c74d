//! inventory v2 through the HTTP API (SPEC §4.4): the search DSL (every filter operator with
//! MongoDB's semantics, sorting on several keys, paging, projection, text search), the
//! attribute list, the device statistics, the v2alpha1 identity search, and the official GUI's
//! first load after login with its exact requests.
//!
//! Every test has its own stack (own resource prefix), so the expected sets are exact. Writes
//! reach the v2 index through queue consumers: each test first waits (≤ 15 s) until an
//! unfiltered search shows every device with the values written, then asserts without waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use black_box_tests::device::Device;
use black_box_tests::json_of;
use black_box_tests::mgmt::{https_client, inventory_attribute};
use black_box_tests::stack::{ADMIN_EMAIL, ADMIN_PASSWORD};
use black_box_tests::{wait_for, Mgmt, TestStack};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SEARCH: &str = "/api/management/v2/inventory/filters/search";
const ATTRIBUTES: &str = "/api/management/v2/inventory/filters/attributes";
const STATISTICS: &str = "/api/management/v2/inventory/statistics";
const IDENTITIES: &str = "/api/management/v2alpha1/inventory/identities/search";
const GROUPS: &str = "/api/management/v1/inventory/groups";
/// How long the v2 index may take to show a write.
const SETTLE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(250);

fn total(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("x-total-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Equality of attribute values with numbers compared numerically (`512` and `512.0` are the
/// same stored double).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => a == b,
    }
}

/// Attribute `scope/name` of a device of a v2 answer (`{"id","attributes":[{name,scope,value}]}`).
fn attr<'a>(device: &'a Value, scope: &str, name: &str) -> Option<&'a Value> {
    device["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["scope"] == scope && a["name"] == name)
        .map(|a| &a["value"])
}

/// The `(scope, name)` pairs a device of a v2 answer carries.
fn pairs(device: &Value) -> BTreeSet<(String, String)> {
    device["attributes"]
        .as_array()
        .map(|attrs| {
            attrs
                .iter()
                .map(|a| {
                    (
                        a["scope"].as_str().unwrap_or("?").to_owned(),
                        a["name"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pair_set(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(s, n)| ((*s).to_owned(), (*n).to_owned()))
        .collect()
}

/// Retries `attempt` every 250 ms for up to 15 s: `Ok(Ok(v))` is done, `Ok(Err(seen))` tries
/// again (the failure names the last `seen`), `Err` stops at once.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + SETTLE;
    loop {
        let seen = match attempt().await? {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            bail!("waited {SETTLE:?} for {what}; last seen: {seen}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One answer of a search endpoint.
#[derive(Debug, Clone)]
struct Found {
    status: StatusCode,
    total: Option<u64>,
    devices: Vec<Value>,
    raw: Value,
}

impl Found {
    fn ids(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| d["id"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// For a failure message: the device names of a 200, else the error body.
    fn shown(&self, names: &Names) -> String {
        if self.status == StatusCode::OK {
            format!("{:?}", names.list(self))
        } else {
            self.raw.to_string()
        }
    }

    fn device(&self, id: &str) -> Option<&Value> {
        self.devices.iter().find(|d| d["id"] == id)
    }
}

async fn post(admin: &Mgmt, path: &str, body: Value) -> anyhow::Result<Found> {
    let (status, headers, bytes) = admin.request(Method::POST, path, Some(body)).await?;
    let raw = json_of(&bytes);
    Ok(Found {
        status,
        total: total(&headers),
        devices: raw.as_array().cloned().unwrap_or_default(),
        raw,
    })
}

async fn search(admin: &Mgmt, body: Value) -> anyhow::Result<Found> {
    post(admin, SEARCH, body).await
}

/// `(scope, name, value)` attributes a device must show.
type Attrs<'a> = Vec<(&'a str, &'a str, Value)>;

/// Device ids and the names the tests give them (failures read `B`, not a UUID).
#[derive(Default, Debug, Clone)]
struct Names(BTreeMap<String, String>);

impl Names {
    fn of(&self, id: &str) -> String {
        self.0.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }

    fn id(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| format!("<no device {name}>"))
    }

    fn list(&self, found: &Found) -> Vec<String> {
        found.ids().iter().map(|id| self.of(id)).collect()
    }

    fn set(&self, found: &Found) -> BTreeSet<String> {
        self.list(found).into_iter().collect()
    }
}

fn names_set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Devices created through the real API: auth requests signed by a scripted device, operator
/// decisions through the management API.
struct Fleet {
    url: String,
    ca: PathBuf,
    admin: Mgmt,
    names: Names,
}

impl Fleet {
    async fn new(stack: &TestStack) -> anyhow::Result<Self> {
        Ok(Fleet {
            url: stack.url().to_owned(),
            ca: stack.ca_cert(),
            admin: stack.admin().await?,
            names: Names::default(),
        })
    }

    fn device(&self, mac: &str) -> anyhow::Result<Device> {
        Ok(Device::new(&self.url, https_client(&self.ca)?, mac))
    }

    /// A device that asked to join (401) and waits for a decision: (device id, auth set id).
    async fn pending(&mut self, name: &str, mac: &str) -> anyhow::Result<(String, String)> {
        let mut device = self.device(mac)?;
        let status = device.authenticate().await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED,
            "{name}: the first auth request answered {status}"
        );
        self.listed(name, mac).await
    }

    async fn listed(&mut self, name: &str, mac: &str) -> anyhow::Result<(String, String)> {
        let listed = self
            .admin
            .wait_for_device_by_mac(mac, Duration::from_secs(10))
            .await?;
        let id = listed["id"]
            .as_str()
            .with_context(|| format!("{name}: no id in {listed}"))?
            .to_owned();
        let auth_id = listed["auth_sets"][0]["id"]
            .as_str()
            .with_context(|| format!("{name}: no auth set in {listed}"))?
            .to_owned();
        self.names.0.insert(id.clone(), name.to_owned());
        Ok((id, auth_id))
    }

    /// An accepted device that sent `inventory` (`PUT`, a JSON array of `{name, value}`).
    async fn accepted(
        &mut self,
        name: &str,
        mac: &str,
        inventory: Value,
    ) -> anyhow::Result<(Device, String)> {
        let mut device = self.device(mac)?;
        let status = device.authenticate().await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED,
            "{name}: the first auth request answered {status}"
        );
        let (id, _) = self.listed(name, mac).await?;
        self.admin.accept_device(&id).await?;
        let status = device.authenticate().await?;
        ensure!(
            status == StatusCode::OK,
            "{name}: auth request after accept answered {status}"
        );
        let (status, body) = device
            .send_inventory(Method::PUT, inventory.to_string().into_bytes(), None)
            .await?;
        ensure!(
            status == StatusCode::OK,
            "{name}: inventory PUT answered {status} {body}"
        );
        Ok((device, id))
    }

    /// A device whose (only) auth set the operator rejected.
    async fn rejected(&mut self, name: &str, mac: &str) -> anyhow::Result<String> {
        let (id, auth_id) = self.pending(name, mac).await?;
        self.admin
            .set_auth_status(&id, &auth_id, "rejected")
            .await?;
        Ok(id)
    }

    /// A device the operator preauthorized (it never called in).
    async fn preauthorized(&mut self, name: &str, mac: &str) -> anyhow::Result<String> {
        let device = self.device(mac)?;
        let (status, headers, body) = self
            .admin
            .request(
                Method::POST,
                "/api/management/v2/devauth/devices",
                Some(json!({"identity_data": {"mac": mac}, "pubkey": device.pubkey_pem()})),
            )
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "{name}: preauthorize answered {status} {}",
            String::from_utf8_lossy(&body)
        );
        let id = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.rsplit('/').next())
            .with_context(|| format!("{name}: no Location"))?
            .to_owned();
        self.names.0.insert(id.clone(), name.to_owned());
        Ok(id)
    }

    /// Waits until inventory (v1, the store itself) has the device with `identity/status`:
    /// the identity and status workflows ran, so tags and groups can be written.
    async fn in_inventory(&self, id: &str, status: &str) -> anyhow::Result<()> {
        let admin = &self.admin;
        wait_for(SETTLE, POLL, || async move {
            let (code, device) = admin.inventory_device(id).await.ok()?;
            (code == StatusCode::OK
                && inventory_attribute(&device, "status") == Some(&json!(status)))
            .then_some(())
        })
        .await
        .with_context(|| {
            format!(
                "{} never reached inventory with status {status}",
                self.names.of(id)
            )
        })
    }

    async fn tags(&self, id: &str, tags: Value) -> anyhow::Result<()> {
        let (status, _, body) = self
            .admin
            .request(
                Method::PUT,
                &format!("/api/management/v1/inventory/devices/{id}/tags"),
                Some(tags),
            )
            .await?;
        ensure!(
            status == StatusCode::OK,
            "tags of {}: {status} {}",
            self.names.of(id),
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    async fn group(&self, id: &str, group: &str) -> anyhow::Result<()> {
        let (status, _, body) = self
            .admin
            .request(
                Method::PUT,
                &format!("/api/management/v1/inventory/devices/{id}/group"),
                Some(json!({ "group": group })),
            )
            .await?;
        ensure!(
            status == StatusCode::NO_CONTENT,
            "group of {}: {status} {}",
            self.names.of(id),
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// Waits until an unfiltered search lists exactly the devices of `expected`, each with at
    /// least the given `(scope, name, value)` attributes: the index caught up with every write.
    async fn settle(&self, expected: &[(&str, Attrs<'_>)]) -> anyhow::Result<()> {
        let admin = &self.admin;
        let names = &self.names;
        let want: BTreeSet<String> = expected.iter().map(|(n, _)| (*n).to_owned()).collect();
        let want = &want;
        eventually("the v2 index to show every write", || async move {
            let found = search(admin, json!({"page": 1, "per_page": 500})).await?;
            if found.status != StatusCode::OK {
                return Ok(Err(format!(
                    "search answered {} {}",
                    found.status, found.raw
                )));
            }
            let listed = names.set(&found);
            if &listed != want {
                return Ok(Err(format!("listed {listed:?}, expected {want:?}")));
            }
            for (name, attrs) in expected {
                let id = names.id(name);
                let device = found.device(&id).cloned().unwrap_or_default();
                for (scope, attribute, value) in attrs {
                    let got = attr(&device, scope, attribute);
                    if !got.is_some_and(|v| same(v, value)) {
                        return Ok(Err(format!(
                            "{name}: {scope}/{attribute} is {got:?}, expected {value}"
                        )));
                    }
                }
            }
            Ok(Ok(()))
        })
        .await
    }
}

/// Exact checks that record a mismatch and go on, so one run lists every wrong case.
struct Checks<'a> {
    admin: &'a Mgmt,
    names: &'a Names,
    failures: Vec<String>,
    passed: usize,
}

impl<'a> Checks<'a> {
    fn new(fleet: &'a Fleet) -> Self {
        Checks {
            admin: &fleet.admin,
            names: &fleet.names,
            failures: Vec::new(),
            passed: 0,
        }
    }

    fn record(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.failures.push(failure());
        }
    }

    /// `body` to `path` answers 200 with exactly the devices `want` (any order) and
    /// `X-Total-Count` = their number.
    async fn set_at(
        &mut self,
        path: &str,
        label: &str,
        body: Value,
        want: &[&str],
    ) -> anyhow::Result<Found> {
        let found = post(self.admin, path, body.clone()).await?;
        let want = names_set(want);
        let got = self.names.set(&found);
        let ok = found.status == StatusCode::OK
            && got == want
            && found.devices.len() == want.len()
            && found.total == Some(want.len() as u64);
        self.record(ok, || {
            format!(
                "{label}: expected 200 {want:?} (X-Total-Count {}), got {} {} \
                 (X-Total-Count {:?}); body {body}",
                want.len(),
                found.status,
                found.shown(self.names),
                found.total
            )
        });
        Ok(found)
    }

    async fn set(&mut self, label: &str, body: Value, want: &[&str]) -> anyhow::Result<Found> {
        self.set_at(SEARCH, label, body, want).await
    }

    /// `body` answers 200 with exactly the devices `want`, in this order, and `X-Total-Count`
    /// = `total`.
    async fn order(
        &mut self,
        label: &str,
        body: Value,
        want: &[&str],
        total: u64,
    ) -> anyhow::Result<Found> {
        let found = search(self.admin, body.clone()).await?;
        let got = self.names.list(&found);
        let ok = found.status == StatusCode::OK && got == want && found.total == Some(total);
        self.record(ok, || {
            format!(
                "{label}: expected 200 {want:?} (X-Total-Count {total}), got {} {} \
                 (X-Total-Count {:?}); body {body}",
                found.status,
                found.shown(self.names),
                found.total
            )
        });
        Ok(found)
    }

    /// `body` to `path` answers `want`.
    async fn status(
        &mut self,
        path: &str,
        label: &str,
        body: Value,
        want: StatusCode,
    ) -> anyhow::Result<()> {
        let found = post(self.admin, path, body.clone()).await?;
        let ok = found.status == want;
        self.record(ok, || {
            format!(
                "{label}: expected {want}, got {} {}; body {body}",
                found.status, found.raw
            )
        });
        Ok(())
    }

    fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        self.record(ok, failure);
    }

    fn finish(self) -> anyhow::Result<()> {
        ensure!(
            self.failures.is_empty(),
            "{} of {} checks failed:\n  {}",
            self.failures.len(),
            self.failures.len() + self.passed,
            self.failures.join("\n  ")
        );
        Ok(())
    }
}

fn filter(scope: &str, attribute: &str, op: &str, value: Value) -> Value {
    json!({"scope": scope, "attribute": attribute, "type": op, "value": value})
}

/// A search body with one inventory filter (`per_page` 500 so nothing is paged away).
fn inv(attribute: &str, op: &str, value: Value) -> Value {
    json!({"page": 1, "per_page": 500, "filters": [filter("inventory", attribute, op, value)]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_follow_mongodb_semantics() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    // A..D accepted with inventory; P pending (identity only): it lacks every inventory
    // attribute, so `$ne`, `$nin` and `$exists: false` match it.
    let (_, a) = fleet
        .accepted(
            "A",
            "02:4e:01:00:00:0a",
            json!([
                {"name": "device_type", "value": "qx-alpha"},
                {"name": "mem", "value": 512},
                {"name": "code", "value": "1"},
                {"name": "langs", "value": ["a", "b"]}
            ]),
        )
        .await?;
    let (_, b) = fleet
        .accepted(
            "B",
            "02:4e:01:00:00:0b",
            json!([
                {"name": "device_type", "value": "qx-beta"},
                {"name": "mem", "value": 1024},
                {"name": "code", "value": 1},
                {"name": "langs", "value": ["c"]}
            ]),
        )
        .await?;
    let (_, c) = fleet
        .accepted(
            "C",
            "02:4e:01:00:00:0c",
            json!([
                {"name": "device_type", "value": "qx-alpha"},
                {"name": "mem", "value": 2048},
                {"name": "code", "value": 1.0}
            ]),
        )
        .await?;
    let (_, d) = fleet
        .accepted(
            "D",
            "02:4e:01:00:00:0d",
            json!([
                {"name": "device_type", "value": "qx-gamma"},
                {"name": "mem", "value": 256},
                {"name": "langs", "value": ["b", "d"]}
            ]),
        )
        .await?;
    let (p, _) = fleet.pending("P", "02:4e:01:00:00:0e").await?;
    for id in [&a, &b, &c, &d] {
        fleet.in_inventory(id, "accepted").await?;
    }
    fleet.in_inventory(&p, "pending").await?;
    fleet
        .settle(&[
            (
                "A",
                vec![
                    ("identity", "status", json!("accepted")),
                    ("inventory", "langs", json!(["a", "b"])),
                ],
            ),
            (
                "B",
                vec![
                    ("identity", "status", json!("accepted")),
                    ("inventory", "code", json!(1)),
                ],
            ),
            (
                "C",
                vec![
                    ("identity", "status", json!("accepted")),
                    ("inventory", "mem", json!(2048)),
                ],
            ),
            (
                "D",
                vec![
                    ("identity", "status", json!("accepted")),
                    ("inventory", "langs", json!(["b", "d"])),
                ],
            ),
            (
                "P",
                vec![
                    ("identity", "status", json!("pending")),
                    ("identity", "mac", json!("02:4e:01:00:00:0e")),
                ],
            ),
        ])
        .await?;

    let mut ck = Checks::new(&fleet);
    // $eq, type-sensitive: the string "1" is not the number 1; 1 and 1.0 are the same number.
    ck.set(
        "$eq string",
        inv("device_type", "$eq", json!("qx-alpha")),
        &["A", "C"],
    )
    .await?;
    ck.set("$eq \"1\"", inv("code", "$eq", json!("1")), &["A"])
        .await?;
    ck.set("$eq 1", inv("code", "$eq", json!(1)), &["B", "C"])
        .await?;
    ck.set("$eq 1.0", inv("code", "$eq", json!(1.0)), &["B", "C"])
        .await?;
    ck.set("$eq number", inv("mem", "$eq", json!(512)), &["A"])
        .await?;
    ck.set(
        "$eq \"512\" (string vs number)",
        inv("mem", "$eq", json!("512")),
        &[],
    )
    .await?;
    // Arrays: an element matches; the whole array matches an equal array operand.
    ck.set(
        "$eq array element",
        inv("langs", "$eq", json!("b")),
        &["A", "D"],
    )
    .await?;
    ck.set(
        "$eq whole array",
        inv("langs", "$eq", json!(["a", "b"])),
        &["A"],
    )
    .await?;
    ck.set(
        "$in array elements",
        inv("langs", "$in", json!(["b", "c"])),
        &["A", "B", "D"],
    )
    .await?;
    ck.set(
        "$in strings",
        inv("device_type", "$in", json!(["qx-beta", "qx-gamma"])),
        &["B", "D"],
    )
    .await?;
    ck.set(
        "$in numbers",
        inv("mem", "$in", json!([256, 2048])),
        &["C", "D"],
    )
    .await?;
    ck.set(
        "$in type-sensitive",
        inv("code", "$in", json!(["1"])),
        &["A"],
    )
    .await?;
    // Negations also match devices that lack the attribute (P, and D for `code`).
    ck.set(
        "$ne string",
        inv("device_type", "$ne", json!("qx-alpha")),
        &["B", "D", "P"],
    )
    .await?;
    ck.set("$ne 1", inv("code", "$ne", json!(1)), &["A", "D", "P"])
        .await?;
    ck.set(
        "$ne array element",
        inv("langs", "$ne", json!("b")),
        &["B", "C", "P"],
    )
    .await?;
    ck.set(
        "$nin strings",
        inv("device_type", "$nin", json!(["qx-alpha", "qx-beta"])),
        &["D", "P"],
    )
    .await?;
    ck.set(
        "$nin array elements",
        inv("langs", "$nin", json!(["b"])),
        &["B", "C", "P"],
    )
    .await?;
    // Comparisons: same type only, numerically or lexicographically, any array element.
    ck.set("$gt number", inv("mem", "$gt", json!(512)), &["B", "C"])
        .await?;
    ck.set(
        "$gte number",
        inv("mem", "$gte", json!(512)),
        &["A", "B", "C"],
    )
    .await?;
    ck.set("$lt number", inv("mem", "$lt", json!(1024)), &["A", "D"])
        .await?;
    ck.set(
        "$lte number",
        inv("mem", "$lte", json!(1024)),
        &["A", "B", "D"],
    )
    .await?;
    ck.set(
        "$gt number skips strings",
        inv("code", "$gt", json!(0)),
        &["B", "C"],
    )
    .await?;
    ck.set(
        "$gt string vs numbers",
        inv("mem", "$gt", json!("100")),
        &[],
    )
    .await?;
    ck.set(
        "$gt string",
        inv("device_type", "$gt", json!("qx-b")),
        &["B", "D"],
    )
    .await?;
    ck.set(
        "$lt string",
        inv("device_type", "$lt", json!("qx-b")),
        &["A", "C"],
    )
    .await?;
    ck.set("$gt array element", inv("langs", "$gt", json!("c")), &["D"])
        .await?;
    ck.set(
        "$gte array element",
        inv("langs", "$gte", json!("c")),
        &["B", "D"],
    )
    .await?;
    // $exists.
    ck.set(
        "$exists true",
        inv("code", "$exists", json!(true)),
        &["A", "B", "C"],
    )
    .await?;
    ck.set(
        "$exists false",
        inv("code", "$exists", json!(false)),
        &["D", "P"],
    )
    .await?;
    ck.set(
        "$exists false (langs)",
        inv("langs", "$exists", json!(false)),
        &["C", "P"],
    )
    .await?;
    // $regex on strings and on array elements; never on numbers.
    ck.set(
        "$regex",
        inv("device_type", "$regex", json!("^qx-(alpha|gamma)$")),
        &["A", "C", "D"],
    )
    .await?;
    ck.set(
        "$regex array element",
        inv("langs", "$regex", json!("^[cd]$")),
        &["B", "D"],
    )
    .await?;
    ck.set("$regex number", inv("mem", "$regex", json!("^5")), &[])
        .await?;
    // Other scopes; identity/id is the device id.
    let b_id = fleet.names.id("B");
    ck.set(
        "identity/id $eq",
        json!({"filters": [filter("identity", "id", "$eq", json!(b_id))]}),
        &["B"],
    )
    .await?;
    ck.set(
        "identity/id $in",
        json!({"filters": [filter("identity", "id", "$in", json!([fleet.names.id("A"), fleet.names.id("P")]))]}),
        &["A", "P"],
    )
    .await?;
    ck.set(
        "identity/mac $eq",
        json!({"filters": [filter("identity", "mac", "$eq", json!("02:4e:01:00:00:0c"))]}),
        &["C"],
    )
    .await?;
    ck.set(
        "identity/status $eq pending",
        json!({"filters": [filter("identity", "status", "$eq", json!("pending"))]}),
        &["P"],
    )
    .await?;
    ck.set(
        "identity/status $eq accepted",
        json!({"filters": [filter("identity", "status", "$eq", json!("accepted"))]}),
        &["A", "B", "C", "D"],
    )
    .await?;
    // Several filters are AND-ed; device_ids restricts.
    ck.set(
        "two filters",
        json!({"filters": [
            filter("inventory", "device_type", "$eq", json!("qx-alpha")),
            filter("inventory", "mem", "$gt", json!(1000))
        ]}),
        &["C"],
    )
    .await?;
    ck.set(
        "device_ids",
        json!({"device_ids": [fleet.names.id("A"), fleet.names.id("B"), fleet.names.id("P")],
               "filters": [filter("inventory", "device_type", "$exists", json!(true))]}),
        &["A", "B"],
    )
    .await?;
    ck.set("no filters", json!({}), &["A", "B", "C", "D", "P"])
        .await?;
    ck.set(
        "empty filters (GUI)",
        json!({"page": 1, "per_page": 20, "filters": [], "sort": []}),
        &["A", "B", "C", "D", "P"],
    )
    .await?;

    // Bad requests.
    let bad = [
        ("$ltne", inv("mem", "$ltne", json!(1))),
        ("$type", inv("mem", "$type", json!("number"))),
        (
            "unknown filter scope",
            json!({"filters": [filter("bogus", "mem", "$eq", json!(1))]}),
        ),
        (
            "filter without attribute",
            json!({"filters": [{"scope": "inventory", "type": "$eq", "value": 1}]}),
        ),
        ("null value", inv("mem", "$eq", Value::Null)),
        ("$in without array", inv("mem", "$in", json!(512))),
        (
            "unknown sort scope",
            json!({"sort": [{"scope": "bogus", "attribute": "mem", "order": "asc"}]}),
        ),
        (
            "bad sort order",
            json!({"sort": [{"scope": "inventory", "attribute": "mem", "order": "sideways"}]}),
        ),
        (
            "unknown attributes scope",
            json!({"attributes": [{"scope": "bogus", "attribute": "mem"}]}),
        ),
        ("per_page 501", json!({"page": 1, "per_page": 501})),
        ("body not an object", json!("filters")),
    ];
    for (label, body) in bad {
        ck.status(SEARCH, label, body, StatusCode::BAD_REQUEST)
            .await?;
    }
    ck.status(
        SEARCH,
        "per_page 500",
        json!({"page": 1, "per_page": 500}),
        StatusCode::OK,
    )
    .await?;
    ck.finish()?;
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_sorts_on_several_keys() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    let devices = [
        ("S1", "02:4e:02:00:00:01", "st-a", 100),
        ("S2", "02:4e:02:00:00:02", "st-b", 300),
        ("S3", "02:4e:02:00:00:03", "st-a", 300),
        ("S4", "02:4e:02:00:00:04", "st-b", 100),
        ("S5", "02:4e:02:00:00:05", "st-a", 200),
    ];
    let mut expected = Vec::new();
    for (name, mac, device_type, mem) in devices {
        let (_, id) = fleet
            .accepted(
                name,
                mac,
                json!([{"name": "device_type", "value": device_type}, {"name": "mem", "value": mem}]),
            )
            .await?;
        fleet.in_inventory(&id, "accepted").await?;
        expected.push((
            name,
            vec![
                ("identity", "status", json!("accepted")),
                ("inventory", "device_type", json!(device_type)),
                ("inventory", "mem", json!(mem)),
            ],
        ));
    }
    // A pending device without inventory: the filter keeps it out of the sorted lists.
    let (p, _) = fleet.pending("P", "02:4e:02:00:00:06").await?;
    fleet.in_inventory(&p, "pending").await?;
    expected.push(("P", vec![("identity", "status", json!("pending"))]));
    fleet.settle(&expected).await?;

    let sorted = |keys: Value| {
        json!({"page": 1, "per_page": 500,
               "filters": [filter("inventory", "device_type", "$exists", json!(true))],
               "sort": keys})
    };
    let key = |scope: &str, attribute: &str, order: &str| json!({"scope": scope, "attribute": attribute, "order": order});
    let mut ck = Checks::new(&fleet);
    ck.order(
        "device_type asc, mem desc",
        sorted(json!([
            key("inventory", "device_type", "asc"),
            key("inventory", "mem", "desc")
        ])),
        &["S3", "S5", "S1", "S2", "S4"],
        5,
    )
    .await?;
    ck.order(
        "device_type desc, mem asc",
        sorted(json!([
            key("inventory", "device_type", "desc"),
            key("inventory", "mem", "asc")
        ])),
        &["S4", "S2", "S1", "S5", "S3"],
        5,
    )
    .await?;
    ck.order(
        "mem asc, device_type desc",
        sorted(json!([
            key("inventory", "mem", "asc"),
            key("inventory", "device_type", "desc")
        ])),
        &["S4", "S1", "S5", "S2", "S3"],
        5,
    )
    .await?;
    ck.order(
        "mem desc, device_type asc",
        sorted(json!([
            key("inventory", "mem", "desc"),
            key("inventory", "device_type", "asc")
        ])),
        &["S3", "S2", "S5", "S1", "S4"],
        5,
    )
    .await?;
    ck.order(
        "identity/mac desc",
        sorted(json!([key("identity", "mac", "desc")])),
        &["S5", "S4", "S3", "S2", "S1"],
        5,
    )
    .await?;
    // identity/id sorts by the device id; every device (no filter).
    let mut by_id: Vec<(String, String)> = fleet
        .names
        .0
        .iter()
        .map(|(id, n)| (id.clone(), n.clone()))
        .collect();
    by_id.sort();
    let by_id: Vec<&str> = by_id.iter().map(|(_, n)| n.as_str()).collect();
    ck.order(
        "identity/id asc",
        json!({"per_page": 500, "sort": [key("identity", "id", "asc")]}),
        &by_id,
        6,
    )
    .await?;
    // Sorting then paging: page 2 of 2 is the third and fourth of the sorted list.
    ck.order(
        "sorted page 2",
        json!({"page": 2, "per_page": 2,
               "filters": [filter("inventory", "device_type", "$exists", json!(true))],
               "sort": [key("inventory", "device_type", "asc"), key("inventory", "mem", "desc")]}),
        &["S1", "S2"],
        5,
    )
    .await?;
    ck.finish()?;
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_pages_with_total_count() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    let mut expected = Vec::new();
    let names = ["G1", "G2", "G3", "G4", "G5"];
    for (i, name) in names.iter().enumerate() {
        let (_, id) = fleet
            .accepted(
                name,
                &format!("02:4e:03:00:00:0{}", i + 1),
                json!([{"name": "batch", "value": "pg-1"}, {"name": "seq", "value": i + 1}]),
            )
            .await?;
        fleet.in_inventory(&id, "accepted").await?;
        expected.push((*name, vec![("inventory", "seq", json!(i + 1))]));
    }
    // Not matching the filter: another batch, and a pending device without inventory.
    let (_, other) = fleet
        .accepted(
            "X",
            "02:4e:03:00:00:09",
            json!([{"name": "batch", "value": "pg-2"}, {"name": "seq", "value": 9}]),
        )
        .await?;
    fleet.in_inventory(&other, "accepted").await?;
    expected.push(("X", vec![("inventory", "batch", json!("pg-2"))]));
    let (p, _) = fleet.pending("P", "02:4e:03:00:00:0a").await?;
    fleet.in_inventory(&p, "pending").await?;
    expected.push(("P", vec![("identity", "status", json!("pending"))]));
    fleet.settle(&expected).await?;

    let batch = || json!([filter("inventory", "batch", "$eq", json!("pg-1"))]);
    let mut ck = Checks::new(&fleet);
    // The GUI's way: no sort. Pages 1..3 have 2, 2, 1 devices, never the same one twice.
    let mut seen: Vec<String> = Vec::new();
    for (page, size) in [(1, 2), (2, 2), (3, 1), (4, 0)] {
        let found = search(
            &fleet.admin,
            json!({"page": page, "per_page": 2, "filters": batch(), "sort": []}),
        )
        .await?;
        let got = fleet.names.list(&found);
        ck.check(
            found.status == StatusCode::OK && got.len() == size && found.total == Some(5),
            || {
                format!(
                    "unsorted page {page}: expected 200 with {size} devices and \
                     X-Total-Count 5, got {} {} (X-Total-Count {:?})",
                    found.status,
                    found.shown(&fleet.names),
                    found.total
                )
            },
        );
        seen.extend(got);
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    ck.check(seen.len() == 5 && unique == names_set(&names), || {
        format!("unsorted pages together: expected each of {names:?} once, got {seen:?}")
    });
    // Sorted: the pages are exact.
    let by_seq = json!([{"scope": "inventory", "attribute": "seq", "order": "asc"}]);
    for (page, want) in [
        (1, vec!["G1", "G2"]),
        (2, vec!["G3", "G4"]),
        (3, vec!["G5"]),
        (4, vec![]),
    ] {
        ck.order(
            &format!("sorted page {page}"),
            json!({"page": page, "per_page": 2, "filters": batch(), "sort": by_seq}),
            &want,
            5,
        )
        .await?;
    }
    // Defaults: page and per_page below 1 (or absent) mean 1 and 20.
    ck.set(
        "page 0, per_page 0",
        json!({"page": 0, "per_page": 0, "filters": batch()}),
        &names,
    )
    .await?;
    ck.set("no paging", json!({"filters": batch()}), &names)
        .await?;
    ck.order(
        "per_page 1",
        json!({"page": 3, "per_page": 1, "filters": batch(), "sort": by_seq}),
        &["G3"],
        5,
    )
    .await?;
    ck.order(
        "X-Total-Count counts every device",
        json!({"page": 1, "per_page": 1, "sort": [{"scope": "inventory", "attribute": "seq", "order": "desc"}]}),
        &["X"],
        7,
    )
    .await?;
    ck.status(
        SEARCH,
        "per_page 501",
        json!({"page": 1, "per_page": 501}),
        StatusCode::BAD_REQUEST,
    )
    .await?;
    ck.finish()?;
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_projects_the_requested_attributes() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    let (_, a) = fleet
        .accepted(
            "A",
            "02:4e:04:00:00:01",
            json!([
                {"name": "device_type", "value": "pj-type"},
                {"name": "mem", "value": 64},
                {"name": "extra", "value": "x"}
            ]),
        )
        .await?;
    let (p, _) = fleet.pending("P", "02:4e:04:00:00:02").await?;
    fleet.in_inventory(&a, "accepted").await?;
    fleet.in_inventory(&p, "pending").await?;
    fleet
        .tags(&a, json!([{"name": "name", "value": "pj-name"}]))
        .await?;
    fleet
        .settle(&[
            (
                "A",
                vec![
                    ("identity", "status", json!("accepted")),
                    ("inventory", "extra", json!("x")),
                    ("tags", "name", json!("pj-name")),
                ],
            ),
            ("P", vec![("identity", "status", json!("pending"))]),
        ])
        .await?;

    let mut ck = Checks::new(&fleet);
    let only_type = json!([{"scope": "inventory", "attribute": "device_type"}]);
    let found = ck
        .set(
            "projection inventory/device_type",
            json!({"attributes": only_type}),
            &["A", "P"],
        )
        .await?;
    let a_dev = found.device(&a).cloned().unwrap_or_default();
    let p_dev = found.device(&p).cloned().unwrap_or_default();
    let want = pair_set(&[("inventory", "device_type"), ("system", "updated_ts")]);
    ck.check(pairs(&a_dev) == want, || {
        format!("A projected to device_type: expected {want:?}, got {a_dev}")
    });
    ck.check(
        attr(&a_dev, "inventory", "device_type") == Some(&json!("pj-type")),
        || format!("A projected: device_type value, got {a_dev}"),
    );
    ck.check(a_dev["updated_ts"].is_string(), || {
        format!("A projected: top-level updated_ts missing: {a_dev}")
    });
    // P has no device_type and never wrote inventory: at most system/updated_ts.
    ck.check(
        pairs(&p_dev).is_subset(&pair_set(&[("system", "updated_ts")])),
        || format!("P projected to device_type: expected no attribute but updated_ts, got {p_dev}"),
    );

    let found = ck
        .set(
            "projection identity/mac + tags/name",
            json!({"filters": [filter("identity", "id", "$eq", json!(a))],
                   "attributes": [{"scope": "identity", "attribute": "mac"}, {"scope": "tags", "attribute": "name"}]}),
            &["A"],
        )
        .await?;
    let a_dev = found.device(&a).cloned().unwrap_or_default();
    let want = pair_set(&[
        ("identity", "mac"),
        ("tags", "name"),
        ("system", "updated_ts"),
    ]);
    ck.check(pairs(&a_dev) == want, || {
        format!("A projected to mac and tag name: expected {want:?}, got {a_dev}")
    });

    // The GUI's list projection: only those of A's attributes that it names.
    let found = ck
        .set(
            "projection GUI defaults",
            json!({"filters": [filter("identity", "id", "$eq", json!(a))], "attributes": gui_attributes()}),
            &["A"],
        )
        .await?;
    let a_dev = found.device(&a).cloned().unwrap_or_default();
    let mut got = pairs(&a_dev);
    got.remove(&("system".to_owned(), "check_in_time".to_owned()));
    let want = pair_set(&[
        ("identity", "status"),
        ("inventory", "device_type"),
        ("system", "created_ts"),
        ("system", "updated_ts"),
        ("tags", "name"),
    ]);
    ck.check(got == want, || {
        format!(
            "A projected to the GUI's attributes: expected {want:?} (+ check_in_time), got {a_dev}"
        )
    });

    // No projection: everything.
    let found = ck
        .set(
            "no projection",
            json!({"filters": [filter("identity", "id", "$eq", json!(a))]}),
            &["A"],
        )
        .await?;
    let a_dev = found.device(&a).cloned().unwrap_or_default();
    let want = pair_set(&[
        ("identity", "mac"),
        ("identity", "status"),
        ("inventory", "device_type"),
        ("inventory", "mem"),
        ("inventory", "extra"),
        ("tags", "name"),
        ("system", "updated_ts"),
    ]);
    ck.check(pairs(&a_dev).is_superset(&want), || {
        format!("A without projection: expected at least {want:?}, got {a_dev}")
    });
    ck.finish()?;
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_text_finds_inventory_words_and_tag_names() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    let (_, a) = fleet
        .accepted(
            "A",
            "02:4e:05:00:00:01",
            json!([{"name": "device_type", "value": "tx-board"}, {"name": "location", "value": "rack quokkaxyz 7"}]),
        )
        .await?;
    let (_, b) = fleet
        .accepted(
            "B",
            "02:4e:05:00:00:02",
            json!([{"name": "device_type", "value": "tx-board"}, {"name": "location", "value": "shelf"}]),
        )
        .await?;
    let (p, _) = fleet.pending("P", "02:4e:05:00:00:03").await?;
    fleet.in_inventory(&a, "accepted").await?;
    fleet.in_inventory(&b, "accepted").await?;
    fleet.in_inventory(&p, "pending").await?;
    fleet
        .tags(&b, json!([{"name": "name", "value": "wombatqq"}]))
        .await?;
    fleet
        .tags(&p, json!([{"name": "name", "value": "numbatzz"}]))
        .await?;
    fleet
        .settle(&[
            (
                "A",
                vec![("inventory", "location", json!("rack quokkaxyz 7"))],
            ),
            ("B", vec![("tags", "name", json!("wombatqq"))]),
            ("P", vec![("tags", "name", json!("numbatzz"))]),
        ])
        .await?;

    // The GUI's header search body (`searchDevices`).
    let text = |term: &str| {
        json!({"page": 1, "per_page": 10, "filters": [], "sort": [], "text": term,
               "attributes": gui_attributes()})
    };
    let mut ck = Checks::new(&fleet);
    ck.set(
        "text: a word of an inventory value",
        text("quokkaxyz"),
        &["A"],
    )
    .await?;
    ck.set("text: a tag name", text("wombatqq"), &["B"]).await?;
    ck.set(
        "text: a pending device's tag name",
        text("numbatzz"),
        &["P"],
    )
    .await?;
    ck.set(
        "text: a word shared by two devices",
        text("board"),
        &["A", "B"],
    )
    .await?;
    ck.set(
        "text: any of two words",
        text("quokkaxyz wombatqq"),
        &["A", "B"],
    )
    .await?;
    ck.set("text: no match", text("nosuchwordanywhere"), &[])
        .await?;
    ck.set(
        "text with a filter",
        json!({"text": "board", "filters": [filter("inventory", "location", "$eq", json!("shelf"))]}),
        &["B"],
    )
    .await?;
    ck.finish()?;
    stack.stop().await;
    Ok(())
}

fn stats(accepted: u64, pending: u64) -> Value {
    json!({"devices_by_status": {
        "accepted": {"standard": accepted, "micro": 0, "system": 0},
        "pending": {"standard": pending, "micro": 0, "system": 0}
    }})
}

async fn statistics_become(admin: &Mgmt, want: Value) -> anyhow::Result<()> {
    let want = &want;
    eventually(&format!("statistics {want}"), || async move {
        let (status, body) = admin.request_json(Method::GET, STATISTICS, None).await?;
        Ok(if status == StatusCode::OK && &body == want {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_accepted_and_pending_devices() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    let (status, body) = fleet
        .admin
        .request_json(Method::GET, STATISTICS, None)
        .await?;
    assert_eq!(
        (status, body),
        (StatusCode::OK, stats(0, 0)),
        "no devices yet"
    );

    let (_, a1) = fleet
        .accepted(
            "A1",
            "02:4e:06:00:00:01",
            json!([{"name": "device_type", "value": "sx"}]),
        )
        .await?;
    let (_, a2) = fleet
        .accepted(
            "A2",
            "02:4e:06:00:00:02",
            json!([{"name": "device_type", "value": "sx"}]),
        )
        .await?;
    let (p1, p1_auth) = fleet.pending("P1", "02:4e:06:00:00:03").await?;
    let (p2, p2_auth) = fleet.pending("P2", "02:4e:06:00:00:04").await?;
    let (p3, _) = fleet.pending("P3", "02:4e:06:00:00:05").await?;
    // Rejected and preauthorized devices are not counted.
    let r = fleet.rejected("R", "02:4e:06:00:00:06").await?;
    let q = fleet.preauthorized("Q", "02:4e:06:00:00:07").await?;
    for id in [&a1, &a2] {
        fleet.in_inventory(id, "accepted").await?;
    }
    for id in [&p1, &p2, &p3] {
        fleet.in_inventory(id, "pending").await?;
    }
    fleet.in_inventory(&r, "rejected").await?;
    fleet.in_inventory(&q, "preauthorized").await?;
    statistics_become(&fleet.admin, stats(2, 3)).await?;

    // Accepting a pending device moves it over.
    fleet
        .admin
        .set_auth_status(&p1, &p1_auth, "accepted")
        .await?;
    statistics_become(&fleet.admin, stats(3, 2)).await?;
    // Decommissioning removes it.
    fleet.admin.decommission(&a1).await?;
    statistics_become(&fleet.admin, stats(2, 2)).await?;
    // Rejecting a pending device removes it from pending.
    fleet
        .admin
        .set_auth_status(&p2, &p2_auth, "rejected")
        .await?;
    statistics_become(&fleet.admin, stats(2, 1)).await?;
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_attributes_lists_names_with_counts_in_order() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    let (_, a) = fleet
        .accepted(
            "A",
            "02:4e:07:00:00:01",
            json!([
                {"name": "fa_type", "value": "t"},
                {"name": "fa_mem", "value": 1},
                {"name": "fa_only_a", "value": ["x", "y"]}
            ]),
        )
        .await?;
    let (_, b) = fleet
        .accepted(
            "B",
            "02:4e:07:00:00:02",
            json!([{"name": "fa_type", "value": "t"}, {"name": "fa_mem", "value": 2}]),
        )
        .await?;
    let (_, c) = fleet
        .accepted(
            "C",
            "02:4e:07:00:00:03",
            json!([{"name": "fa_type", "value": "u"}]),
        )
        .await?;
    let (p, _) = fleet.pending("P", "02:4e:07:00:00:04").await?;
    for id in [&a, &b, &c] {
        fleet.in_inventory(id, "accepted").await?;
    }
    fleet.in_inventory(&p, "pending").await?;
    fleet
        .tags(
            &a,
            json!([{"name": "name", "value": "fa-a"}, {"name": "fa_tag", "value": "1"}]),
        )
        .await?;
    fleet
        .tags(&p, json!([{"name": "name", "value": "fa-p"}]))
        .await?;
    fleet.group(&a, "fa-grp").await?;
    fleet
        .settle(&[
            (
                "A",
                vec![
                    ("inventory", "fa_only_a", json!(["x", "y"])),
                    ("tags", "fa_tag", json!("1")),
                    ("system", "group", json!("fa-grp")),
                ],
            ),
            ("B", vec![("inventory", "fa_mem", json!(2))]),
            ("C", vec![("inventory", "fa_type", json!("u"))]),
            ("P", vec![("tags", "name", json!("fa-p"))]),
        ])
        .await?;

    let (status, list) = fleet
        .admin
        .request_json(Method::GET, ATTRIBUTES, None)
        .await?;
    assert_eq!(status, StatusCode::OK, "{list}");
    let entries: Vec<(String, String, u64)> = list
        .as_array()
        .with_context(|| format!("not an array: {list}"))?
        .iter()
        .map(|e| {
            (
                e["scope"].as_str().unwrap_or("?").to_owned(),
                e["name"].as_str().unwrap_or("?").to_owned(),
                e["count"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    let of_scope = |scope: &str| -> Vec<(String, u64)> {
        entries
            .iter()
            .filter(|(s, _, _)| s == scope)
            .map(|(_, n, c)| (n.clone(), *c))
            .collect()
    };
    let own = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    };
    // Every inventory name, counted over devices, count desc then name asc.
    assert_eq!(
        of_scope("inventory"),
        own(&[("fa_type", 3), ("fa_mem", 2), ("fa_only_a", 1)]),
        "{list}"
    );
    assert_eq!(
        of_scope("identity"),
        own(&[("mac", 4), ("status", 4)]),
        "{list}"
    );
    assert_eq!(
        of_scope("tags"),
        own(&[("name", 2), ("fa_tag", 1)]),
        "{list}"
    );
    let group = entries
        .iter()
        .find(|(s, n, _)| s == "system" && n == "group")
        .map(|(_, _, c)| *c);
    assert_eq!(group, Some(1), "system/group: {list}");
    // The whole list: count desc, then scope asc, then name asc; each (scope, name) once.
    let mut sorted = entries.clone();
    sorted.sort_by(|x, y| y.2.cmp(&x.2).then(x.0.cmp(&y.0)).then(x.1.cmp(&y.1)));
    assert_eq!(entries, sorted, "order of {list}");
    let unique: BTreeSet<(String, String)> = entries
        .iter()
        .map(|(s, n, _)| (s.clone(), n.clone()))
        .collect();
    assert_eq!(unique.len(), entries.len(), "duplicates in {list}");
    for (scope, name, count) in &entries {
        assert!(
            ["identity", "inventory", "system", "tags", "monitor"].contains(&scope.as_str()),
            "scope of {name}: {list}"
        );
        assert!(
            (1..=4).contains(count),
            "count of {scope}/{name} is not 1..=4 devices: {list}"
        );
    }
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_search_matches_prefixes() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    let (_, a) = fleet
        .accepted(
            "A",
            "0a:11:22:00:00:01",
            json!([{"name": "device_type", "value": "id-x"}]),
        )
        .await?;
    let (_, b) = fleet
        .accepted(
            "B",
            "0a:11:22:00:00:02",
            json!([{"name": "device_type", "value": "id-x"}]),
        )
        .await?;
    let (c, _) = fleet.pending("C", "0b:33:00:00:00:03").await?;
    fleet.in_inventory(&a, "accepted").await?;
    fleet.in_inventory(&b, "accepted").await?;
    fleet.in_inventory(&c, "pending").await?;
    fleet
        .tags(&a, json!([{"name": "name", "value": "kiosk-lobby"}]))
        .await?;
    fleet
        .tags(&b, json!([{"name": "name", "value": "kiosk-hall"}]))
        .await?;
    fleet
        .tags(&c, json!([{"name": "name", "value": "printer-2"}, {"name": "owner", "value": "kiosk-team"}]))
        .await?;
    fleet
        .settle(&[
            ("A", vec![("tags", "name", json!("kiosk-lobby"))]),
            ("B", vec![("tags", "name", json!("kiosk-hall"))]),
            ("C", vec![("tags", "name", json!("printer-2"))]),
        ])
        .await?;

    let by = |scope: &str, name: &str, prefix: &str| json!({"scope": scope, "name": name, "value_prefix": prefix});
    let mut ck = Checks::new(&fleet);
    ck.set_at(
        IDENTITIES,
        "mac 0a:11:",
        by("identity", "mac", "0a:11:"),
        &["A", "B"],
    )
    .await?;
    ck.set_at(IDENTITIES, "mac 0b", by("identity", "mac", "0b"), &["C"])
        .await?;
    ck.set_at(
        IDENTITIES,
        "whole mac",
        by("identity", "mac", "0a:11:22:00:00:02"),
        &["B"],
    )
    .await?;
    ck.set_at(
        IDENTITIES,
        "mac no match",
        by("identity", "mac", "ff:"),
        &[],
    )
    .await?;
    ck.set_at(
        IDENTITIES,
        "status pending",
        by("identity", "status", "pend"),
        &["C"],
    )
    .await?;
    ck.set_at(
        IDENTITIES,
        "tag name kiosk-",
        by("tags", "name", "kiosk-"),
        &["A", "B"],
    )
    .await?;
    ck.set_at(
        IDENTITIES,
        "tag name kiosk-l",
        by("tags", "name", "kiosk-l"),
        &["A"],
    )
    .await?;
    ck.set_at(
        IDENTITIES,
        "tag name print",
        by("tags", "name", "print"),
        &["C"],
    )
    .await?;
    ck.set_at(
        IDENTITIES,
        "tag name is a prefix, not a word",
        by("tags", "name", "lobby"),
        &[],
    )
    .await?;
    // The device id, with scope identity and name id.
    let prefix: String = b.chars().take(8).collect();
    let with_prefix: Vec<&str> = fleet
        .names
        .0
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        .map(|(_, n)| n.as_str())
        .collect();
    ck.set_at(
        IDENTITIES,
        "device id prefix",
        by("identity", "id", &prefix),
        &with_prefix,
    )
    .await?;
    ck.set_at(
        IDENTITIES,
        "whole device id",
        by("identity", "id", &b),
        &["B"],
    )
    .await?;
    // Paging and projection.
    let mut seen = BTreeSet::new();
    for page in [1, 2] {
        let found = post(
            &fleet.admin,
            IDENTITIES,
            json!({"scope": "identity", "name": "mac", "value_prefix": "0a:11:", "page": page, "per_page": 1}),
        )
        .await?;
        let got = fleet.names.list(&found);
        ck.check(
            found.status == StatusCode::OK && got.len() == 1 && found.total == Some(2),
            || format!("identities page {page}: expected 1 device and X-Total-Count 2, got {} {got:?} ({:?}) {}", found.status, found.total, found.raw),
        );
        seen.extend(got);
    }
    ck.check(seen == names_set(&["A", "B"]), || {
        format!("identities pages: expected A and B, got {seen:?}")
    });
    let found = ck
        .set_at(
            IDENTITIES,
            "projection",
            json!({"scope": "tags", "name": "name", "value_prefix": "kiosk-l",
                   "attributes": [{"scope": "identity", "attribute": "mac"}]}),
            &["A"],
        )
        .await?;
    let a_dev = found.device(&a).cloned().unwrap_or_default();
    let mut got = pairs(&a_dev);
    got.remove(&("system".to_owned(), "updated_ts".to_owned()));
    ck.check(got == pair_set(&[("identity", "mac")]), || {
        format!("identities projection to identity/mac: got {a_dev}")
    });
    // Only identity and tags are searchable scopes.
    ck.status(
        IDENTITIES,
        "scope inventory",
        by("inventory", "device_type", "id-"),
        StatusCode::BAD_REQUEST,
    )
    .await?;
    ck.status(
        IDENTITIES,
        "no value_prefix",
        json!({"scope": "identity", "name": "mac"}),
        StatusCode::BAD_REQUEST,
    )
    .await?;
    ck.status(
        IDENTITIES,
        "no name",
        json!({"scope": "identity", "value_prefix": "0a"}),
        StatusCode::BAD_REQUEST,
    )
    .await?;
    ck.finish()?;
    stack.stop().await;
    Ok(())
}

/// `defaultAttributes` of the GUI (`devicesSlice/thunks.ts`) plus its default id attribute
/// (`getIdAttribute`: `{attribute: "id", scope: "identity"}`), as every device list sends them.
fn gui_attributes() -> Value {
    json!([
        {"scope": "identity", "attribute": "status"},
        {"scope": "inventory", "attribute": "artifact_name"},
        {"scope": "inventory", "attribute": "device_type"},
        {"scope": "inventory", "attribute": "rootfs-image.version"},
        {"scope": "monitor", "attribute": "alerts"},
        {"scope": "system", "attribute": "created_ts"},
        {"scope": "system", "attribute": "updated_ts"},
        {"scope": "system", "attribute": "check_in_time"},
        {"scope": "system", "attribute": "group"},
        {"scope": "tags", "attribute": "name"},
        {"attribute": "id", "scope": "identity"}
    ])
}

/// The GUI's calls, in order, with what each answered; a failure list instead of stopping at
/// the first.
struct Gui {
    mgmt: Mgmt,
    log: Vec<String>,
    failures: Vec<String>,
}

impl Gui {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Value)> {
        let (status, headers, bytes) = self.mgmt.request(method.clone(), path, body).await?;
        self.log.push(format!("{method} {path} -> {status}"));
        Ok((status, headers, json_of(&bytes)))
    }

    /// A call that must answer 2xx.
    async fn ok(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Value)> {
        let (status, headers, json) = self.call(method.clone(), path, body).await?;
        if !status.is_success() {
            self.failures
                .push(format!("{method} {path}: {status} {json}"));
        }
        Ok((status, headers, json))
    }

    fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    /// `getDevicesByStatus`: the search, then `getDevicesWithAuth` for the ids it returned.
    async fn devices_by_status(
        &mut self,
        names: &Names,
        label: &str,
        body: Value,
    ) -> anyhow::Result<(Vec<String>, Option<u64>)> {
        let (status, headers, found) = self.ok(Method::POST, SEARCH, Some(body)).await?;
        let devices = found.as_array().cloned().unwrap_or_default();
        let ids: Vec<String> = devices
            .iter()
            .map(|d| d["id"].as_str().unwrap_or("?").to_owned())
            .collect();
        if status.is_success() && !ids.is_empty() {
            let path = format!("/api/management/v2/devauth/devices?id={}", ids.join("&id="));
            let (status, _, auth) = self.ok(Method::GET, &path, None).await?;
            let auth_ids: BTreeSet<String> = auth
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| d["id"].as_str().unwrap_or("?").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let want: BTreeSet<String> = ids.iter().cloned().collect();
            self.check(!status.is_success() || auth_ids == want, || {
                format!(
                    "{label}: devauth by ids answered {:?} for {:?}",
                    auth_ids.iter().map(|i| names.of(i)).collect::<Vec<_>>(),
                    want.iter().map(|i| names.of(i)).collect::<Vec<_>>()
                )
            });
        }
        Ok((ids.iter().map(|id| names.of(id)).collect(), total(&headers)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gui_first_load_after_login() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut fleet = Fleet::new(&stack).await?;
    let gui_inventory = json!([
        {"name": "device_type", "value": "gui-board"},
        {"name": "artifact_name", "value": "gui-release-1"},
        {"name": "rootfs-image.version", "value": "gui-release-1"}
    ]);
    let (_, a) = fleet
        .accepted("A", "02:4e:09:00:00:01", gui_inventory.clone())
        .await?;
    let (_, b) = fleet
        .accepted("B", "02:4e:09:00:00:02", gui_inventory.clone())
        .await?;
    let (_, c) = fleet
        .accepted("C", "02:4e:09:00:00:03", gui_inventory)
        .await?;
    let (p, _) = fleet.pending("P", "02:4e:09:00:00:04").await?;
    let q = fleet.preauthorized("Q", "02:4e:09:00:00:05").await?;
    let r = fleet.rejected("R", "02:4e:09:00:00:06").await?;
    for id in [&a, &b, &c] {
        fleet.in_inventory(id, "accepted").await?;
    }
    fleet.in_inventory(&p, "pending").await?;
    fleet.in_inventory(&q, "preauthorized").await?;
    fleet.in_inventory(&r, "rejected").await?;
    fleet.group(&a, "gui-a").await?;
    fleet.group(&b, "gui-b").await?;
    // Not part of the GUI's sequence: give the index its time, but if it never catches up go
    // on, so the run lists every call that fails.
    let mut failures = Vec::new();
    let settled = fleet
        .settle(&[
            (
                "A",
                vec![
                    ("identity", "status", json!("accepted")),
                    ("system", "group", json!("gui-a")),
                ],
            ),
            (
                "B",
                vec![
                    ("identity", "status", json!("accepted")),
                    ("system", "group", json!("gui-b")),
                ],
            ),
            ("C", vec![("identity", "status", json!("accepted"))]),
            ("P", vec![("identity", "status", json!("pending"))]),
            ("Q", vec![("identity", "status", json!("preauthorized"))]),
            ("R", vec![("identity", "status", json!("rejected"))]),
        ])
        .await;
    if let Err(e) = settled {
        failures.push(format!("before login: {e:#}"));
    }
    let names = fleet.names.clone();

    // 1. Login as the GUI does it: Basic auth and a JSON body; the reply is the raw JWT with
    // Content-Type application/jwt exactly (the GUI compares it with `!==`).
    let http = https_client(&stack.ca_cert())?;
    let login = http
        .post(format!(
            "{}/api/management/v1/useradm/auth/login",
            stack.url()
        ))
        .basic_auth(ADMIN_EMAIL, Some(ADMIN_PASSWORD))
        .header("content-type", "application/json")
        .body(json!({"no_expiry": false}).to_string())
        .send()
        .await?;
    let login_status = login.status();
    let content_type = login
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let token = login.text().await?;
    assert_eq!(login_status, StatusCode::OK, "login: {token}");
    let mut gui = Gui {
        mgmt: Mgmt::with_token(stack.url(), &stack.ca_cert(), &token)?,
        log: vec![format!(
            "POST /api/management/v1/useradm/auth/login -> {login_status} ({content_type})"
        )],
        failures,
    };
    gui.check(content_type == "application/jwt", || {
        format!("login: Content-Type {content_type:?}, the GUI needs \"application/jwt\"")
    });
    let (_, _, me) = gui
        .ok(Method::GET, "/api/management/v1/useradm/users/me", None)
        .await?;
    gui.check(me["email"] == ADMIN_EMAIL, || format!("users/me: {me}"));

    // 2. Header: the enterprise probe must be 404 (open-source mode; 401 would log out). GUI.md
    // names the v1 path, @northern.tech/store 0.46 `getUserOrganization` the v2 one.
    for probe in [
        "/api/management/v1/tenantadm/user/tenant?tiers=true",
        "/api/management/v2/tenantadm/tenants/me?tiers=true",
    ] {
        let (status, _, body) = gui.call(Method::GET, probe, None).await?;
        gui.check(status == StatusCode::NOT_FOUND, || {
            format!("GET {probe}: {status} {body} (must be 404)")
        });
    }
    let (_, _, first_stats) = gui.ok(Method::GET, STATISTICS, None).await?;

    // 3. Settings.
    gui.ok(Method::GET, "/api/management/v1/useradm/settings/me", None)
        .await?;
    gui.ok(Method::GET, "/api/management/v1/useradm/settings", None)
        .await?;

    // 4. `retrieveAppData`, in its order.
    let (_, _, attributes) = gui.ok(Method::GET, ATTRIBUTES, None).await?;
    let identity_names: Vec<&str> = attributes
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["scope"] == "identity")
                .filter_map(|e| e["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    gui.check(identity_names.contains(&"mac"), || {
        format!("filters/attributes lacks identity/mac: {attributes}")
    });
    for status in ["finished", "inprogress"] {
        gui.ok(
            Method::GET,
            &format!("/api/management/v2/deployments/deployments?status={status}&per_page=20&page=1&sort=desc"),
            None,
        )
        .await?;
    }
    for (status, want) in [
        ("accepted", vec!["A", "B", "C"]),
        ("pending", vec!["P"]),
        ("preauthorized", vec!["Q"]),
        ("rejected", vec!["R"]),
    ] {
        let body = json!({
            "page": 1,
            "per_page": 20,
            "filters": [{"scope": "identity", "attribute": "status", "type": "$eq", "value": status}],
            "sort": [],
            "attributes": gui_attributes()
        });
        let (got, total) = gui.devices_by_status(&names, status, body).await?;
        let got_set: BTreeSet<String> = got.iter().cloned().collect();
        gui.check(
            got_set == names_set(&want) && got.len() == want.len() && total == Some(want.len() as u64),
            || format!("{status} devices: expected {want:?} (X-Total-Count {}), got {got:?} (X-Total-Count {total:?})", want.len()),
        );
    }
    // `getDynamicGroups` (enterprise filters): may fail, never 401.
    let (status, _, _) = gui
        .call(
            Method::GET,
            "/api/management/v2/inventory/filters?per_page=500",
            None,
        )
        .await?;
    gui.check(status != StatusCode::UNAUTHORIZED, || {
        "GET /api/management/v2/inventory/filters?per_page=500: 401 logs the GUI out".to_owned()
    });
    // `getGroups`, then its search for devices in no group (`$nin` of every group name, one
    // device per page; X-Total-Count is what the GUI reads).
    let (_, _, groups) = gui.ok(Method::GET, GROUPS, None).await?;
    let group_names: BTreeSet<String> = groups
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    gui.check(group_names == names_set(&["gui-a", "gui-b"]), || {
        format!("groups: {groups}")
    });
    let ungrouped = json!({
        "page": 1,
        "per_page": 1,
        "filters": [{"scope": "system", "attribute": "group", "type": "$nin", "value": groups}],
        "sort": [],
        "attributes": gui_attributes()
    });
    let (got, total) = gui
        .devices_by_status(&names, "ungrouped", ungrouped)
        .await?;
    gui.check(
        got.len() == 1
            && names_set(&["C", "P", "Q", "R"]).contains(&got[0])
            && total == Some(4),
        || format!("ungrouped: expected one of C, P, Q, R and X-Total-Count 4, got {got:?} (X-Total-Count {total:?})"),
    );
    let (status, _, body) = gui
        .call(
            Method::GET,
            "/api/management/v1/iot-manager/integrations",
            None,
        )
        .await?;
    gui.check(status != StatusCode::UNAUTHORIZED, || {
        format!("iot-manager integrations: 401 logs the GUI out ({body})")
    });
    gui.ok(
        Method::GET,
        "/api/management/v2/deployments/deployments/releases?page=1&per_page=20&sort=modified:desc",
        None,
    )
    .await?;
    let (_, _, last_stats) = gui.ok(Method::GET, STATISTICS, None).await?;
    for got in [&first_stats, &last_stats] {
        gui.check(got == &stats(3, 1), || {
            format!("statistics: expected {}, got {got}", stats(3, 1))
        });
    }

    // 5. Settings written back (`saveUserSettings`, then `saveGlobalSettings` of the id
    // attribute the GUI picks from the identity attributes): GET, then POST with If-Match.
    let (_, headers, mut settings) = gui
        .ok(Method::GET, "/api/management/v1/useradm/settings/me", None)
        .await?;
    if !settings.is_object() {
        settings = json!({});
    }
    settings["firstLoginTimestamp"] = json!(chrono::Utc::now().to_rfc3339());
    settings["onboarding"] = json!({"complete": false, "showTips": true});
    settings["tooltips"] = json!({});
    post_settings(
        &mut gui,
        "/api/management/v1/useradm/settings/me",
        &headers,
        settings,
    )
    .await?;
    let (_, headers, mut global) = gui
        .ok(Method::GET, "/api/management/v1/useradm/settings", None)
        .await?;
    if !global.is_object() {
        global = json!({});
    }
    global["id_attribute"] = json!({"attribute": "mac", "scope": "identity"});
    post_settings(
        &mut gui,
        "/api/management/v1/useradm/settings",
        &headers,
        global,
    )
    .await?;

    let log = gui.log.join("\n  ");
    assert!(
        gui.failures.is_empty(),
        "{} problems:\n  {}\ncalls:\n  {log}",
        gui.failures.len(),
        gui.failures.join("\n  ")
    );
    println!("calls:\n  {log}");
    stack.stop().await;
    Ok(())
}

/// POST of settings as the GUI sends it: with `If-Match` when the GET had an ETag.
async fn post_settings(
    gui: &mut Gui,
    path: &str,
    headers: &HeaderMap,
    body: Value,
) -> anyhow::Result<()> {
    let mut req = gui
        .mgmt
        .http()
        .post(format!("{}{path}", gui.mgmt.base_url()))
        .bearer_auth(gui.mgmt.token())
        .json(&body);
    if let Some(etag) = headers.get("etag") {
        req = req.header("if-match", etag.clone());
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    gui.log.push(format!("POST {path} -> {status}"));
    if !status.is_success() {
        gui.failures.push(format!("POST {path}: {status} {text}"));
    }
    Ok(())
}
