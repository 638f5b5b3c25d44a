//! Stacks' networks on this host: each declared network (or a stack's
//! implicit `default`) is a bridge and subnet of its own, named
//! `STACK_KEY`, recorded in the store while it exists. Replicas of a
//! service join its networks, the primary first; the DNS server and the
//! virtual addresses answer a replica for the services that share one of
//! its networks only, and the firewall keeps networks apart.

use super::*;
use crate::compose::{NetworkDecl, DEFAULT_NETWORK};
use ingot_runtime::net::Network;
use ingot_store::NetworkRecord;

/// Where subnets come from when a stack gives none: /24s of 10.240.0.0/12.
const POOL: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 240, 0, 0);
const POOL_SLOTS: u32 = 1 << 12;

/// A stack's networks as deployed: what it declares, or the implicit default.
pub fn declared(stack: &PinnedStack) -> BTreeMap<String, NetworkDecl> {
    if stack.networks.is_empty() {
        return BTreeMap::from([(DEFAULT_NETWORK.to_string(), NetworkDecl::default())]);
    }
    stack.networks.clone()
}

/// A recorded network as the runtime knows it (`None`: a bad subnet).
pub fn record_network(r: &NetworkRecord) -> Option<Network> {
    let (subnet, prefix) = crate::compose::parse_subnet(&r.subnet).ok()?;
    Some(Network {
        bridge: r.bridge.clone(),
        subnet,
        prefix,
        internal: r.internal,
    })
}

/// The IPv4 routes of the host (interface, destination, prefix), but the
/// default route: what a new subnet must not overlap.
fn host_routes() -> Vec<(String, Network)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let (dest, mask) = (u32::from_be(dest.swap_bytes()), u32::from_be(mask.swap_bytes()));
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then(|| {
                (
                    f[0].to_string(),
                    Network {
                        bridge: f[0].to_string(),
                        subnet: std::net::Ipv4Addr::from(dest & mask),
                        prefix,
                        internal: false,
                    },
                )
            })
        })
        .collect()
}

impl Engine {
    /// The bridge name of network `full` of this root: `ingn` (`ingi` when
    /// internal) and 11 hex digits of a hash of the root and the name.
    fn bridge_name(&self, full: &str, internal: bool) -> String {
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let seed = format!("{}\0{full}", root.display());
        let hex = ingot_oci::Digest::sha256(seed.as_bytes()).hex().to_string();
        let prefix = if internal {
            ingot_runtime::net::bridge::INTERNAL_PREFIX
        } else {
            ingot_runtime::net::bridge::NETWORK_PREFIX
        };
        format!("{prefix}{}", &hex[..11])
    }

    /// Checks a stack's networks against this host before anything is
    /// recorded: a network that exists keeps its settings, and a subnet the
    /// stack gives overlaps no other network of this root and no route of
    /// the host.
    pub(super) async fn check_networks(&self, stack: &PinnedStack) -> Result<()> {
        let (name, decls) = (stack.name.clone(), declared(stack));
        let routes = host_routes();
        self.blocking(move |store| {
            let all = store.networks()?;
            for (key, d) in &decls {
                let full = key_name(&name, key);
                let field = |why: String| DeployError::Field {
                    field: format!("stack.networks.{key}"),
                    why,
                };
                if let Some(have) = all.iter().find(|r| r.name == full) {
                    let same_subnet = d.subnet.as_ref().is_none_or(|s| *s == have.subnet);
                    if have.internal != d.internal || !same_subnet {
                        return Err(field(format!(
                            "network {full} exists with subnet {} and internal {}; a network's settings do not change while it exists (ingot stack rm {name} first)",
                            have.subnet, have.internal
                        )));
                    }
                    continue;
                }
                let Some(sub) = &d.subnet else { continue };
                let (subnet, prefix) = crate::compose::parse_subnet(sub).map_err(field)?;
                let want = Network {
                    bridge: String::new(),
                    subnet,
                    prefix,
                    internal: d.internal,
                };
                for other in all.iter().filter(|r| r.name != full) {
                    if record_network(other).is_some_and(|n| n.overlaps(&want)) {
                        return Err(field(format!(
                            "subnet {sub} overlaps network {} ({})",
                            other.name, other.subnet
                        )));
                    }
                }
                let builtin = [Network::default_bridge()];
                let clash = routes
                    .iter()
                    .map(|(i, n)| (i.as_str(), n))
                    .chain(builtin.iter().map(|n| (n.bridge.as_str(), n)))
                    .find(|(_, n)| n.overlaps(&want));
                if let Some((iface, n)) = clash {
                    return Err(field(format!(
                        "subnet {sub} overlaps {} on {iface}, a network of this host",
                        n.cidr()
                    )));
                }
            }
            Ok(())
        })
        .await
    }

