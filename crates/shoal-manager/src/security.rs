//! The managers' transport security from the cluster's identity: mutual TLS with the
//! cluster's root, and only managers of this cluster may call.

use std::sync::Arc;

use crate::ca::{identity, Role};

/// Mutual TLS for the store's transport: `cert_pem`/`key_pem` are this manager's; callers
/// must hold a manager certificate of `cluster_id` signed by `ca_pem`.
pub fn managers_only(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    cluster_id: &str,
) -> Arc<shoal_store::Security> {
    let cluster = cluster_id.to_string();
    Arc::new(shoal_store::Security {
        ca_pem: ca_pem.into(),
        cert_pem: cert_pem.into(),
        key_pem: key_pem.into(),
        authorize: Box::new(move |der| {
            let id = identity(der).map_err(|e| e.to_string())?;
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
            Ok(())
        }),
    })
}
