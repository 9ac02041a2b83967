//! Image operations, run on the blocking pool (the image store does file I/O), with the
//! engine's knowledge of which containers use which image.

use std::io::Read;
use std::path::PathBuf;

use shoal_image::{Image, LoadedImage, Removed};

use crate::error::{Error, Result};
use crate::Engine;

impl Engine {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&shoal_image::ImageStore) -> std::result::Result<T, shoal_image::Error>
            + Send
            + 'static,
    ) -> Result<T> {
        let store = self.inner.images.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Internal(format!("image task failed: {e}")))?
            .map_err(image_error)
    }

    pub async fn image(&self, reference: &str) -> Result<Image> {
        let r = reference.to_string();
        self.blocking(move |s| s.get(&r)).await
    }

    pub async fn images(&self) -> Result<Vec<Image>> {
        self.blocking(|s| s.list()).await
    }

    pub(crate) async fn layer_dirs(&self, image: Image) -> Result<Vec<PathBuf>> {
        self.blocking(move |s| s.layer_dirs(&image)).await
    }

    /// The daemon's registry settings, with `credentials` for `reference`'s registry.
    fn registry_options(
        &self,
        reference: &str,
        credentials: Option<(String, String)>,
    ) -> Result<shoal_image::RegistryOptions> {
        let mut opts = self.inner.cfg.registries.clone();
        if let Some(c) = credentials {
            let domain = shoal_image::reference::parse(reference)
                .map_err(image_error)?
                .domain;
            opts.credentials.insert(domain, c);
        }
        Ok(opts)
    }

    /// Pull `reference` from its registry, with `credentials` (user, password) if given;
    /// `progress` hears how each blob's download goes.
    pub async fn pull_image(
        &self,
        reference: &str,
        credentials: Option<(String, String)>,
        progress: impl Fn(shoal_image::PullProgress) + Send + Sync + 'static,
    ) -> Result<LoadedImage> {
        let opts = self.registry_options(reference, credentials)?;
        let r = reference.to_string();
        self.blocking(move |s| s.pull_with_progress(&r, &opts, &progress))
            .await
    }

    /// Pull `reference` from `source` (a swarm's content store) into the local store.
    pub async fn pull_from(
        &self,
        source: std::sync::Arc<dyn shoal_image::Source + Send>,
        reference: &str,
        progress: impl Fn(shoal_image::PullProgress) + Send + Sync + 'static,
    ) -> Result<LoadedImage> {
        let r = reference.to_string();
        self.blocking(move |s| s.pull_from(&*source, &r, &progress))
            .await
    }

    /// The blobs of the local image `reference`, manifest first.
    pub async fn image_content(&self, reference: &str) -> Result<shoal_image::ImageContent> {
        let r = reference.to_string();
        self.blocking(move |s| s.content(&r)).await
    }

    /// A local blob's file, to send it somewhere.
    pub async fn open_blob(&self, digest: &str) -> Result<std::fs::File> {
        let d = digest.to_string();
        self.blocking(move |s| s.open_blob(&d)).await
    }

    /// What `reference` names on its registry: (image id, reference pinned to the manifest's
    /// digest).
    pub async fn resolve_remote(
        &self,
        reference: &str,
        credentials: Option<(String, String)>,
    ) -> Result<(String, String)> {
        let opts = self.registry_options(reference, credentials)?;
        let r = reference.to_string();
        tokio::task::spawn_blocking(move || shoal_image::resolve(&r, &opts))
            .await
            .map_err(|e| Error::Internal(format!("resolve task failed: {e}")))?
            .map_err(image_error)
    }

    /// Push the image named `reference` to its registry.
    pub async fn push_image(
        &self,
        reference: &str,
        credentials: Option<(String, String)>,
        progress: impl Fn(shoal_image::PushProgress) + Send + Sync + 'static,
    ) -> Result<shoal_image::Pushed> {
        let opts = self.registry_options(reference, credentials)?;
        let r = reference.to_string();
        self.blocking(move |s| s.push(&r, &opts, &progress)).await
    }

    /// Check `username`/`password` against the registry `server` (`host[:port]`).
    pub async fn registry_login(&self, server: &str, username: &str, password: &str) -> Result<()> {
        let mut opts = self.inner.cfg.registries.clone();
        opts.credentials.insert(
            server.to_string(),
            (username.to_string(), password.to_string()),
        );
        let server = server.to_string();
        tokio::task::spawn_blocking(move || {
            shoal_image::Registry::new(&server, &opts).and_then(|r| r.login())
        })
        .await
        .map_err(|e| Error::Internal(format!("login task failed: {e}")))?
        .map_err(image_error)
    }

    /// Load an archive read from `reader` (runs on the blocking pool).
    pub async fn load_images(
        &self,
        reader: impl Read + Send + 'static,
    ) -> Result<Vec<LoadedImage>> {
        self.blocking(move |s| s.load(reader)).await
    }

    pub async fn save_images(
        &self,
        refs: Vec<String>,
        out: impl std::io::Write + Send + 'static,
    ) -> Result<()> {
        self.blocking(move |s| s.save(&refs, out)).await
    }

    pub async fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        let (s, t) = (source.to_string(), target.to_string());
        self.blocking(move |st| st.tag(&s, &t)).await
    }

    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<Vec<Removed>> {
        let users: Vec<(String, String)> = {
            let reg = self.inner.registry.lock().expect("registry lock");
            reg.by_id
                .values()
                .map(|e| {
                    let c = e.snapshot();
                    (c.image_id, c.id)
                })
                .collect()
        };
        let r = reference.to_string();
        self.blocking(move |s| {
            s.remove(&r, force, &|image_id: &str| {
                users
                    .iter()
                    .find(|(img, _)| img == image_id)
                    .map(|(_, c)| c[..12].to_string())
            })
        })
        .await
    }

    /// Containers using an image, for `image rm` messages.
    pub fn image_users(&self, image_id: &str) -> Vec<String> {
        self.containers_using(image_id)
    }
}

fn image_error(e: shoal_image::Error) -> Error {
    let msg = e.to_string();
    match e {
        shoal_image::Error::NotFound(_) => Error::NotFound(msg),
        shoal_image::Error::Conflict(_) => Error::Conflict(msg),
        _ => Error::Image(e),
    }
}
