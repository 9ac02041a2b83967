//! `shoal service …` on a manager: services and their tasks in the swarm's store. The
//! leader's control loop (`shoal_manager::orchestrator`) makes the tasks; this only records
//! what the user wants and reports what is.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use shoal_api::v1 as api;
use shoal_api::v1::services_server::{Services, ServicesServer};
use shoal_engine::Engine;
use shoal_manager::ids::random_id;
use shoal_manager::objects::Node;
use shoal_manager::service::{mode, validate, Service, Task};
use shoal_store::table::{create, delete, update};
use shoal_store::Versioned;
use tonic::{Request, Response, Status};

use shoal_manager::logs::{Gathered, Source};

use crate::swarm::{internal, now, store_status, unavailable, Active, Creds, SwarmApi};

pub struct ServicesApi {
    swarm: Arc<SwarmApi>,
    engine: Engine,
}

pub fn service(swarm: Arc<SwarmApi>, engine: Engine) -> ServicesServer<ServicesApi> {
    ServicesServer::new(ServicesApi { swarm, engine })
}

impl ServicesApi {
    /// This node's part in the swarm, if it is a manager that can read (a linearizable
    /// read: what it shows is at least as new as any acknowledged write).
    async fn manager(&self) -> Result<Arc<Active>, Status> {
        let a = self.swarm.active().await?;
        a.r()?.read_barrier().await.map_err(unavailable)?;
        Ok(a)
    }

    fn find_service(a: &Active, reference: &str) -> Result<Versioned<Service>, Status> {
        let services = a.r()?.state().list_obj::<Service>().map_err(internal)?;
        if let Some(s) = services
            .iter()
            .find(|s| s.object.id == reference || s.object.spec.name == reference)
        {
            return Ok(s.clone());
        }
        let found: Vec<_> = services
            .into_iter()
            .filter(|s| reference.len() >= 3 && s.object.id.starts_with(reference))
            .collect();
        match found.len() {
            0 => Err(Status::not_found(format!("no such service: {reference}"))),
            1 => Ok(found.into_iter().next().expect("one")),
            n => Err(Status::failed_precondition(format!(
                "service {reference} is ambiguous ({n} matches): use a longer id or the name"
            ))),
        }
    }

    fn info(a: &Active, s: &Versioned<Service>) -> api::ServiceInfo {
        let count = a
            .counts
            .as_ref()
            .map(|c| c.of(&s.object.id))
            .unwrap_or_default();
        let running = count.running;
        let desired = match mode(&s.object.spec) {
            "replicated" | "replicated-job" => s.object.spec.replicas,
            _ => count.desired,
        };
        api::ServiceInfo {
            spec_version: s.object.spec_version,
            id: s.object.id.clone(),
            version: s.version,
            created_at: s.object.created_at.clone(),
            updated_at: s.object.updated_at.clone(),
            spec: Some(without_auth(s.object.spec.clone())),
            previous_spec: s.object.previous_spec.clone().map(without_auth),
            update_status: s.object.update_status.clone(),
            running,
            desired,
        }
    }

    /// Write `s` if it is still at the version read: true when written (its version is then
    /// the new one), false when someone changed it meanwhile (the caller re-reads, after a
    /// read barrier, and tries again).
    async fn write_service(a: &Active, s: &mut Versioned<Service>) -> Result<bool, Status> {
        match a
            .r()?
            .write(vec![update(&s.object, s.version).map_err(internal)?])
            .await
        {
            Ok(v) => {
                s.version = v;
                Ok(true)
            }
            Err(shoal_store::Error::Rejected(shoal_store::Rejection::Conflict { .. })) => {
                a.r()?.read_barrier().await.map_err(unavailable)?;
                Ok(false)
            }
            Err(e) => Err(store_status(e)),
        }
    }

