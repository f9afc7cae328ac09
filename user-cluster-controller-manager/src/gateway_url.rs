//! Where a user cluster's agents reach its MLA gateway: derived from the Cluster's address
//! and expose strategy as KKP derives it.

use mla_common::api::{Cluster, ExposeStrategy};

/// Host name prefix of the gateway exposed by SNI (Tunneling).
pub const SNI_PREFIX: &str = "mla-gateway.";

/// Why no gateway URL can be derived yet.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayUrlError {
    /// The Cluster has no external name yet.
    #[error("the cluster has no address yet (status.address.externalName)")]
    NoAddress,
    /// The port is not known yet (the address port for Tunneling, the external Service's
    /// NodePort otherwise).
    #[error("the gateway's port is not known yet: {0}")]
    NoPort(&'static str),
}

/// The gateway's base URL: `https://mla-gateway.<externalName>:<address port>` for
/// Tunneling (SNI through the seed's nodeport-proxy, on the API server's port), else
/// `https://<externalName>:<NodePort of mla-gateway-ext>`. `node_port` is that Service's
/// NodePort, when known.
pub fn gateway_url(cluster: &Cluster, node_port: Option<i32>) -> Result<String, GatewayUrlError> {
    let address = cluster.status.as_ref().and_then(|s| s.address.as_ref());
    let host =
        address.and_then(|a| a.external_name.as_deref()).filter(|h| !h.is_empty()).ok_or(GatewayUrlError::NoAddress)?;
    match cluster.spec.expose_strategy.unwrap_or(ExposeStrategy::NodePort) {
        ExposeStrategy::Tunneling => {
            let port = address
                .and_then(|a| a.port)
                .filter(|p| *p > 0)
                .ok_or(GatewayUrlError::NoPort("status.address.port"))?;
            Ok(format!("https://{SNI_PREFIX}{host}:{port}"))
        }
        ExposeStrategy::NodePort | ExposeStrategy::LoadBalancer => {
            let port = node_port
                .filter(|p| *p > 0)
                .ok_or(GatewayUrlError::NoPort("the NodePort of Service mla-gateway-ext"))?;
            Ok(format!("https://{host}:{port}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use mla_common::api::{ClusterAddress, ClusterSpec, ClusterStatus};

    use super::*;

    fn cluster(strategy: ExposeStrategy, external_name: Option<&str>, port: Option<i32>) -> Cluster {
        let mut cluster = Cluster::new("c1", ClusterSpec { expose_strategy: Some(strategy), ..Default::default() });
        cluster.status = Some(ClusterStatus {
            address: Some(ClusterAddress {
                external_name: external_name.map(str::to_string),
                port,
                ..Default::default()
            }),
            ..Default::default()
        });
        cluster
    }

    #[test]
    fn tunneling_uses_sni_on_the_api_server_port() {
        let c = cluster(ExposeStrategy::Tunneling, Some("c1.seed.example.com"), Some(6443));
        assert_eq!(gateway_url(&c, None).as_deref(), Ok("https://mla-gateway.c1.seed.example.com:6443"));
        let c = cluster(ExposeStrategy::Tunneling, Some("c1.seed.example.com"), None);
        assert!(matches!(gateway_url(&c, Some(31000)), Err(GatewayUrlError::NoPort(_))));
    }

    #[test]
    fn node_port_and_load_balancer_use_the_external_services_node_port() {
        for strategy in [ExposeStrategy::NodePort, ExposeStrategy::LoadBalancer] {
            let c = cluster(strategy, Some("c1.seed.example.com"), Some(6443));
            assert_eq!(gateway_url(&c, Some(31234)).as_deref(), Ok("https://c1.seed.example.com:31234"));
            assert!(matches!(gateway_url(&c, None), Err(GatewayUrlError::NoPort(_))));
        }
    }

    #[test]
    fn no_address_no_url() {
        let c = cluster(ExposeStrategy::NodePort, None, None);
        assert_eq!(gateway_url(&c, Some(1)), Err(GatewayUrlError::NoAddress));
    }
}
