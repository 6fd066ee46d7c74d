//! Device lists at fleet scale. A query is answered in one of three ways, chosen by `plan`:
//!
//! * **index**: the filters are only a status, a group, "ungrouped" (`system/group` `$exists
//!   false`, or `$nin` every group there is, as the GUI asks) and the order is creation order
//!   (no sort, or `system/created_ts`): the page comes from the `by-status`/`by-group` indexes
//!   (keys only: `offset + per_page` keys per status partition) and its items by key; the total
//!   from the counters. Cost independent of the fleet size.
//! * **ids**: `device_ids` given (at most [`MAX_DEVICE_IDS`]): those items read by key, then
//!   filtered and ordered in memory.
//! * **scan**: anything else (other filters, other sorts, text): the `search` index read in 16
//!   parallel shards, only the attributes the filters and sort need, each shard keeping its
//!   best `offset + per_page` entries (order key and id only) and a count. Memory is bounded by
//!   the page position, never the fleet; the page's devices are then read by key.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use mender_aws::dynamo::DynamoError;
use serde_json::Value;

use crate::model::{InventoryDevice, IDENTITY, SYSTEM};
use crate::search::{
    compare_keys, project, sort_values, text_keywords, text_score, Op, SearchQuery, SortKey,
    SortValue,
};
use crate::store::{order_key, scan, GroupCounts, Partition, Store, ALL_STATUSES};

/// Most `device_ids` one search may name.
pub const MAX_DEVICE_IDS: usize = 1000;
/// `filters/attributes` looks at this many devices at most (upstream: 5,000).
pub const ATTRIBUTES_SAMPLE: usize = 5000;
/// ... and returns at most this many (name, scope) pairs (upstream: 500).
pub const ATTRIBUTES_LIMIT: usize = 500;