    /// What every node is to run for `reference`, so they all run the same content: a swarm
    /// image's id and manifest digest (every node fetches it from the managers); else the
    /// image's id here; else what its registry says (the id, and the manifest's digest a node
    /// that lacks the image pulls); else nothing (the nodes resolve the name themselves, as
    /// docker does when "image could not be accessed on a registry to record its digest").
    async fn resolve_image(&self, a: &Active, reference: &str, auth: &str) -> (String, String) {
        if let Ok(replica) = a.r() {
            match crate::content::find(replica, reference) {
                Ok(Some(i)) => {
                    let pinned = crate::content::pinned(&i);
                    return (i.id, pinned);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(image = %reference, error = %e.message(), "looking up the swarm's images")
                }
            }
        }
        if let Ok(i) = self.engine.image(reference).await {
            return (i.id, String::new());
        }
        match self
            .engine
            .resolve_remote(reference, crate::executor::registry_credentials(auth))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(image = %reference, error = %e, "image not here and not resolved on a registry: each node resolves the name itself");
                (String::new(), String::new())
            }
        }
    }
}

/// A spec as clients see it: `--with-registry-auth` credentials stay in the store.
fn without_auth(mut spec: api::ServiceSpec) -> api::ServiceSpec {
    if let Some(t) = spec.task.as_mut() {
        t.registry_auth.clear();
    }
    spec
}

/// How `svc logs` names a task: `name.slot`, or `name.node` for a global one.
fn task_name(t: &api::Task) -> String {
    if t.slot == 0 {
        format!("{}.{}", t.service_name, t.node_id)
    } else {
        format!("{}.{}", t.service_name, t.slot)
    }
}

/// Another manager's log events for `spec`, connecting when first polled.
fn peer_source(addr: String, creds: Creds, spec: api::LogSubscription) -> Source {
    use futures::StreamExt;
    let events = futures::stream::once(async move {
        let mut client = shoal_manager::join::client(&addr, &creds.ca, &creds.cert, &creds.key)
            .await
            .map_err(|e| e.to_string())?;
        let stream = client
            .subscribe_logs(spec)
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        Ok::<_, String>(stream.map(|e| e.map_err(|s| s.message().to_string())))
    });
    Box::pin(events.flat_map(|r| match r {
        Ok(s) => s.boxed(),
        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
    }))
}

impl ServicesApi {
    /// What `svc logs` asks for: the service and, for one task, that task's id.
    fn logs_target(a: &Active, target: &str) -> Result<(Versioned<Service>, Vec<String>), Status> {
        match Self::find_service(a, target) {
            Ok(s) => Ok((s, Vec::new())),
            Err(e) if e.code() == tonic::Code::NotFound => {
                let sm = a.r()?.state();
                let task = match sm.get_obj::<Task>(target).map_err(internal)? {
                    Some(t) => t,
                    None => {
                        let found: Vec<_> = sm
                            .list_obj::<Task>()
                            .map_err(internal)?
                            .into_iter()
                            .filter(|t| target.len() >= 3 && t.object.0.id.starts_with(target))
                            .collect();
                        if found.len() != 1 {
                            return Err(Status::not_found(format!(
                                "no such service or task: {target}"
                            )));
                        }
                        found.into_iter().next().expect("one")
                    }
                };
                let service = sm
                    .get_obj::<Service>(&task.object.0.service_id)
                    .map_err(internal)?
                    .ok_or_else(|| Status::not_found(format!("task {target}'s service is gone")))?;
                Ok((service, vec![task.object.0.id]))
            }
            Err(e) => Err(e),
        }
    }
}

#[tonic::async_trait]
impl Services for ServicesApi {
    type ServiceLogsStream =
        tokio_stream::wrappers::ReceiverStream<Result<api::ServiceLogsMessage, Status>>;

