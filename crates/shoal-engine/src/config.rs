//! Where the engine keeps things, and which binaries it drives.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Persistent state: images/, containers/.
    pub data_root: PathBuf,
    /// Runtime state: runtime/, shims/, bundles.
    pub exec_root: PathBuf,
    /// cgroup under which every container's cgroup is created (`shoal` → `/shoal/<id>`).
    pub cgroup_parent: String,
    /// The OCI runtime binary (`shoal-runc`).
    pub runtime: PathBuf,
    /// The per-container supervisor binary (`shoal-shim`).
    pub shim: PathBuf,
    /// The Linux bridge of the default `bridge` network.
    pub bridge_name: String,
    /// The nftables table (family ip) this daemon owns.
    pub nft_table: String,
    /// How registries are reached (insecure ones, CA directories); credentials come with
    /// each pull.
    pub registries: shoal_image::RegistryOptions,
}

impl EngineConfig {
    pub fn image_root(&self) -> PathBuf {
        self.data_root.join("image")
    }

    pub fn networks_dir(&self) -> PathBuf {
        self.data_root.join("networks")
    }

    /// Pinned network namespaces of running containers.
    pub fn netns_dir(&self) -> PathBuf {
        self.exec_root.join("netns")
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir().join(id)
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.data_root.join("containers")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// The static init bind-mounted for `--init`; written from the copy the runtime embeds.
    pub fn init_binary(&self) -> PathBuf {
        self.exec_root.join("bin").join("shoal-init")
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.exec_root.join("runtime")
    }

    /// Bundle and shim state of a running container. Short (16 hex chars of the id) so the
    /// unix sockets inside stay under the 108-byte path limit.
    pub fn shim_dir(&self, id: &str) -> PathBuf {
        self.exec_root.join("c").join(&id[..16.min(id.len())])
    }

    /// Binaries next to the current executable win over `$PATH`.
    pub fn find_binary(name: &str) -> PathBuf {
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                for candidate in [dir.join(name), dir.join("..").join(name)] {
                    if candidate.is_file() {
                        return candidate;
                    }
                }
            }
        }
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|c| c.is_file())
            })
            .unwrap_or_else(|| Path::new(name).to_path_buf())
    }
}
