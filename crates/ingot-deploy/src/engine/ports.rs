use super::*;

impl Engine {
    pub(super) fn pool(&self, stack: &str, name: &str) -> Arc<Pool> {
        lock(&self.services)[&key(stack, name)].pool.clone()
    }

    pub(super) fn with_service<T>(&self, stack: &str, name: &str, f: impl FnOnce(&mut Service) -> T) -> T {
        let mut s = lock(&self.services);
        f(s.get_mut(&key(stack, name)).expect("service exists"))
    }

    pub(super) fn backend(&self, spec: &PinnedService, r: &Replica) -> Option<SocketAddr> {
        let port = spec.ports.first()?.target;
        format!("{}:{port}", r.address.as_deref()?).parse().ok()
    }

    /// Every (host address, service key) a stack would listen on.
    pub(super) fn wanted_listeners(stack: &PinnedStack) -> Result<Vec<(SocketAddr, String)>> {
        let mut out = Vec::new();
        for (name, s) in &stack.services {
            for p in &s.ports {
                let addr: SocketAddr = format!("{}:{}", p.host_ip, p.published)
                    .parse()
                    .map_err(|_| DeployError::Invalid(format!("service {name}: bad host address {:?}", p.host_ip)))?;
                out.push((addr, key(&stack.name, name)));
            }
        }
        Ok(out)
    }

    /// Binds the stack's published ports that are not yet bound; a port in
    /// use by another service or process is an error naming it.
    pub(super) async fn bind_ports(&self, stack: &PinnedStack) -> Result<()> {
        for (addr, svc) in Self::wanted_listeners(stack)? {
            let owner = lock(&self.listeners).get(&addr).map(|(s, _)| s.clone());
            match owner {
                Some(o) if o == svc => continue,
                Some(o) => {
                    let o_stack = o.split('_').next().unwrap_or_default().to_string();
                    if o_stack != stack.name {
                        return Err(DeployError::Invalid(format!(
                            "port {} is already published by service {o}",
                            addr.port()
                        )));
                    }
                    // Moving within this stack: rebound below.
                    if let Some((_, l)) = lock(&self.listeners).remove(&addr) {
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
            let handle = ingot_mesh::listen(addr, pool)
                .await
                .map_err(|e| DeployError::Invalid(format!("port {} cannot be published: {e}", addr.port())))?;
            lock(&self.listeners).insert(addr, (svc, Arc::new(handle)));
        }
        Ok(())
    }

    pub(super) fn unbind(&self, svc: &str, keep: &[SocketAddr]) {
        lock(&self.listeners).retain(|addr, (s, h)| {
            let drop_it = s == svc && !keep.contains(addr);
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
            pool: Pool::new(),
            replicas: Vec::new(),
            restarts: 0,
            held: Default::default(),
        });
        Ok(())
    }
}
