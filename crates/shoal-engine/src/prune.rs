//! Reclaiming space: container and image prune, and `system df`'s accounting.

use std::collections::HashSet;
use std::path::Path;

use shoal_api::ContainerStatus;

use crate::error::Result;
use crate::lifecycle::is_running;
use crate::rootfs::RootfsDirs;
use crate::Engine;

/// What `system df` reports for one kind of object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DfRow {
    pub kind: &'static str,
    pub total: u64,
    pub active: u64,
    pub size: u64,
    pub reclaimable: u64,
}

/// Bytes used by the files under `path` (not following symlinks).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// docker prune filters: `label=k`, `label=k=v`, `label!=...`, `until=<RFC 3339>`.
pub fn matches_filters(
    labels: &std::collections::HashMap<String, String>,
    created: &str,
    filters: &[(String, String)],
) -> bool {
    filters.iter().all(|(k, v)| {
        let label_match = || match v.split_once('=') {
            Some((lk, lv)) => labels.get(lk).is_some_and(|x| x == lv),
            None => labels.contains_key(v.as_str()),
        };
        match k.as_str() {
            "label" => label_match(),
            "label!" => !label_match(),
            "until" => before(created, v),
            _ => true,
        }
    })
}

/// `created` is before `until`, both RFC 3339 (compared as times: precisions and offsets
/// may differ); a time that does not parse is compared as text.
fn before(created: &str, until: &str) -> bool {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (parse(created), parse(until)) {
        (Some(c), Some(u)) => c < u,
        _ => created < until,
    }
}

impl Engine {
    /// Remove every container that is not running; ids and bytes reclaimed.
    pub async fn prune_containers(
        &self,
        filters: &[(String, String)],
    ) -> Result<(Vec<String>, u64)> {
        let candidates: Vec<_> = {
            let reg = self.inner.registry.lock().expect("registry lock");
            reg.by_id.values().map(|e| e.snapshot()).collect()
        };
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for c in candidates {
            let labels = c
                .config
                .as_ref()
                .map(|c| c.labels.clone())
                .unwrap_or_default();
            if is_running(c.status())
                || c.status() == ContainerStatus::Removing
                || !matches_filters(&labels, &c.created, filters)
            {
                continue;
            }
            let size = dir_size(&RootfsDirs::new(&self.inner.cfg.container_dir(&c.id)).upper);
            if self.remove(&c.id, false, false).await.is_ok() {
                deleted.push(c.id);
                reclaimed += size;
            }
        }
        Ok((deleted, reclaimed))
    }

    /// Remove dangling images (no name), or with `all` every image no container uses.
    pub async fn prune_images(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let used: HashSet<String> = {
            let reg = self.inner.registry.lock().expect("registry lock");
            reg.by_id.values().map(|e| e.snapshot().image_id).collect()
        };
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for img in self.images().await? {
            if used.contains(&img.id) || (!all && !img.names.is_empty()) {
                continue;
            }
            if let Ok(removed) = self.remove_image(&img.id, all).await {
                for r in removed {
                    if let shoal_image::Removed::Deleted(id) = r {
                        deleted.push(id);
                        reclaimed += img.size;
                    }
                }
            }
        }
        Ok((deleted, reclaimed))
    }

    /// Images, containers and volumes: how many, how many in use, how big, how much could go.
    pub async fn df(&self) -> Result<Vec<DfRow>> {
        let containers: Vec<_> = {
            let reg = self.inner.registry.lock().expect("registry lock");
            reg.by_id.values().map(|e| e.snapshot()).collect()
        };
        let used_images: HashSet<&str> = containers.iter().map(|c| c.image_id.as_str()).collect();
        let mut images = DfRow {
            kind: "Images",
            ..Default::default()
        };
        for img in self.images().await? {
            images.total += 1;
            images.size += img.size;
            if used_images.contains(img.id.as_str()) {
                images.active += 1;
            } else {
                images.reclaimable += img.size;
            }
        }
        let mut cont = DfRow {
            kind: "Containers",
            ..Default::default()
        };
        for c in &containers {
            let size = dir_size(&RootfsDirs::new(&self.inner.cfg.container_dir(&c.id)).upper);
            cont.total += 1;
            cont.size += size;
            if is_running(c.status()) {
                cont.active += 1;
            } else {
                cont.reclaimable += size;
            }
        }
        let mut vols = DfRow {
            kind: "Local Volumes",
            ..Default::default()
        };
        for v in self.volumes()? {
            vols.total += 1;
            vols.size += v.size;
            if v.used_by.is_empty() {
                vols.reclaimable += v.size;
            } else {
                vols.active += 1;
            }
        }
        Ok(vec![images, cont, vols])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_filters() {
        let labels = [("tier".to_string(), "web".to_string())].into();
        let f = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(matches_filters(
            &labels,
            "2026-01-01T00:00:00Z",
            &f("label", "tier")
        ));
        assert!(matches_filters(
            &labels,
            "2026-01-01T00:00:00Z",
            &f("label", "tier=web")
        ));
        assert!(!matches_filters(
            &labels,
            "2026-01-01T00:00:00Z",
            &f("label", "tier=db")
        ));
        assert!(!matches_filters(
            &labels,
            "2026-01-01T00:00:00Z",
            &f("label!", "tier")
        ));
        assert!(matches_filters(
            &labels,
            "2026-01-01T00:00:00Z",
            &f("until", "2026-06-01T00:00:00Z")
        ));
        assert!(!matches_filters(
            &labels,
            "2026-07-01T00:00:00Z",
            &f("until", "2026-06-01T00:00:00Z")
        ));
        // Times, not text: half a second after `until` is not before it, whatever the
        // precision or offset of either.
        assert!(!matches_filters(
            &labels,
            "2026-06-01T00:00:00.5Z",
            &f("until", "2026-06-01T00:00:00Z")
        ));
        assert!(matches_filters(
            &labels,
            "2026-06-01T00:00:00.5Z",
            &f("until", "2026-06-01T02:00:01+02:00")
        ));
    }
}
