//! Writing the spec's sysctls inside the container, refusing those that are not namespaced
//! (they would change the host).

use std::collections::HashMap;

use oci_spec::runtime::LinuxNamespaceType;

use crate::error::{Context, Error, Result};

const IPC_KEYS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace a sysctl belongs to, or an error if it belongs to none.
pub fn namespace_of(key: &str) -> Result<LinuxNamespaceType> {
    if key.contains("..") || key.contains('/') || key.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "sysctl key {key:?} is not valid"
        )));
    }
    if IPC_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        return Ok(LinuxNamespaceType::Ipc);
    }
    if key.starts_with("net.") {
        return Ok(LinuxNamespaceType::Network);
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return Ok(LinuxNamespaceType::Uts);
    }
    Err(Error::InvalidArgument(format!(
        "sysctl {key:?} is not namespaced: setting it would change the host"
    )))
}

pub fn validate(
    sysctls: &HashMap<String, String>,
    has_new: impl Fn(LinuxNamespaceType) -> bool,
) -> Result<()> {
    for key in sysctls.keys() {
        let ns = namespace_of(key)?;
        if !has_new(ns) {
            return Err(Error::InvalidArgument(format!(
                "sysctl {key:?} needs the container to have its own {} namespace",
                crate::namespaces::proc_name(ns)
            )));
        }
    }
    Ok(())
}

pub fn apply(sysctls: &HashMap<String, String>) -> Result<()> {
    for (key, value) in sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).ctx(|| format!("set sysctl {key}={value}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_keys() {
        assert_eq!(
            namespace_of("net.ipv4.ip_forward").unwrap(),
            LinuxNamespaceType::Network
        );
        assert_eq!(
            namespace_of("kernel.shmmax").unwrap(),
            LinuxNamespaceType::Ipc
        );
        assert_eq!(
            namespace_of("fs.mqueue.msg_max").unwrap(),
            LinuxNamespaceType::Ipc
        );
        assert!(namespace_of("kernel.panic").is_err());
        assert!(namespace_of("net/../../x").is_err());
    }
}