    async fn service_logs(
        &self,
        request: Request<api::ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let req = request.into_inner();
        // No read barrier: logs come from the nodes, and stay readable without a quorum.
        let a = self.swarm.active().await?;
        let sm = a.r()?.state().clone();
        let broker = a
            .broker
            .clone()
            .ok_or_else(|| Status::failed_precondition("this node is not a manager"))?;
        let (service, only) = Self::logs_target(&a, &req.target)?;
        let tasks: Vec<api::Task> = sm
            .list_obj::<Task>()
            .map_err(internal)?
            .into_iter()
            .map(|t| t.object.0)
            .filter(|t| t.service_id == service.object.id)
            .filter(|t| only.is_empty() || only.contains(&t.id))
            .collect();
        let nodes: Vec<Versioned<Node>> = sm.list_obj::<Node>().map_err(internal)?;
        let names: HashMap<String, String> = nodes
            .iter()
            .map(|n| (n.object.id.clone(), n.object.hostname.clone()))
            .collect();
        let expected = tasks
            .iter()
            .filter(|t| names.contains_key(&t.node_id))
            .map(|t| t.node_id.clone())
            .collect();
        let spec = api::LogSubscription {
            id: random_id(),
            service_id: service.object.id.clone(),
            task_ids: only,
            follow: req.follow,
            tail: req.tail,
            cancel: false,
        };
        let mut sources: Vec<(String, Source)> = vec![(
            a.m.advertise_addr.clone(),
            shoal_manager::logs::local_source(broker.subscribe(spec.clone())),
        )];
        for n in &nodes {
            let n = &n.object;
            if n.role == shoal_manager::objects::NodeRole::Manager && n.id != a.m.node_id {
                let source = peer_source(n.addr.clone(), a.creds.clone(), spec.clone());
                sources.push((n.addr.clone(), source));
            }
        }
        let mut gathered = shoal_manager::logs::gather(sources, expected, names.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut named: HashSet<String> = HashSet::new();
            let name =
                |named: &mut HashSet<String>, msg: &mut api::ServiceLogsMessage, t: &api::Task| {
                    if named.insert(t.id.clone()) {
                        msg.task_names.insert(t.id.clone(), task_name(t));
                        msg.task_nodes.insert(t.id.clone(), t.node_id.clone());
                    }
                };
            let mut first = api::ServiceLogsMessage {
                node_names: names,
                ..Default::default()
            };
            for t in &tasks {
                name(&mut named, &mut first, t);
            }
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            while let Some(g) = gathered.recv().await {
                let mut msg = api::ServiceLogsMessage::default();
                match g {
                    Gathered::Notice(n) => msg.notice = n,
                    Gathered::Lines(_, records) => {
                        // Tasks made since (following through a replacement or a scale).
                        for r in &records {
                            if !named.contains(&r.task_id) {
                                if let Ok(Some(t)) = sm.get_obj::<Task>(&r.task_id) {
                                    name(&mut named, &mut msg, &t.object.0);
                                }
                            }
                        }
                        msg.records = records;
                    }
                }
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn update_service(
        &self,
        request: Request<api::UpdateServiceRequest>,
    ) -> Result<Response<api::ServiceInfo>, Status> {
        let req = request.into_inner();
        let a = self.manager().await?;
        let mut resolved: Option<(String, (String, String))> = None;
        for _ in 0..5 {
            let mut s = Self::find_service(&a, &req.id)?;
            let old = s.object.clone();
            let stamp = now();
            let status = |state: &str, message: &str| api::UpdateStatus {
                state: state.into(),
                message: message.into(),
                started_at: stamp.clone(),
                completed_at: String::new(),
            };
            if req.rollback {
                let previous = old.previous_spec.clone().ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "service {} has no previous spec to roll back to",
                        old.spec.name
                    ))
                })?;
                s.object.previous_spec = Some(old.spec.clone());
                s.object.spec = previous;
                s.object.spec_version += 1;
                s.object.update_status =
                    Some(status("rollback_started", "manually requested rollback"));
            } else {
                let mut spec = req
                    .spec
                    .clone()
                    .ok_or_else(|| Status::invalid_argument("no service spec"))?;
                if spec.name != old.spec.name {
                    return Err(Status::invalid_argument(
                        "renaming a service is not supported: create a new one",
                    ));
                }
                if mode(&spec) != mode(&old.spec) {
                    return Err(Status::invalid_argument(format!(
                        "the mode of service {} cannot change (it is {})",
                        old.spec.name,
                        mode(&old.spec)
                    )));
                }
                validate(&spec).map_err(Status::invalid_argument)?;
                let old_image = old.spec.task.as_ref().map(|t| t.image.clone());
                // Registry credentials are never shown, so an update that brings none keeps
                // the service's (docker's rule); --with-registry-auth replaces them.
                if let (Some(task), Some(old_task)) = (spec.task.as_mut(), old.spec.task.as_ref()) {
                    if task.registry_auth.is_empty() {
                        task.registry_auth.clone_from(&old_task.registry_auth);
                    }
                }
                if let Some(task) = spec.task.as_mut() {
                    if Some(&task.image) != old_image.as_ref()
                        || task.image_id.is_empty()
                        || req.force
                    {
                        let (id, pinned) = match &resolved {
                            Some((image, id)) if *image == task.image => id.clone(),
                            _ => {
                                self.resolve_image(&a, &task.image, &task.registry_auth)
                                    .await
                            }
                        };
                        resolved = Some((task.image.clone(), (id.clone(), pinned.clone())));
                        task.image_id = id;
                        task.image_pinned = pinned;
                    }
                }
                let task_changed = spec.task != old.spec.task || req.force;
                s.object.spec = spec;
                if task_changed {
                    s.object.previous_spec = Some(old.spec.clone());
                    s.object.spec_version += 1;
                    s.object.update_status = Some(status("updating", "update in progress"));
                }
            }
            s.object.updated_at = stamp.clone();
            if Self::write_service(&a, &mut s).await? {
                tracing::info!(service = %s.object.spec.name, version = s.object.spec_version, "service updated");
                return Ok(Response::new(Self::info(&a, &s)));
            }
        }
        Err(Status::aborted("the service kept changing: try again"))
    }

    async fn create_service(
        &self,
        request: Request<api::CreateServiceRequest>,
    ) -> Result<Response<api::ServiceInfo>, Status> {
        let mut spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("no service spec"))?;
        if spec.name.is_empty() {
            spec.name = shoal_engine::names::random_name();
        }
        validate(&spec).map_err(Status::invalid_argument)?;
        let a = self.manager().await?;
        if let Some(task) = spec.task.as_mut() {
            (task.image_id, task.image_pinned) = self
                .resolve_image(&a, &task.image, &task.registry_auth)
                .await;
        }
        let stamp = now();
        let service = Service {
            id: random_id(),
            spec,
            previous_spec: None,
            spec_version: 1,
            created_at: stamp.clone(),
            updated_at: stamp,
            update_status: None,
        };
        let version = a
            .r()?
            .write(vec![create(&service).map_err(internal)?])
            .await
            .map_err(|e| match e {
                shoal_store::Error::Rejected(shoal_store::Rejection::Duplicate { .. }) => {
                    Status::already_exists(format!(
                        "service name {:?} is already in use: choose another --name, or update that service",
                        service.spec.name
                    ))
                }
                other => store_status(other),
            })?;
        tracing::info!(service = %service.spec.name, id = %service.id, "service created");
        let v = Versioned {
            version,
            created: version,
            object: service,
        };
        Ok(Response::new(Self::info(&a, &v)))
    }

    async fn list_services(
        &self,
        _request: Request<api::ListServicesRequest>,
    ) -> Result<Response<api::ListServicesResponse>, Status> {
        let a = self.manager().await?;
        let sm = a.r()?.state();
        let mut services: Vec<api::ServiceInfo> = sm
            .list_obj::<Service>()
            .map_err(internal)?
            .iter()
            .map(|s| Self::info(&a, s))
            .collect();
        services.sort_by(|x, y| {
            let name = |s: &api::ServiceInfo| s.spec.as_ref().map(|sp| sp.name.clone());
            name(x).cmp(&name(y))
        });
        Ok(Response::new(api::ListServicesResponse { services }))
    }

    async fn inspect_service(
        &self,
        request: Request<api::ServiceRef>,
    ) -> Result<Response<api::ServiceInfo>, Status> {
        let a = self.manager().await?;
        let s = Self::find_service(&a, &request.into_inner().id)?;
        Ok(Response::new(Self::info(&a, &s)))
    }

    async fn remove_service(
        &self,
        request: Request<api::ServiceRef>,
    ) -> Result<Response<api::RemoveServiceResponse>, Status> {
        let a = self.manager().await?;
        let s = Self::find_service(&a, &request.into_inner().id)?;
        a.r()?
            .write(vec![delete::<Service>(&s.object.id, None)])
            .await
            .map_err(store_status)?;
        tracing::info!(service = %s.object.spec.name, "service removed");
        Ok(Response::new(api::RemoveServiceResponse {
            id: s.object.id,
        }))
    }

    async fn scale_service(
        &self,
        request: Request<api::ScaleServiceRequest>,
    ) -> Result<Response<api::ServiceInfo>, Status> {
        let req = request.into_inner();
        let a = self.manager().await?;
        for _ in 0..5 {
            let mut s = Self::find_service(&a, &req.id)?;
            if mode(&s.object.spec) != "replicated" {
                return Err(Status::failed_precondition(format!(
                    "service {} is {}: only replicated services can be scaled",
                    s.object.spec.name,
                    mode(&s.object.spec)
                )));
            }
            s.object.spec.replicas = req.replicas;
            s.object.updated_at = now();
            if Self::write_service(&a, &mut s).await? {
                return Ok(Response::new(Self::info(&a, &s)));
            }
        }
        Err(Status::aborted("the service kept changing: try again"))
    }

    async fn list_tasks(
        &self,
        request: Request<api::ListTasksRequest>,
    ) -> Result<Response<api::ListTasksResponse>, Status> {
        let req = request.into_inner();
        let a = self.manager().await?;
        let sm = a.r()?.state();
        let mut services = HashMap::new();
        for s in sm.list_obj::<Service>().map_err(internal)? {
            services.insert(s.object.id.clone(), s.object.spec.name.clone());
        }
        let wanted: Vec<String> = req
            .services
            .iter()
            .map(|r| Self::find_service(&a, r).map(|s| s.object.id))
            .collect::<Result<_, _>>()?;
        let node = if req.node.is_empty() {
            None
        } else {
            Some(SwarmApi::find_node(&a, &req.node)?.object.id)
        };
        let mut tasks: Vec<api::Task> = sm
            .list_obj::<Task>()
            .map_err(internal)?
            .into_iter()
            .map(|t| {
                let mut t = t.object.0;
                if let Some(spec) = t.spec.as_mut() {
                    spec.registry_auth.clear();
                }
                t
            })
            .filter(|t| wanted.is_empty() || wanted.contains(&t.service_id))
            .filter(|t| node.as_ref().is_none_or(|n| t.node_id == *n))
            .filter(|t| req.desired_state.is_empty() || t.desired_state == req.desired_state)
            .collect();
        // docker's order: by service, slot (or node), newest first.
        tasks.sort_by(|x, y| {
            (&x.service_id, x.slot, &x.node_id, &y.created_at).cmp(&(
                &y.service_id,
                y.slot,
                &y.node_id,
                &x.created_at,
            ))
        });
        let node_names = sm
            .list_obj::<Node>()
            .map_err(internal)?
            .into_iter()
            .map(|n| (n.object.id, n.object.hostname))
            .collect();
        Ok(Response::new(api::ListTasksResponse {
            tasks,
            node_names,
            service_names: services,
        }))
    }
}
