//! The managers' transport security from the cluster's identity: mutual TLS with the
//! cluster's root, and only managers of this swarm that were not removed may call.

use std::sync::{Arc, OnceLock};

use shoal_store::StateMachine;

use crate::ca::{identity, Role};
use crate::objects::{Node, NodeRole, RemovedNode};

/// Mutual TLS for the store's transport: `cert_pem`/`key_pem` are this manager's; callers
/// must hold a manager certificate of `cluster_id` signed by `ca_pem`.
pub fn managers_only(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    cluster_id: &str,
) -> Arc<shoal_store::Security> {
    managers_only_unless_removed(ca_pem, cert_pem, key_pem, cluster_id, Arc::default())
}

/// As [`managers_only`], and once `removed` holds this manager's state machine, callers whose
/// node was removed (`node rm`) are refused at once, before their certificates expire.
pub fn managers_only_unless_removed(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    cluster_id: &str,
    removed: Arc<OnceLock<StateMachine>>,
) -> Arc<shoal_store::Security> {
    let cluster = cluster_id.to_string();
    // Every Raft call is authorised; a peer's certificate is parsed once, not per call.
    let parsed: std::sync::Mutex<std::collections::HashMap<Vec<u8>, crate::Identity>> =
        Default::default();
    Arc::new(shoal_store::Security {
        ca_pem: ca_pem.into(),
        cert_pem: cert_pem.into(),
        key_pem: key_pem.into(),
        authorize: Box::new(move |der| {
            let cached = parsed.lock().expect("identity cache").get(der).cloned();
            let id = match cached {
                Some(id) => id,
                None => {
                    let id = identity(der).map_err(|e| e.to_string())?;
                    let mut cache = parsed.lock().expect("identity cache");
                    if cache.len() >= 1024 {
                        cache.clear();
                    }
                    cache.insert(der.to_vec(), id.clone());
                    id
                }
            };
            if id.cluster_id != cluster {
                return Err(format!(
                    "node {} belongs to another swarm ({})",
                    id.node_id, id.cluster_id
                ));
            }
            if id.role != Role::Manager {
                return Err(format!(
                    "node {} is a worker: only managers may call the managers' transport",
                    id.node_id
                ));
            }
            if let Some(sm) = removed.get() {
                if sm
                    .get_obj::<RemovedNode>(&id.node_id)
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Err(format!("node {} was removed from the swarm", id.node_id));
                }
                // The managers' word now beats the certificate: a demoted manager's old
                // certificate no longer opens the managers' transport.
                if let Some(n) = sm.get_obj::<Node>(&id.node_id).map_err(|e| e.to_string())? {
                    if n.object.role != NodeRole::Manager {
                        return Err(format!(
                            "node {} was demoted to a worker: only managers may call the managers' transport",
                            id.node_id
                        ));
                    }
                }
            }
            Ok(())
        }),
    })
}