    /// Makes the stack's networks that do not exist yet (a record, then
    /// the bridge) and makes sure the bridges of the others are there
    /// (gone after a reboot).
    pub(super) async fn ensure_networks(&self, stack: &PinnedStack) -> Result<()> {
        let decls = declared(stack);
        let mut nets = Vec::new();
        let routes = host_routes();
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        for (key, d) in &decls {
            let full = key_name(&stack.name, key);
            let (bridge, root_seed) = (self.bridge_name(&full, d.internal), full.clone());
            let (stack_name, d) = (stack.name.clone(), d.clone());
            let (routes, root) = (routes.clone(), root.clone());
            let rec = self
                .blocking(move |store| {
                    if let Some(r) = store.network(&root_seed)? {
                        return Ok(r);
                    }
                    let subnet = match &d.subnet {
                        Some(s) => s.clone(),
                        None => {
                            let taken: Vec<Network> = store
                                .networks()?
                                .iter()
                                .filter_map(record_network)
                                .chain(routes.into_iter().map(|(_, n)| n))
                                .chain([Network::default_bridge()])
                                .collect();
                            let seed = format!("{}\0{root_seed}", root.display());
                            let hex = ingot_oci::Digest::sha256(seed.as_bytes()).hex().to_string();
                            let start = u32::from_str_radix(&hex[..8], 16).unwrap_or(0) % POOL_SLOTS;
                            (0..POOL_SLOTS)
                                .map(|i| Network {
                                    bridge: String::new(),
                                    subnet: std::net::Ipv4Addr::from(
                                        u32::from(POOL) + ((start + i) % POOL_SLOTS) * 256,
                                    ),
                                    prefix: 24,
                                    internal: false,
                                })
                                .find(|n| !taken.iter().any(|t| t.overlaps(n)))
                                .map(|n| n.cidr())
                                .ok_or_else(|| {
                                    DeployError::Invalid("no free /24 left in 10.240.0.0/12 for a network".into())
                                })?
                        }
                    };
                    let rec = NetworkRecord {
                        name: root_seed.clone(),
                        stack: stack_name,
                        bridge,
                        subnet,
                        internal: d.internal,
                        created_at: crate::now(),
                    };
                    store.put_network(&rec)?;
                    Ok(rec)
                })
                .await?;
            let net = record_network(&rec)
                .ok_or_else(|| DeployError::Invalid(format!("network {full}: bad subnet {:?}", rec.subnet)))?;
            lock(&self.networks).insert(full.clone(), net.clone());
            nets.push((full, net));
        }
        for (full, net) in nets {
            self.runtime
                .ensure_network(net)
                .await
                .map_err(|e| DeployError::Invalid(format!("network {full}: {e}")))?;
        }
        Ok(())
    }

    /// Removes the networks of `stack` (once its replicas are gone).
    pub(super) async fn remove_networks(&self, stack: &str) {
        let owner = stack.to_string();
        let recs = self
            .blocking(move |store| {
                Ok(store
                    .networks()?
                    .into_iter()
                    .filter(|r| r.stack == owner)
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap_or_default();
        for r in recs {
            let Some(net) = record_network(&r) else { continue };
            if let Err(e) = self.runtime.remove_network(net).await {
                tracing::warn!(network = %r.name, "cannot remove the network: {e}");
                continue;
            }
            lock(&self.networks).remove(&r.name);
            let name = r.name.clone();
            let _ = self.blocking(move |store| Ok(store.delete_network(&name)?)).await;
        }
    }

    /// Loads the networks recorded (at start-up).
    pub(super) async fn load_networks(&self) -> Result<()> {
        let recs = self.blocking(|store| Ok(store.networks()?)).await?;
        let mut nets = lock(&self.networks);
        for r in recs {
            if let Some(n) = record_network(&r) {
                nets.insert(r.name.clone(), n);
            }
        }
        Ok(())
    }

    /// The networks a replica of `spec` joins, the primary first.
    pub(super) fn replica_networks(&self, stack: &str, spec: &PinnedService) -> Result<Vec<Network>> {
        let nets = lock(&self.networks);
        spec.network_names()
            .iter()
            .map(|n| {
                let full = key_name(stack, n);
                nets.get(&full)
                    .cloned()
                    .ok_or_else(|| DeployError::Invalid(format!("network {full} does not exist")))
            })
            .collect()
    }

    /// Whether the client at `ip` may reach a service of `stack` on
    /// `networks` (full names) through its virtual address: a replica of
    /// the stack sharing one of them, or a process of the host (not an
    /// address of any container network).
    pub(super) fn admits(&self, ip: std::net::IpAddr, stack: &str, networks: &[String]) -> bool {
        let std::net::IpAddr::V4(v4) = ip else { return true };
        if let Some(c) = lock(&self.clients).get(&v4.to_string()) {
            return c.stack == stack && c.networks.iter().any(|n| networks.contains(n));
        }
        let container = Network::default_bridge().contains(v4)
            || (u32::from(v4) & 0xfff0_0000) == u32::from(POOL)
            || lock(&self.networks).values().any(|n| n.contains(v4));
        !container
    }
}

/// `STACK_KEY`.
pub(super) fn key_name(stack: &str, key: &str) -> String {
    format!("{stack}_{key}")
}
