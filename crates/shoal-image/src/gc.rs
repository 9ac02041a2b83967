//! Garbage collection: unpacked layers and blobs no image references are deleted. Runs at open
//! (after a crash), after a failed load, and after an image is deleted, always holding the
//! store's GC lock exclusively so no load or save is using what it deletes.

use std::fs;

use crate::error::{Error, Result};
use crate::fsutil::{self, TmpDir};
use crate::store::ImageStore;

impl ImageStore {
    pub(crate) fn collect_garbage(&self) -> Result<()> {
        let _exclusive = self.gc_exclusive();
        self.collect_garbage_locked()
    }

    /// The caller holds the GC lock exclusively.
    pub(crate) fn collect_garbage_locked(&self) -> Result<()> {
        let (layers, blobs) = {
            let index = self.index();
            (index.referenced_layers(), index.referenced_blobs())
        };
        let entries = fs::read_dir(&self.layers)
            .map_err(Error::with_io(format!("listing {}", self.layers.display())))?;
        let mut trash: Option<TmpDir> = None;
        for entry in entries {
            let entry =
                entry.map_err(Error::with_io(format!("listing {}", self.layers.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if layers.contains(&format!("sha256:{name}")) {
                continue;
            }
            // Move it out of layers/ first, so a crash never leaves a half-deleted layer there.
            let trash = match &mut trash {
                Some(trash) => trash,
                None => trash.insert(TmpDir::new(&self.tmp, "gc")?),
            };
            let target = trash.path().join(&name);
            fs::rename(entry.path(), &target)
                .map_err(Error::with_io(format!("removing layer {name}")))?;
            tracing::debug!(layer = %name, "removing unreferenced layer");
        }
        drop(trash);
        for digest in self.blobs.list()? {
            if !blobs.contains(&digest) {
                tracing::debug!(blob = %digest, "removing unreferenced blob");
                self.blobs.remove(&digest)?;
            }
        }
        let stale = {
            let index = self.index();
            index.layers.keys().any(|diff_id| !layers.contains(diff_id))
        };
        if stale {
            self.update(|index| {
                let referenced = index.referenced_layers();
                index
                    .layers
                    .retain(|diff_id, _| referenced.contains(diff_id));
                Ok(())
            })?;
        }
        let _ = fsutil::sync_parent(&self.layers.join("x"));
        Ok(())
    }
}
