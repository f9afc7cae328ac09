//! The agents' client certificates, issued from the cluster's CA (the seed Secret
//! `mla-gateway-ca`) and kept in `mla-system` as Secrets `prometheus-certificates` and
//! `promtail-certificates` (`client.crt`, `client.key`, `ca.crt`).

use std::time::SystemTime;

use mla_common::pki::{self, CaState, CertifiedKeyPem, LeafSpec, PkiError};

/// Keys of an agent's certificates Secret; `ca.crt` is the trust bundle (current CA and,
/// around a rotation, its successor or predecessor) the agent verifies the gateway with.
pub use crate::agents::common::{CA_CERT_KEY as CA_KEY, CLIENT_CERT_KEY, CLIENT_KEY_KEY};

/// What an agent's certificates Secret holds (or should hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentCertificates {
    /// `client.crt`.
    pub cert_pem: Option<String>,
    /// `client.key`.
    pub key_pem: Option<String>,
    /// `ca.crt`.
    pub ca_pem: Option<String>,
}

/// What the agent `common_name` should hold given the cluster's CA state: `None` when
/// `current` is already right, else the new contents (a new certificate when the old one
/// is missing, expiring, from another CA or for another name; a new bundle when the CA
/// state's trust bundle changed, e.g. a successor CA was prepared).
pub fn plan(
    ca: &CaState,
    current: &AgentCertificates,
    common_name: &str,
    now: SystemTime,
) -> Result<Option<AgentCertificates>, PkiError> {
    let issuer = ca.current().ok_or_else(|| PkiError::Unusable {
        what: "cluster CA",
        reason: "the seed Secret mla-gateway-ca has no usable certificate and key yet".into(),
    })?;
    let bundle = pki::trust_bundle(ca, now)?;
    let spec = LeafSpec::client(common_name)?;
    let renewal =
        pki::leaf_renewal(current.cert_pem.as_deref(), current.key_pem.as_deref(), &issuer.cert_pem, &spec, now);
    let leaf = match renewal {
        None => CertifiedKeyPem {
            cert_pem: current.cert_pem.clone().unwrap_or_default(),
            key_pem: current.key_pem.clone().unwrap_or_default(),
        },
        Some(reason) => {
            tracing::info!(agent = common_name, reason = reason.as_str(), "issuing a client certificate");
            pki::issue(&issuer, &spec, now)?
        }
    };
    let desired =
        AgentCertificates { cert_pem: Some(leaf.cert_pem), key_pem: Some(leaf.key_pem), ca_pem: Some(bundle) };
    Ok((desired != *current).then_some(desired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_state() -> (CaState, CertifiedKeyPem) {
        let ca = pki::create_ca("c1", SystemTime::now()).expect("ca");
        (CaState { cert_pem: Some(ca.cert_pem.clone()), key_pem: Some(ca.key_pem.clone()), ..Default::default() }, ca)
    }

    #[test]
    fn issues_once_then_keeps() {
        let (state, ca) = ca_state();
        let now = SystemTime::now();
        let first = plan(&state, &AgentCertificates::default(), "prometheus", now).expect("plan").expect("issued");
        assert_eq!(first.ca_pem.as_deref().map(str::trim), Some(ca.cert_pem.trim()));
        assert_eq!(plan(&state, &first, "prometheus", now).expect("plan"), None, "nothing to change");
    }

    #[test]
    fn a_prepared_successor_changes_only_the_bundle_and_a_promotion_reissues() {
        let (state, ca) = ca_state();
        let now = SystemTime::now();
        let first = plan(&state, &AgentCertificates::default(), "promtail", now).expect("plan").expect("issued");

        let next = pki::create_ca("c1", now).expect("next");
        let prepared =
            CaState { next_cert_pem: Some(next.cert_pem.clone()), next_key_pem: Some(next.key_pem.clone()), ..state };
        let updated = plan(&prepared, &first, "promtail", now).expect("plan").expect("new bundle");
        assert_eq!(updated.cert_pem, first.cert_pem, "the certificate stays");
        assert!(
            updated
                .ca_pem
                .as_deref()
                .is_some_and(|b| b.contains(next.cert_pem.trim()) && b.contains(ca.cert_pem.trim()))
        );

        let promoted = CaState {
            cert_pem: Some(next.cert_pem.clone()),
            key_pem: Some(next.key_pem.clone()),
            previous_cert_pem: Some(ca.cert_pem.clone()),
            ..Default::default()
        };
        let reissued = plan(&promoted, &updated, "promtail", now).expect("plan").expect("reissued");
        assert_ne!(reissued.cert_pem, updated.cert_pem, "a certificate from the new CA");
        let spec = LeafSpec::client("promtail").expect("spec");
        assert_eq!(
            pki::leaf_renewal(reissued.cert_pem.as_deref(), reissued.key_pem.as_deref(), &next.cert_pem, &spec, now),
            None
        );
    }

    #[test]
    fn no_ca_yet_is_an_error() {
        assert!(plan(&CaState::default(), &AgentCertificates::default(), "prometheus", SystemTime::now()).is_err());
    }
}
