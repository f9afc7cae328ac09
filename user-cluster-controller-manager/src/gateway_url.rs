//! Where a user cluster's agents reach its MLA gateway: derived from the Cluster's address
//! and expose strategy as KKP derives it.

use k8s_openapi::api::core::v1::Service;
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

/// Names of the write-path port of Service `mla-gateway-ext`, in order of preference: ours
/// (`https-ext`, 8080) and KKP's (`http-ext`, 80; a gateway KKP made may still be in place
/// during a migration). The port is chosen by name, never by position.
pub const EXTERNAL_PORT_NAMES: [&str; 2] = ["https-ext", "http-ext"];

/// The NodePort of the gateway's write path on `service`, if it has a port of one of the
/// [`EXTERNAL_PORT_NAMES`] with a NodePort.
pub fn gateway_node_port(service: &Service) -> Option<i32> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    EXTERNAL_PORT_NAMES
        .iter()
        .find_map(|name| ports.iter().find(|port| port.name.as_deref() == Some(*name)))
        .and_then(|port| port.node_port)
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

    fn service(ports: &[(&str, i32)]) -> Service {
        use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
        Service {
            spec: Some(ServiceSpec {
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, node_port)| ServicePort {
                            name: Some(name.to_string()),
                            port: 80,
                            node_port: Some(*node_port),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_write_port_is_chosen_by_name() {
        assert_eq!(gateway_node_port(&service(&[("metrics", 30001), ("https-ext", 30002)])), Some(30002));
        // KKP's gateway Service: port http-ext 80.
        assert_eq!(gateway_node_port(&service(&[("other", 30001), ("http-ext", 30003)])), Some(30003));
        assert_eq!(gateway_node_port(&service(&[("http-ext", 30003), ("https-ext", 30002)])), Some(30002));
        assert_eq!(gateway_node_port(&service(&[("metrics", 30001)])), None);
        assert_eq!(gateway_node_port(&Service::default()), None);
    }

    #[test]
    fn no_address_no_url() {
        let c = cluster(ExposeStrategy::NodePort, None, None);
        assert_eq!(gateway_url(&c, Some(1)), Err(GatewayUrlError::NoAddress));
    }
}