/// One page of a list and the number of devices the whole list has.
#[derive(Debug, Default)]
pub struct Page {
    pub devices: Vec<InventoryDevice>,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum GroupSel {
    Named(String),
    Ungrouped,
}

#[derive(Debug, PartialEq, Eq)]
struct IndexPlan {
    status: Option<String>,
    group: Option<GroupSel>,
    descending: bool,
}

fn is(scope: &str, attribute: &str, want_scope: &str, want_attribute: &str) -> bool {
    scope == want_scope && attribute == want_attribute
}

/// The index plan for `q`, if the indexes can answer it. `groups` (the groups that have
/// devices) is needed only to recognise "`$nin` every group".
fn index_plan(q: &SearchQuery, groups: Option<&GroupCounts>) -> Option<IndexPlan> {
    if q.text.is_some() || !q.device_ids.is_empty() {
        return None;
    }
    let descending = match q.sort.as_slice() {
        [] => false,
        [key] if is(&key.scope, &key.attribute, SYSTEM, "created_ts") => key.descending,
        _ => return None,
    };
    let mut plan = IndexPlan {
        status: None,
        group: None,
        descending,
    };
    for f in &q.filters {
        if is(&f.scope, &f.attribute, IDENTITY, "status") {
            let status = match (&f.op, &f.value) {
                (Op::Eq, Value::String(s)) if ALL_STATUSES.contains(&s.as_str()) => s.clone(),
                _ => return None,
            };
            if plan.status.replace(status).is_some() {
                return None;
            }
        } else if is(&f.scope, &f.attribute, SYSTEM, "group") {
            let group = match (&f.op, &f.value) {
                (Op::Eq, Value::String(g)) => GroupSel::Named(g.clone()),
                (Op::Exists, Value::Bool(false)) => GroupSel::Ungrouped,
                (Op::Nin, Value::Array(listed)) => {
                    let groups = groups?;
                    let every_group = groups.iter().all(|(name, by_status)| {
                        by_status.values().all(|n| *n <= 0)
                            || listed.iter().any(|v| v.as_str() == Some(name))
                    });
                    if !every_group {
                        return None;
                    }
                    GroupSel::Ungrouped
                }
                _ => return None,
            };
            if plan.group.replace(group).is_some() {
                return None;
            }
        } else {
            return None;
        }
    }
    Some(plan)
}

fn needs_groups(q: &SearchQuery) -> bool {
    q.filters
        .iter()
        .any(|f| is(&f.scope, &f.attribute, SYSTEM, "group") && matches!(f.op, Op::Nin))
}

/// Answers `q` for `tenant` (see the module doc for how).
pub async fn search<S: Store>(
    store: &S,
    tenant: &str,
    q: &SearchQuery,
) -> Result<Page, DynamoError> {
    let groups = if needs_groups(q) {
        Some(store.group_counts(tenant).await?)
    } else {
        None
    };
    let page = match index_plan(q, groups.as_ref()) {
        Some(plan) => from_index(store, tenant, q, &plan, groups).await?,
        None => filtered(store, tenant, q).await?,
    };
    Ok(page)
}

fn window(q: &SearchQuery) -> (usize, usize) {
    let per_page = usize::try_from(q.per_page).unwrap_or(usize::MAX);
    let offset =
        usize::try_from(q.page.saturating_sub(1).saturating_mul(q.per_page)).unwrap_or(usize::MAX);
    (offset, per_page)
}

async fn from_index<S: Store>(
    store: &S,
    tenant: &str,
    q: &SearchQuery,
    plan: &IndexPlan,
    groups: Option<GroupCounts>,
) -> Result<Page, DynamoError> {
    let (offset, per_page) = window(q);
    let statuses: Vec<&str> = match &plan.status {
        Some(s) => vec![s.as_str()],
        None => ALL_STATUSES.to_vec(),
    };
    let partitions: Vec<Partition> = statuses
        .iter()
        .map(|s| match &plan.group {
            None => Partition::Status((*s).to_owned()),
            Some(GroupSel::Named(g)) => Partition::Group(g.clone(), (*s).to_owned()),
            Some(GroupSel::Ungrouped) => Partition::Group(String::new(), (*s).to_owned()),
        })
        .collect();
    let need = offset.saturating_add(per_page);
    let reads = partitions
        .iter()
        .map(|p| store.partition_keys(tenant, p, plan.descending, need));
    let mut keys: Vec<(String, String)> = futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .collect();
    keys.sort();
    if plan.descending {
        keys.reverse();
    }
    let ids: Vec<String> = keys
        .into_iter()
        .skip(offset)
        .take(per_page)
        .map(|(_, id)| id)
        .collect();
    let total = index_total(store, tenant, plan, &statuses, groups).await?;
    let devices = read_page(store, tenant, q, &ids).await?;
    Ok(Page { devices, total })
}

/// The size of an index-planned list, from the counters.
async fn index_total<S: Store>(
    store: &S,
    tenant: &str,
    plan: &IndexPlan,
    statuses: &[&str],
    groups: Option<GroupCounts>,
) -> Result<u64, DynamoError> {
    let sum = |by_status: &std::collections::BTreeMap<String, i64>| -> i64 {
        statuses
            .iter()
            .map(|s| by_status.get(*s).copied().unwrap_or(0))
            .sum()
    };
    let total = match &plan.group {
        Some(GroupSel::Named(g)) => sum(&store.group_count(tenant, g).await?),
        None | Some(GroupSel::Ungrouped) => {
            let counts = store.status_counts(tenant).await?;
            let by_status: std::collections::BTreeMap<String, i64> = counts
                .iter()
                .map(|(s, tiers)| (s.clone(), tiers.values().sum()))
                .collect();
            let all = sum(&by_status);
            if plan.group.is_none() {
                all
            } else {
                let groups = match groups {
                    Some(g) => g,
                    None => store.group_counts(tenant).await?,
                };
                all - groups.values().map(sum).sum::<i64>()
            }
        }
    };
    Ok(u64::try_from(total).unwrap_or(0))
}

/// The page's devices read by key, projected as asked.
async fn read_page<S: Store>(
    store: &S,
    tenant: &str,
    q: &SearchQuery,
    ids: &[String],
) -> Result<Vec<InventoryDevice>, DynamoError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let paths: Option<Vec<(String, String)>> = (!q.attributes.is_empty()).then(|| {
        let mut paths: Vec<(String, String)> = q
            .attributes
            .iter()
            .map(|s| (s.scope.clone(), s.attribute.clone()))
            .collect();
        paths.push((SYSTEM.into(), "updated_ts".into()));
        paths
    });
    let devices = store.get_many(tenant, ids, paths.as_deref()).await?;
    Ok(devices
        .into_iter()
        .map(|d| project(d, &q.attributes))
        .collect())
}

