//! `ImageStore::remove`: docker's `rmi` semantics.
//!
//! - By name: untag it; if it was the image's last name, delete the image. If it is the last name
//!   and a container uses the image, refuse unless forced; forced, the name goes and the image
//!   stays (untagged), because its layers are the container's lower directories.
//! - By id (or prefix, or `name@digest`): delete the image and all its names. Refused if the
//!   names span several repositories, unless forced. Refused, even when forced, if a container
//!   uses the image: docker would delete the image of a stopped container, but here the layers
//!   are the container's lower directories, so deleting them would break it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::Index;
use crate::reference;
use crate::resolve::{resolve, short_id, Via};
use crate::store::ImageStore;

/// What a removal did, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Removed {
    /// A name (canonical form) was removed.
    Untagged(String),
    /// The image with this id was deleted.
    Deleted(String),
}

impl ImageStore {
    /// Removes the name or image `reference` names (see the module docs for the rules).
    /// `in_use(image_id)` returns the id of a container using that image, if any.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Conflict`] (docker's `conflict: unable to …` messages, with the
    /// container id `in_use` gave), or a failure to write the index.
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        in_use: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<Removed>> {
        let _exclusive = self.gc_exclusive();
        let removed = self.update(|index| remove_in(index, reference, force, in_use))?;
        if removed.iter().any(|r| matches!(r, Removed::Deleted(_))) {
            // The image is gone from the index; unreferenced files are only disk space now.
            if let Err(err) = self.collect_garbage_locked() {
                tracing::warn!(error = %err, "cannot remove the files of a deleted image; they go at the next start");
            }
        }
        for entry in &removed {
            tracing::info!(?entry, "image removal");
        }
        Ok(removed)
    }
}

fn remove_in(
    index: &mut Index,
    reference: &str,
    force: bool,
    in_use: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Removed>> {
    let resolved = resolve(index, reference)?;
    let id = resolved.id;
    let names = index.names_of(&id);
    let mut removed = Vec::new();
    match resolved.via {
        Via::Name(name) => {
            let last = names.len() <= 1;
            let user = if last { in_use(&id) } else { None };
            if let (Some(container), false) = (&user, force) {
                return Err(Error::Conflict(format!(
                    "conflict: unable to remove repository reference {reference:?} (must force) - container {} is using its referenced image {}",
                    short_id(container),
                    short_id(&id)
                )));
            }
            index.tags.remove(&name);
            removed.push(Removed::Untagged(name));
            if last && user.is_none() {
                index.images.remove(&id);
                removed.push(Removed::Deleted(id));
            }
        }
        Via::Id | Via::Digest => {
            if let Some(container) = in_use(&id) {
                let how = if force {
                    "cannot be forced"
                } else {
                    "must be forced"
                };
                return Err(Error::Conflict(format!(
                    "conflict: unable to delete {} ({how}) - image is being used by container {}",
                    short_id(&id),
                    short_id(&container)
                )));
            }
            let repositories: BTreeSet<String> = names
                .iter()
                .filter_map(|n| reference::parse(n).ok())
                .map(|n| n.repository())
                .collect();
            if repositories.len() > 1 && !force {
                return Err(Error::Conflict(format!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    short_id(&id)
                )));
            }
            for name in names {
                index.tags.remove(&name);
                removed.push(Removed::Untagged(name));
            }
            index.images.remove(&id);
            removed.push(Removed::Deleted(id));
        }
    }
    Ok(removed)
}
