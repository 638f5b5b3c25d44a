use super::*;
use crate::compose::{PortMode, Protocol};

impl Engine {
    pub(super) fn pool(&self, stack: &str, name: &str) -> Arc<Pool> {
        lock(&self.services)[&key(stack, name)].pool.clone()
    }

    pub(super) fn with_service<T>(&self, stack: &str, name: &str, f: impl FnOnce(&mut Service) -> T) -> T {
        let mut s = lock(&self.services);
        f(s.get_mut(&key(stack, name)).expect("service exists"))
    }

    /// Replica `r` as a member of its pool (at the service port, or its
    /// first published port of any protocol; listeners for other ports
    /// reach it at theirs).
    pub(super) fn backend(&self, spec: &PinnedService, r: &Replica) -> Option<SocketAddr> {
        let port = service_port(spec).or_else(|| spec.ports.first().map(|p| p.target))?;
        format!("{}:{port}", r.address.as_deref()?).parse().ok()
    }

    /// Service `key`'s virtual address: stable while the daemon runs, the
    /// same after a restart for the same services (a hash of the name,
    /// probing past the addresses taken).
    pub(super) fn vip(&self, key: &str) -> std::net::Ipv4Addr {
        let mut vips = lock(&self.vips);
        if let Some(a) = vips.get(key) {
            return *a;
        }
        // The root in the seed: daemons of two roots on one host do not
        // share addresses.
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let seed = format!("{}\0{key}", root.display());
        let mut probe = 0;
        loop {
            let a = ingot_runtime::net::bridge::address_in_16(
                std::net::Ipv4Addr::new(10, 232, 0, 0),
                seed.as_bytes(),
                probe,
            );
            if !vips.values().any(|v| *v == a) {
                vips.insert(key.to_string(), a);
                return a;
            }
            probe += 1;
        }
    }