/// A device's place in the result order: the sort values (or the text score), then creation
/// order. `descending` is shared by all entries of one query.
#[derive(Debug)]
struct Entry {
    values: Vec<SortValue>,
    score: f64,
    tie: String,
    id: String,
    sort: Arc<[SortKey]>,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_keys(&self.values, &other.values, &self.sort)
            .then_with(|| other.score.total_cmp(&self.score))
            .then_with(|| self.tie.cmp(&other.tie))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

/// What one shard (or the ids path) keeps: how many matched, and the best `keep` entries.
struct TopK {
    total: u64,
    best: BinaryHeap<Entry>,
}

/// The (scope, name) attributes the filters and sort read (`None`: all of them, for text).
fn scan_paths(q: &SearchQuery) -> Option<Vec<(String, String)>> {
    if q.text.is_some() {
        return None;
    }
    let mut paths: Vec<(String, String)> = Vec::new();
    let named = q
        .filters
        .iter()
        .map(|f| (&f.scope, &f.attribute))
        .chain(q.sort.iter().map(|k| (&k.scope, &k.attribute)));
    for (scope, attribute) in named {
        let path = (scope.clone(), attribute.clone());
        if !is(scope, attribute, IDENTITY, "id") && !paths.contains(&path) {
            paths.push(path);
        }
    }
    Some(paths)
}

async fn filtered<S: Store>(store: &S, tenant: &str, q: &SearchQuery) -> Result<Page, DynamoError> {
    let (offset, per_page) = window(q);
    let keep = offset.saturating_add(per_page);
    let keywords = q.text.as_deref().map(text_keywords);
    let sort: Arc<[SortKey]> = q.sort.clone().into();
    let fold = |acc: &mut TopK, device: InventoryDevice| {
        if !q.filters.iter().all(|f| f.matches(&device)) {
            return;
        }
        let score = match &keywords {
            Some(words) => {
                let score = text_score(&device, words);
                if score <= 0.0 {
                    return;
                }
                score
            }
            None => 0.0,
        };
        acc.total += 1;
        let values = if keywords.is_some() {
            Vec::new()
        } else {
            sort_values(&device, &sort)
        };
        let entry = Entry {
            values,
            score,
            tie: order_key(&device),
            id: device.id,
            sort: sort.clone(),
        };
        if acc.best.len() >= keep && acc.best.peek().is_some_and(|worst| entry >= *worst) {
            return;
        }
        acc.best.push(entry);
        if acc.best.len() > keep {
            acc.best.pop();
        }
    };
    let init = || TopK {
        total: 0,
        best: BinaryHeap::new(),
    };
    let paths = scan_paths(q);
    let shards = if q.device_ids.is_empty() {
        scan(store, tenant, paths.as_deref(), None, init, fold).await?
    } else {
        let mut acc = init();
        for device in store
            .get_many(tenant, &q.device_ids, paths.as_deref())
            .await?
        {
            fold(&mut acc, device);
        }
        vec![acc]
    };
    let total = shards.iter().map(|s| s.total).sum();
    let mut best: Vec<Entry> = shards.into_iter().flat_map(|s| s.best).collect();
    best.sort();
    let ids: Vec<String> = best
        .into_iter()
        .skip(offset)
        .take(per_page)
        .map(|e| e.id)
        .collect();
    let devices = read_page(store, tenant, q, &ids).await?;
    Ok(Page { devices, total })
}

/// `GET /filters/attributes`: (name, scope, count) over a sample of the fleet, most common
/// first, then by scope and name.
pub async fn attribute_names<S: Store>(
    store: &S,
    tenant: &str,
) -> Result<Vec<(String, String, u64)>, DynamoError> {
    let per_shard = ATTRIBUTES_SAMPLE / crate::store::SHARDS as usize;
    let shards = scan(
        store,
        tenant,
        None,
        Some(per_shard),
        HashMap::<(String, String), u64>::new,
        |acc, device| {
            for (scope, attrs) in &device.attributes {
                for name in attrs.keys() {
                    *acc.entry((name.clone(), scope.clone())).or_default() += 1;
                }
            }
        },
    )
    .await?;
    let mut counts: HashMap<(String, String), u64> = HashMap::new();
    for shard in shards {
        for (k, n) in shard {
            *counts.entry(k).or_default() += n;
        }
    }
    let mut list: Vec<(String, String, u64)> = counts
        .into_iter()
        .map(|((name, scope), n)| (name, scope, n))
        .collect();
    list.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)).then(a.0.cmp(&b.0)));
    list.truncate(ATTRIBUTES_LIMIT);
    Ok(list)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn query(body: serde_json::Value) -> SearchQuery {
        SearchQuery::parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn gui_lists_use_the_indexes() {
        let accepted = query(serde_json::json!({"filters": [
            {"scope": "identity", "attribute": "status", "type": "$eq", "value": "accepted"}]}));
        assert_eq!(
            index_plan(&accepted, None),
            Some(IndexPlan {
                status: Some("accepted".into()),
                group: None,
                descending: false
            })
        );
        let group = query(serde_json::json!({"filters": [
            {"scope": "system", "attribute": "group", "type": "$eq", "value": "g1"},
            {"scope": "identity", "attribute": "status", "type": "$eq", "value": "accepted"}],
            "sort": [{"scope": "system", "attribute": "created_ts", "order": "desc"}]}));
        let plan = index_plan(&group, None).unwrap();
        assert_eq!(plan.group, Some(GroupSel::Named("g1".into())));
        assert!(plan.descending);

        let ungrouped = query(serde_json::json!({"filters": [
            {"scope": "system", "attribute": "group", "type": "$nin", "value": ["g1", "g2"]}]}));
        let mut groups: GroupCounts = BTreeMap::new();
        groups.insert("g1".into(), BTreeMap::from([("accepted".into(), 3)]));
        groups.insert("g2".into(), BTreeMap::from([("accepted".into(), 1)]));
        assert_eq!(
            index_plan(&ungrouped, Some(&groups)).unwrap().group,
            Some(GroupSel::Ungrouped)
        );
        // A group with devices left out of the list: not "ungrouped", scanned instead.
        groups.insert("g3".into(), BTreeMap::from([("pending".into(), 1)]));
        assert_eq!(index_plan(&ungrouped, Some(&groups)), None);
        // An emptied group does not count.
        groups.insert("g3".into(), BTreeMap::from([("pending".into(), 0)]));
        assert!(index_plan(&ungrouped, Some(&groups)).is_some());
    }

    #[test]
    fn other_queries_scan() {
        for body in [
            serde_json::json!({"filters": [{"scope": "inventory", "attribute": "device_type", "type": "$eq", "value": "x"}]}),
            serde_json::json!({"sort": [{"scope": "inventory", "attribute": "device_type", "order": "asc"}]}),
            serde_json::json!({"text": "rpi"}),
            serde_json::json!({"filters": [{"scope": "identity", "attribute": "status", "type": "$ne", "value": "accepted"}]}),
        ] {
            assert_eq!(index_plan(&query(body), None), None);
        }
        let text = query(serde_json::json!({"text": "rpi"}));
        assert_eq!(scan_paths(&text), None);
        let f = query(serde_json::json!({"filters": [
            {"scope": "identity", "attribute": "id", "type": "$eq", "value": "x"},
            {"scope": "inventory", "attribute": "a", "type": "$eq", "value": "x"}],
            "sort": [{"scope": "inventory", "attribute": "a", "order": "asc"}]}));
        assert_eq!(
            scan_paths(&f),
            Some(vec![("inventory".to_owned(), "a".to_owned())])
        );
    }
}