    /// The addresses `name` resolves to for the replica at `client`, when
    /// it names a service of the client's stack that shares one of its
    /// networks (`SERVICE`, `STACK_SERVICE`, or an alias the service has
    /// on a shared network): its virtual address (vip), or its serving
    /// replicas' addresses on the shared networks (dnsrr). `None`: not a
    /// name this client can see.
    pub fn resolve(&self, client: std::net::Ipv4Addr, name: &str) -> Option<Vec<std::net::Ipv4Addr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let me = lock(&self.clients).get(&client.to_string())?.clone();
        let (svc, mode, port, addrs) = {
            let services = lock(&self.services);
            let shared = |s: &Service| -> Vec<usize> {
                s.spec
                    .network_names()
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| me.networks.contains(&networks::key_name(&s.stack, n)))
                    .map(|(i, _)| i)
                    .collect()
            };
            let svc = services.values().find(|s| {
                if s.stack != me.stack || shared(s).is_empty() {
                    return false;
                }
                let alias = s.spec.networks.iter().any(|n| {
                    me.networks.contains(&networks::key_name(&s.stack, &n.name))
                        && n.aliases.iter().any(|a| a.to_ascii_lowercase() == name)
                });
                alias || s.name.to_ascii_lowercase() == name || key(&s.stack, &s.name).to_ascii_lowercase() == name
            })?;
            let on = shared(svc);
            let addrs: Vec<std::net::Ipv4Addr> = svc
                .replicas
                .iter()
                .filter(|r| r.serving())
                .filter_map(|r| {
                    let i = *on.iter().find(|i| r.addresses.get(**i).is_some())?;
                    r.addresses[i].parse().ok()
                })
                .collect();
            (svc.name.clone(), svc.spec.endpoint_mode, service_port(&svc.spec), addrs)
        };
        let vips = self.serve_vips.load(std::sync::atomic::Ordering::SeqCst);
        match (mode, port) {
            (crate::compose::EndpointMode::Vip, Some(_)) if vips => Some(vec![self.vip(&key(&me.stack, &svc))]),
            _ => Some(addrs),
        }
    }

    /// The stack of the replica at `client`, if it is one this daemon
    /// started or adopted (starting and draining ones included).
    pub fn client_stack(&self, client: std::net::Ipv4Addr) -> Option<String> {
        lock(&self.clients).get(&client.to_string()).map(|c| c.stack.clone())
    }

    /// Every listener a stack wants: its published ingress ports (TCP
    /// and UDP), and each vip service's port on its virtual address.
    /// Host-mode ports are the replica's own ([`LocalRuntime`]).
    ///
    /// [`LocalRuntime`]: super::LocalRuntime
    pub(super) fn wanted_listeners(&self, stack: &PinnedStack) -> Result<Vec<Wanted>> {
        let mut out = Vec::new();
        for (name, s) in &stack.services {
            let vips = self.serve_vips.load(std::sync::atomic::Ordering::SeqCst);
            if let (true, Some(port)) = (vips && s.endpoint_mode.is_vip(), service_port(s)) {
                let vip = self.vip(&key(&stack.name, name));
                // Spoken to as its published port with that target says.
                let upstream = s
                    .ports
                    .iter()
                    .find(|p| p.protocol == Protocol::Tcp && p.target == port)
                    .map(|p| p.upstream())
                    .unwrap_or_default();
                out.push(Wanted {
                    at: (Protocol::Tcp, SocketAddr::from((vip, port))),
                    service: key(&stack.name, name),
                    target: port,
                    upstream,
                });
            }
            for p in s.ports.iter().filter(|p| p.mode == PortMode::Ingress) {
                let addr: SocketAddr = format!("{}:{}", p.host_ip, p.published)
                    .parse()
                    .map_err(|_| DeployError::Invalid(format!("service {name}: bad host address {:?}", p.host_ip)))?;
                out.push(Wanted {
                    at: (p.protocol, addr),
                    service: key(&stack.name, name),
                    target: p.target,
                    upstream: p.upstream(),
                });
            }
        }
        Ok(out)
    }

    /// Binds the stack's published ports that are not yet bound; a port in
    /// use by another service or process is an error naming it.
    pub(super) async fn bind_ports(self: &Arc<Self>, stack: &PinnedStack) -> Result<()> {
        for Wanted {
            at,
            service: svc,
            target,
            upstream,
        } in self.wanted_listeners(stack)?
        {
            let (protocol, addr) = at;
            let owner = lock(&self.listeners).get(&at).map(|(s, l)| (s.clone(), l.upstream()));
            match owner {
                Some((o, u)) if o == svc && u == upstream => continue,
                // The same service, now spoken to in another HTTP version:
                // the new listener binds beside the old one (SO_REUSEPORT),
                // which stops accepting once it is in place (below).
                Some((o, _)) if o == svc => {}
                Some((o, _)) => {
                    let o_stack = o.split('_').next().unwrap_or_default().to_string();
                    if o_stack != stack.name {
                        return Err(DeployError::Invalid(format!(
                            "port {}/{protocol} is already published by service {o}",
                            addr.port()
                        )));
                    }
                    // Moving within this stack: rebound below.
                    if let Some((_, l)) = lock(&self.listeners).remove(&at) {
                        l.abort();
                    }
                }
                None => {}
            }
            let (stack_name, service) = svc
                .split_once('_')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default();
            self.ensure_service(&stack_name, &service, &stack.services[&service])?;
            let pool = self.pool(&stack_name, &service);
            // A virtual address serves the replicas that share a network
            // with the service (and the host), nobody else.
            let admit: Option<ingot_mesh::Admit> = match addr.ip() {
                std::net::IpAddr::V4(ip)
                    if u32::from(ip) & 0xffff_0000 == u32::from(std::net::Ipv4Addr::new(10, 232, 0, 0)) =>
                {
                    let nets: Vec<String> = stack.services[&service]
                        .network_names()
                        .iter()
                        .map(|n| networks::key_name(&stack_name, n))
                        .collect();
                    let me = Arc::downgrade(self);
                    let owner = stack_name.clone();
                    Some(Arc::new(move |peer| {
                        me.upgrade().is_some_and(|e| e.admits(peer, &owner, &nets))
                    }))
                }
                _ => None,
            };
            let opts = ingot_mesh::ListenOptions {
                admit,
                port: Some(target),
                upstream,
                ..Default::default()
            };
            let handle = match protocol {
                Protocol::Tcp => ingot_mesh::listen_with(addr, pool, opts).await,
                Protocol::Udp => ingot_mesh::listen_udp(addr, pool, opts).await,
            }
            .map_err(|e| DeployError::Invalid(format!("port {}/{protocol} cannot be published: {e}", addr.port())))?;
            if let Some((_, old)) = lock(&self.listeners).insert(at, (svc, Arc::new(handle))) {
                old.abort();
            }
        }
        Ok(())
    }

    pub(super) fn unbind(&self, svc: &str, keep: &[ListenAt]) {
        lock(&self.listeners).retain(|at, (s, h)| {
            let drop_it = s == svc && !keep.contains(at);
            if drop_it {
                h.abort();
            }
            !drop_it
        });
    }

    pub(super) fn ensure_service(&self, stack: &str, name: &str, spec: &PinnedService) -> Result<()> {
        let mut s = lock(&self.services);
        s.entry(key(stack, name)).or_insert_with(|| Service {
            stack: stack.to_string(),
            name: name.to_string(),
            spec: spec.clone(),
            pool: {
                let pool = Pool::new();
                let (events, st, sv) = (self.events.clone(), stack.to_string(), name.to_string());
                pool.watch(move |what, addr| {
                    let action = if what == "join" { "join" } else { "leave" };
                    events.emit("pool", action, &st, &sv, &addr.to_string(), "");
                });
                pool
            },
            replicas: Vec::new(),
            restarts: 0,
            held: Default::default(),
        });
        Ok(())
    }
}

/// Where a listener listens: protocol and address.
pub(super) type ListenAt = (Protocol, SocketAddr);

/// A listener a stack wants: where, for which service, to which port of
/// its replicas.
pub(super) struct Wanted {
    pub at: ListenAt,
    pub service: String,
    pub target: u16,
    pub upstream: ingot_mesh::Upstream,
}

/// A service's port behind the mesh: its first published TCP port's
/// target, else the image's first EXPOSEd port.
pub(super) fn service_port(spec: &PinnedService) -> Option<u16> {
    spec.ports
        .iter()
        .find(|p| p.protocol == Protocol::Tcp)
        .map(|p| p.target)
        .or_else(|| spec.expose.first().copied())
}
