//! Certificates of the MLA gateway and its agents: a CA per user cluster, the gateway's
//! serving certificate, client certificates of the agents, the renewal rules, and CA
//! rotation with an overlap window.
//!
//! Everything here is pure: no Kubernetes client, and "now" is a parameter so tests (and a
//! reconciler that wants one clock per reconcile) control time. Certificates and keys travel
//! as PEM strings, as they are stored in Secrets.
//!
//! # CA state and rotation
//!
//! The Secret `mla-gateway-ca` in the cluster namespace holds:
//!
//! | key | content |
//! |---|---|
//! | `ca.crt` | the current CA certificate: every new certificate is issued from it |
//! | `ca.key` | the current CA's private key |
//! | `ca-previous.crt` | only during a rotation: the CA that `ca.crt` replaced |
//! | `ca-next.crt`, `ca-next.key` | only before a rotation: the CA that will replace `ca.crt` |
//!
//! [`reconcile_ca`] decides what the Secret should hold. When the current CA needs renewal
//! (under [`RENEW_BEFORE`] left, unparseable, key not matching) a new CA replaces it, and the
//! old certificate, if it is still a valid CA, moves to `ca-previous.crt`. The gateway trusts
//! [`trust_bundle`] (current and previous CA, concatenated) for client certificates, so an
//! agent still holding a certificate from the old CA is not cut off; the agents' own
//! certificates are reissued from the new CA because they no longer verify against it
//! ([`RenewalReason::WrongIssuer`]). Leaf certificates never outlive the CA that issued them,
//! so once the previous CA has expired no certificate can still depend on it and
//! [`reconcile_ca`] drops it; a caller that knows every agent already moved can drop it
//! earlier with [`CaState::without_previous`].
//!
//! Agents verify the gateway's serving certificate with the `ca.crt` they are given; giving
//! them the same [`trust_bundle`] lets them accept a gateway certificate from either CA
//! while the rotation is under way.
//!
//! A rotation is staged so that nobody is ever asked to trust a CA they have not been given
//! yet: when under [`PREPARE_BEFORE`] (60 days) is left, the next CA is made and only
//! *added* to the trust bundle (`ca-next.*`); everything is still issued from the current
//! CA. The agents and the gateway receive the bundle with the next CA during those 30
//! days. When under [`RENEW_BEFORE`] is left, the next CA is promoted: it issues from then
//! on (the gateway's certificate and the agents' are reissued), while the old one stays
//! trusted as `ca-previous.crt`. Only when the current CA is broken, or the controller
//! missed the whole preparation window, is a new CA created and switched to at once.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// Key of the current CA certificate in the Secret `mla-gateway-ca`.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of the current CA's private key in the Secret `mla-gateway-ca`.
pub const CA_KEY_KEY: &str = "ca.key";
/// Key of the replaced CA certificate in the Secret `mla-gateway-ca` during a rotation.
pub const CA_PREVIOUS_CERT_KEY: &str = "ca-previous.crt";
/// Key of the next CA certificate, before a rotation.
pub const CA_NEXT_CERT_KEY: &str = "ca-next.crt";
/// Key of the next CA's private key, before a rotation.
pub const CA_NEXT_KEY_KEY: &str = "ca-next.key";

/// How long a new CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// How long a new leaf (gateway or client) certificate is valid at most (never longer than
/// the CA that issues it).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate with less than this left is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// A CA's successor is prepared (and trusted) when less than this is left.
pub const PREPARE_BEFORE: Duration = Duration::from_secs(60 * 24 * 3600);
/// New certificates are valid from this long before "now", so a clock slightly behind ours
/// (a user cluster's, the gateway's) accepts them at once.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// Prefix of the gateway certificate's common name, before the cluster's external name.
pub const GATEWAY_CN_PREFIX: &str = "mla-gateway.";

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// An input that ends up in a certificate is not acceptable.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidInput {
        /// Which input: `cluster name`, `external name`, `address IP`, `common name`.
        field: &'static str,
        /// The refused value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Existing PEM data (a CA to issue from) cannot be used.
    #[error("unusable {what}: {reason}")]
    Unusable {
        /// What was read: `CA certificate`, `CA key`.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen refused to build a certificate or key.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate and its private key, both PEM encoded. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKeyPem {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKeyPem").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (ExtKeyUsage ServerAuth): the gateway.
    Server,
    /// TLS client (ExtKeyUsage ClientAuth): the agents.
    Client,
}

/// The identity a leaf certificate must carry. Build it with [`LeafSpec::gateway_server`] or
/// [`LeafSpec::client`], which validate their inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    common_name: String,
    dns_names: BTreeSet<String>,
    ip_addresses: BTreeSet<IpAddr>,
    usage: Usage,
}

impl LeafSpec {
    /// The gateway's serving certificate: CN `mla-gateway.<external_name>`, SANs the CN, the
    /// external name and the address IP (if any), ServerAuth.
    pub fn gateway_server(external_name: &str, ip: Option<&str>) -> Result<Self, PkiError> {
        let external_name = validate_dns_name("external name", external_name)?;
        let common_name = format!("{GATEWAY_CN_PREFIX}{external_name}");
        let common_name = validate_dns_name("gateway common name", &common_name)?;
        let mut ip_addresses = BTreeSet::new();
        if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
            let parsed = ip.parse::<IpAddr>().map_err(|_| PkiError::InvalidInput {
                field: "address IP",
                value: ip.to_string(),
                reason: "not an IPv4 or IPv6 address",
            })?;
            ip_addresses.insert(parsed);
        }
        Ok(Self {
            dns_names: BTreeSet::from([common_name.clone(), external_name]),
            common_name,
            ip_addresses,
            usage: Usage::Server,
        })
    }

    /// A client certificate of an agent (`prometheus`, `promtail`): CN only, ClientAuth.
    pub fn client(common_name: &str) -> Result<Self, PkiError> {
        validate_common_name(common_name)?;
        Ok(Self {
            common_name: common_name.to_string(),
            dns_names: BTreeSet::new(),
            ip_addresses: BTreeSet::new(),
            usage: Usage::Client,
        })
    }

    /// The certificate's common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }
}

/// Why a certificate must be (re)issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewalReason {
    /// There is no certificate or no key.
    Missing,
    /// The certificate or key is not valid PEM / X.509 / a private key.
    Unparseable,
    /// The key does not belong to the certificate.
    KeyMismatch,
    /// A CA certificate is not marked as a CA.
    NotCa,
    /// Less than [`RENEW_BEFORE`] is left, or it has expired.
    Expiring,
    /// The common name is not the wanted one.
    SubjectChanged,
    /// The DNS names or IP addresses differ from the wanted ones.
    SansChanged,
    /// The extended key usage does not allow the wanted use.
    UsageChanged,
    /// It is not signed by the current CA.
    WrongIssuer,
}

impl RenewalReason {
    /// A short, fixed name for logs, conditions and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            RenewalReason::Missing => "Missing",
            RenewalReason::Unparseable => "Unparseable",
            RenewalReason::KeyMismatch => "KeyMismatch",
            RenewalReason::NotCa => "NotCa",
            RenewalReason::Expiring => "Expiring",
            RenewalReason::SubjectChanged => "SubjectChanged",
            RenewalReason::SansChanged => "SansChanged",
            RenewalReason::UsageChanged => "UsageChanged",
            RenewalReason::WrongIssuer => "WrongIssuer",
        }
    }
}

impl fmt::Display for RenewalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new CA for `cluster` (a DNS-1123 label): ECDSA P-256, CN `mla-gateway-ca-<cluster>`,
/// valid [`CA_VALIDITY`] from `now`.
///
/// The subject also carries the issue time (as OU), so the CAs of two generations differ in
/// name and a trust bundle holding both never confuses them.
pub fn create_ca(cluster: &str, now: SystemTime) -> Result<CertifiedKeyPem, PkiError> {
    validate_label("cluster name", cluster)?;
    let now = OffsetDateTime::from(now);
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, format!("mla-gateway-ca-{cluster}"));
    params.distinguished_name.push(DnType::OrganizationalUnitName, format!("generation {}", now.unix_timestamp()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let key = generate_key()?;
    let cert = params.self_signed(&key).map_err(|source| PkiError::Generate { what: "CA certificate", source })?;
    Ok(CertifiedKeyPem { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Issues a leaf certificate for `spec` from `ca` (its certificate and key as PEM), valid
/// [`LEAF_VALIDITY`] from `now` but never beyond the CA's own expiry.
pub fn issue(ca: &CertifiedKeyPem, spec: &LeafSpec, now: SystemTime) -> Result<CertifiedKeyPem, PkiError> {
    let ca_der = first_pem(&ca.cert_pem)
        .ok_or_else(|| PkiError::Unusable { what: "CA certificate", reason: "no PEM certificate".into() })?;
    let ca_not_after = {
        let ca_cert = parse_der(&ca_der)
            .ok_or_else(|| PkiError::Unusable { what: "CA certificate", reason: "not an X.509 certificate".into() })?;
        if !is_ca(&ca_cert) {
            return Err(PkiError::Unusable { what: "CA certificate", reason: "not a CA".into() });
        }
        ca_cert.validity().not_after.to_datetime()
    };
    let ca_key = key_pair_from_pem(&ca.key_pem).map_err(|reason| PkiError::Unusable { what: "CA key", reason })?;
    let issuer = Issuer::from_ca_cert_der(&ca_der.into(), ca_key)
        .map_err(|err| PkiError::Unusable { what: "CA certificate", reason: err.to_string() })?;

    let now = OffsetDateTime::from(now);
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
    for name in &spec.dns_names {
        let name = name
            .clone()
            .try_into()
            .map_err(|source| PkiError::Generate { what: "subject alternative name", source })?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    params.subject_alt_names.extend(spec.ip_addresses.iter().copied().map(SanType::IpAddress));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![match spec.usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    // Lets TLS stacks pick the right CA when a bundle holds two generations.
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = std::cmp::min(now + LEAF_VALIDITY, ca_not_after);
    let key = generate_key()?;
    let cert =
        params.signed_by(&key, &issuer).map_err(|source| PkiError::Generate { what: "leaf certificate", source })?;
    Ok(CertifiedKeyPem { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Issues the gateway's serving certificate for a cluster reached as `external_name` (and
/// `ip`, when known). See [`LeafSpec::gateway_server`].
pub fn issue_gateway_certificate(
    ca: &CertifiedKeyPem,
    external_name: &str,
    ip: Option<&str>,
    now: SystemTime,
) -> Result<CertifiedKeyPem, PkiError> {
    issue(ca, &LeafSpec::gateway_server(external_name, ip)?, now)
}

/// Issues a client certificate with common name `common_name` (`prometheus`, `promtail`).
/// See [`LeafSpec::client`].
pub fn issue_client_certificate(
    ca: &CertifiedKeyPem,
    common_name: &str,
    now: SystemTime,
) -> Result<CertifiedKeyPem, PkiError> {
    issue(ca, &LeafSpec::client(common_name)?, now)
}

/// Whether the CA in `cert_pem` / `key_pem` must be replaced, and why; `None` when it is a
/// usable CA with at least [`RENEW_BEFORE`] left.
pub fn ca_renewal(cert_pem: Option<&str>, key_pem: Option<&str>, now: SystemTime) -> Option<RenewalReason> {
    with_certified_key(cert_pem, key_pem, |cert| {
        if !is_ca(cert) {
            Some(RenewalReason::NotCa)
        } else if expiring(cert, now) {
            Some(RenewalReason::Expiring)
        } else {
            None
        }
    })
}

/// Checks that a certificate and key are present, parse and belong together, then asks
/// `check` about the certificate.
fn with_certified_key(
    cert_pem: Option<&str>,
    key_pem: Option<&str>,
    check: impl FnOnce(&X509Certificate<'_>) -> Option<RenewalReason>,
) -> Option<RenewalReason> {
    let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
        return Some(RenewalReason::Missing);
    };
    let Some(der) = first_pem(cert_pem) else {
        return Some(RenewalReason::Unparseable);
    };
    let Some(cert) = parse_der(&der) else {
        return Some(RenewalReason::Unparseable);
    };
    let Ok(key) = key_pair_from_pem(key_pem) else {
        return Some(RenewalReason::Unparseable);
    };
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Some(RenewalReason::KeyMismatch);
    }
    check(&cert)
}

/// Whether the leaf certificate in `cert_pem` / `key_pem` must be reissued from the CA in
/// `ca_cert_pem`, and why; `None` when it matches `spec`, verifies against that CA and has at
/// least [`RENEW_BEFORE`] left.
pub fn leaf_renewal(
    cert_pem: Option<&str>,
    key_pem: Option<&str>,
    ca_cert_pem: &str,
    spec: &LeafSpec,
    now: SystemTime,
) -> Option<RenewalReason> {
    with_certified_key(cert_pem, key_pem, |cert| leaf_check(cert, ca_cert_pem, spec, now))
}

fn leaf_check(
    cert: &X509Certificate<'_>,
    ca_cert_pem: &str,
    spec: &LeafSpec,
    now: SystemTime,
) -> Option<RenewalReason> {
    if !signed_by(cert, ca_cert_pem) {
        return Some(RenewalReason::WrongIssuer);
    }
    if expiring(cert, now) {
        return Some(RenewalReason::Expiring);
    }
    let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
    if common_name != Some(spec.common_name.as_str()) {
        return Some(RenewalReason::SubjectChanged);
    }
    let (dns_names, ip_addresses) = subject_alt_names(cert);
    if dns_names != spec.dns_names || ip_addresses != spec.ip_addresses {
        return Some(RenewalReason::SansChanged);
    }
    let usage_ok = match cert.extended_key_usage() {
        Ok(Some(eku)) => match spec.usage {
            Usage::Server => eku.value.server_auth,
            Usage::Client => eku.value.client_auth,
        },
        _ => false,
    };
    if !usage_ok {
        return Some(RenewalReason::UsageChanged);
    }
    None
}

/// The contents of the Secret `mla-gateway-ca` (see the module documentation).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CaState {
    /// `ca.crt`: the current CA certificate.
    pub cert_pem: Option<String>,
    /// `ca.key`: the current CA's key.
    pub key_pem: Option<String>,
    /// `ca-previous.crt`: the replaced CA certificate, during a rotation.
    pub previous_cert_pem: Option<String>,
    /// `ca-next.crt`: the CA that will replace the current one, before a rotation.
    pub next_cert_pem: Option<String>,
    /// `ca-next.key`: its key.
    pub next_key_pem: Option<String>,
}

impl fmt::Debug for CaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaState")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .field("previous_cert_pem", &self.previous_cert_pem)
            .field("next_cert_pem", &self.next_cert_pem)
            .field("next_key_pem", &self.next_key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl CaState {
    /// The state held by the Secret `mla-gateway-ca` (absent keys stay `None`).
    pub fn from_secret(secret: Option<&k8s_openapi::api::core::v1::Secret>) -> Self {
        let get = |key: &str| {
            secret.and_then(|s| s.data.as_ref()?.get(key)).and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        Self {
            cert_pem: get(CA_CERT_KEY),
            key_pem: get(CA_KEY_KEY),
            previous_cert_pem: get(CA_PREVIOUS_CERT_KEY),
            next_cert_pem: get(CA_NEXT_CERT_KEY),
            next_key_pem: get(CA_NEXT_KEY_KEY),
        }
    }

    /// The current CA as certificate and key, when both are present.
    pub fn current(&self) -> Option<CertifiedKeyPem> {
        Some(CertifiedKeyPem { cert_pem: self.cert_pem.clone()?, key_pem: self.key_pem.clone()? })
    }

    /// The same state with the rotation finished: the previous CA no longer trusted. For a
    /// caller that knows every agent holds a certificate from the current CA.
    pub fn without_previous(&self) -> Self {
        Self { previous_cert_pem: None, ..self.clone() }
    }
}

/// What [`reconcile_ca`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaChange {
    /// A new CA was made and there was no usable one before (`Missing`, `Unparseable`, ...).
    Created(RenewalReason),
    /// A new CA replaced a still valid one, which is kept as the previous CA.
    Rotated(RenewalReason),
    /// The next CA was made and added to the trust bundle; the current one still issues.
    NextPrepared,
    /// A prepared next CA was unusable and was dropped (it is made again on the next pass).
    NextDropped,
    /// The previous CA expired (or became unreadable) and is no longer trusted.
    PreviousDropped,
}

/// Decides what the Secret `mla-gateway-ca` of `cluster` should hold at `now`: `None` when
/// `state` is fine as it is, else the new state and what changed.
pub fn reconcile_ca(state: &CaState, cluster: &str, now: SystemTime) -> Result<Option<(CaState, CaChange)>, PkiError> {
    let next = state.next(now);
    match ca_renewal(state.cert_pem.as_deref(), state.key_pem.as_deref(), now) {
        None => {
            if next.is_none() && within(state.cert_pem.as_deref(), PREPARE_BEFORE, now) {
                let prepared = create_ca(cluster, now)?;
                let next_state = CaState {
                    next_cert_pem: Some(prepared.cert_pem),
                    next_key_pem: Some(prepared.key_pem),
                    ..state.clone()
                };
                return Ok(Some((next_state, CaChange::NextPrepared)));
            }
            let stale_next = state.next_cert_pem.is_some() && next.is_none();
            let previous_usable = state.previous_cert_pem.as_deref().is_some_and(|pem| usable_ca_cert(pem, now));
            if state.previous_cert_pem.is_some() && !previous_usable {
                Ok(Some((state.without_previous(), CaChange::PreviousDropped)))
            } else if stale_next {
                // A broken successor is made again on the next pass.
                Ok(Some((CaState { next_cert_pem: None, next_key_pem: None, ..state.clone() }, CaChange::NextDropped)))
            } else {
                Ok(None)
            }
        }
        Some(reason) => {
            let old_cert = state.cert_pem.as_deref().filter(|pem| usable_ca_cert(pem, now));
            // Promote the prepared successor if there is one: everyone already trusts it.
            let new = match next.filter(|_| reason == RenewalReason::Expiring) {
                Some(next) => next,
                None => create_ca(cluster, now)?,
            };
            let next_state = CaState {
                cert_pem: Some(new.cert_pem),
                key_pem: Some(new.key_pem),
                previous_cert_pem: old_cert.map(str::to_string),
                next_cert_pem: None,
                next_key_pem: None,
            };
            let change = if old_cert.is_some() { CaChange::Rotated(reason) } else { CaChange::Created(reason) };
            Ok(Some((next_state, change)))
        }
    }
}

impl CaState {
    /// The prepared successor, if it is a usable CA with a matching key that is not itself
    /// about to expire.
    fn next(&self, now: SystemTime) -> Option<CertifiedKeyPem> {
        let cert = self.next_cert_pem.as_deref()?;
        let key = self.next_key_pem.as_deref()?;
        ca_renewal(Some(cert), Some(key), now)
            .is_none()
            .then(|| CertifiedKeyPem { cert_pem: cert.to_string(), key_pem: key.to_string() })
    }
}

/// The notAfter (Unix seconds) of the first certificate in `pem`, if it parses.
pub fn not_after(pem: &str) -> Option<i64> {
    let der = first_pem(pem)?;
    Some(parse_der(&der)?.validity().not_after.timestamp())
}

/// Whether the certificate in `pem` has less than `window` left at `now`.
fn within(pem: Option<&str>, window: Duration, now: SystemTime) -> bool {
    let Some(der) = pem.and_then(first_pem) else { return false };
    let Some(cert) = parse_der(&der) else { return false };
    cert.validity().not_after.timestamp() < (OffsetDateTime::from(now) + window).unix_timestamp()
}

/// The CA certificates the gateway trusts for client certificates (and agents for the
/// gateway's): the current CA, followed by the previous one while it is still valid.
pub fn trust_bundle(state: &CaState, now: SystemTime) -> Result<String, PkiError> {
    let current = state
        .cert_pem
        .as_deref()
        .filter(|pem| first_pem(pem).and_then(|der| parse_der(&der).map(|_| ())).is_some())
        .ok_or_else(|| PkiError::Unusable { what: "CA certificate", reason: "missing or not PEM X.509".into() })?;
    let mut bundle = ensure_newline(current);
    if let Some(next) = state.next_cert_pem.as_deref().filter(|pem| usable_ca_cert(pem, now)) {
        bundle.push_str(&ensure_newline(next));
    }
    if let Some(previous) = state.previous_cert_pem.as_deref().filter(|pem| usable_ca_cert(pem, now)) {
        bundle.push_str(&ensure_newline(previous));
    }
    Ok(bundle)
}

fn ensure_newline(pem: &str) -> String {
    let mut pem = pem.trim_end().to_string();
    pem.push('\n');
    pem
}

fn generate_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Generate { what: "key", source })
}

/// The DER contents of the first `CERTIFICATE` block of `pem`.
/// A private key from PEM: PKCS#8 (`PRIVATE KEY`, what we write) or a P-256 key in SEC1
/// (`EC PRIVATE KEY`, what KKP and Go's `x509.MarshalECPrivateKey` write), which is
/// rewrapped as PKCS#8 because the signing backend reads only that. A CA KKP made stays
/// usable as it is: no second CA when a gateway is taken over.
pub fn key_pair_from_pem(pem: &str) -> Result<KeyPair, String> {
    let block =
        Pem::iter_from_buffer(pem.as_bytes()).next().ok_or("no PEM block")?.map_err(|e| format!("not PEM: {e}"))?;
    if block.label != "EC PRIVATE KEY" {
        return KeyPair::from_pem(pem).map_err(|e| e.to_string());
    }
    let pkcs8 = sec1_p256_to_pkcs8(&block.contents).ok_or("not a P-256 EC private key with its public key")?;
    KeyPair::try_from(pkcs8.as_slice()).map_err(|e| e.to_string())
}

/// One DER element: tag, contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
        0x82 => (usize::from(*rest.first()?) << 8 | usize::from(*rest.get(1)?), rest.get(2..)?),
        _ => return None,
    };
    Some((tag, rest.get(..length)?, rest.get(length..)?))
}

/// A DER element of `tag` around `contents`.
fn der_wrap(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        n @ 0..=0x7f => out.push(n as u8),
        n @ 0x80..=0xff => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(contents);
    out
}

/// RFC 5915 ECPrivateKey (P-256) to RFC 5208 PrivateKeyInfo, without the optional curve
/// parameters inside (the algorithm identifier names the curve; the backend refuses both).
fn sec1_p256_to_pkcs8(sec1: &[u8]) -> Option<Vec<u8>> {
    const P256_ALGORITHM: [u8; 21] = [
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x03, 0x01, 0x07,
    ];
    const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (0x30, body, _) = der_element(sec1)? else { return None };
    let (0x02, [1], rest) = der_element(body)? else { return None };
    let (0x04, secret, mut rest) = der_element(rest)? else { return None };
    let mut public_key = None;
    while !rest.is_empty() {
        let (tag, contents, next) = der_element(rest)?;
        match tag {
            // The curve, if named, must be P-256.
            0xa0 if contents != P256_OID => return None,
            0xa0 => {}
            0xa1 => public_key = Some(contents),
            _ => return None,
        }
        rest = next;
    }
    let mut ec_private_key = der_wrap(0x02, &[1]);
    ec_private_key.extend(der_wrap(0x04, secret));
    ec_private_key.extend(der_wrap(0xa1, public_key?));
    let ec_private_key = der_wrap(0x30, &ec_private_key);
    let mut info = der_wrap(0x02, &[0]);
    info.extend(P256_ALGORITHM);
    info.extend(der_wrap(0x04, &ec_private_key));
    Some(der_wrap(0x30, &info))
}

fn first_pem(pem: &str) -> Option<Vec<u8>> {
    Pem::iter_from_buffer(pem.as_bytes())
        .next()?
        .ok()
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| block.contents)
}

fn parse_der(der: &[u8]) -> Option<X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der).ok().map(|(_, cert)| cert)
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn expiring(cert: &X509Certificate<'_>, now: SystemTime) -> bool {
    let not_after = cert.validity().not_after.timestamp();
    let renew_at = OffsetDateTime::from(now) + RENEW_BEFORE;
    not_after < renew_at.unix_timestamp()
}

/// A parseable CA certificate that has not expired.
fn usable_ca_cert(pem: &str, now: SystemTime) -> bool {
    let Some(der) = first_pem(pem) else { return false };
    let Some(cert) = parse_der(&der) else { return false };
    is_ca(&cert) && cert.validity().not_after.timestamp() > OffsetDateTime::from(now).unix_timestamp()
}

fn signed_by(cert: &X509Certificate<'_>, ca_cert_pem: &str) -> bool {
    let Some(ca_der) = first_pem(ca_cert_pem) else { return false };
    let Some(ca) = parse_der(&ca_der) else { return false };
    cert.issuer().as_raw() == ca.subject().as_raw() && cert.verify_signature(Some(ca.public_key())).is_ok()
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> (BTreeSet<String>, BTreeSet<IpAddr>) {
    let mut dns_names = BTreeSet::new();
    let mut ip_addresses = BTreeSet::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(name) => {
                    dns_names.insert(name.to_ascii_lowercase());
                }
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        ip_addresses.insert(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        ip_addresses.insert(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    (dns_names, ip_addresses)
}

/// A DNS-1123 label: 1 to 63 of `a-z0-9-`, starting and ending alphanumeric.
fn validate_label(field: &'static str, value: &str) -> Result<(), PkiError> {
    let invalid = |reason| Err(PkiError::InvalidInput { field, value: value.to_string(), reason });
    if value.is_empty() || value.len() > 63 {
        return invalid("must be 1 to 63 characters");
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return invalid("must consist of lower case letters, digits and '-'");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return invalid("must start and end with a letter or digit");
    }
    Ok(())
}

/// A DNS name of labels separated by dots (case-folded to lower case), at most 253
/// characters; a trailing dot is dropped.
fn validate_dns_name(field: &'static str, value: &str) -> Result<String, PkiError> {
    let name = value.strip_suffix('.').unwrap_or(value).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(PkiError::InvalidInput {
            field,
            value: value.to_string(),
            reason: "must be a DNS name of 1 to 253 characters",
        });
    }
    for label in name.split('.') {
        validate_label(field, label).map_err(|_| PkiError::InvalidInput {
            field,
            value: value.to_string(),
            reason: "every dot-separated part must be 1 to 63 letters, digits or '-', not starting or ending with '-'",
        })?;
    }
    Ok(name)
}

/// A common name: 1 to 64 printable ASCII characters.
fn validate_common_name(value: &str) -> Result<(), PkiError> {
    if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(PkiError::InvalidInput {
            field: "common name",
            value: value.to_string(),
            reason: "must be 1 to 64 printable ASCII characters",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn t0() -> SystemTime {
        // 2026-01-01T00:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn ca() -> CertifiedKeyPem {
        create_ca("abc123", t0()).expect("CA")
    }

    fn der_of(pem: &str) -> Vec<u8> {
        first_pem(pem).expect("PEM")
    }

    #[test]
    fn not_after_reads_the_first_certificate() {
        let ca = ca();
        let expected = OffsetDateTime::from(t0() + CA_VALIDITY).unix_timestamp();
        assert_eq!(not_after(&ca.cert_pem), Some(expected));
        assert_eq!(not_after("not a certificate"), None);
        assert_eq!(not_after(&ca.key_pem), None, "a key is not a certificate");
    }

    #[test]
    fn ca_is_p256_ca_for_ten_years() {
        let ca = ca();
        let der = der_of(&ca.cert_pem);
        let cert = parse_der(&der).expect("X.509");
        assert!(is_ca(&cert));
        let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
        assert_eq!(cn, Some("mla-gateway-ca-abc123"));
        let not_after = cert.validity().not_after.timestamp();
        let expected = OffsetDateTime::from(t0() + CA_VALIDITY).unix_timestamp();
        assert_eq!(not_after, expected);
        assert_eq!(cert.signature_algorithm.algorithm, x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256);
        assert!(ca.key_pem.contains("PRIVATE KEY"));
        assert!(cert.verify_signature(None).is_ok(), "self-signed");
        assert_eq!(ca_renewal(Some(&ca.cert_pem), Some(&ca.key_pem), t0()), None);
    }

    #[test]
    fn ca_name_must_be_a_label() {
        for bad in ["", "Abc", "a b", "a;b", "-a", "a-", "x".repeat(64).as_str(), "a.b"] {
            let err = create_ca(bad, t0()).expect_err(bad);
            assert!(err.to_string().contains("cluster name"), "{err}");
        }
    }

    #[test]
    fn ca_renewal_reasons() {
        let ca = ca();
        let other = create_ca("other", t0()).expect("CA");
        let leaf = issue_client_certificate(&ca, "prometheus", t0()).expect("leaf");
        type Case<'a> = (Option<&'a str>, Option<&'a str>, SystemTime, Option<RenewalReason>);
        let cases: Vec<Case<'_>> = vec![
            (None, Some(&ca.key_pem), t0(), Some(RenewalReason::Missing)),
            (Some(&ca.cert_pem), None, t0(), Some(RenewalReason::Missing)),
            (Some("garbage"), Some(&ca.key_pem), t0(), Some(RenewalReason::Unparseable)),
            (Some(&ca.cert_pem), Some("garbage"), t0(), Some(RenewalReason::Unparseable)),
            (Some(&ca.cert_pem), Some(&other.key_pem), t0(), Some(RenewalReason::KeyMismatch)),
            (Some(&leaf.cert_pem), Some(&leaf.key_pem), t0(), Some(RenewalReason::NotCa)),
            (Some(&ca.cert_pem), Some(&ca.key_pem), t0() + CA_VALIDITY - 31 * DAY, None),
            (Some(&ca.cert_pem), Some(&ca.key_pem), t0() + CA_VALIDITY - 29 * DAY, Some(RenewalReason::Expiring)),
            (Some(&ca.cert_pem), Some(&ca.key_pem), t0() + CA_VALIDITY + DAY, Some(RenewalReason::Expiring)),
        ];
        for (i, (cert, key, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(ca_renewal(cert, key, now), want, "case {i}");
        }
    }

    #[test]
    fn gateway_certificate_has_the_contract_identity() {
        let ca = ca();
        let gw = issue_gateway_certificate(&ca, "abc123.europe.example.com", Some("192.0.2.7"), t0()).expect("gw");
        let der = der_of(&gw.cert_pem);
        let cert = parse_der(&der).expect("X.509");
        let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
        assert_eq!(cn, Some("mla-gateway.abc123.europe.example.com"));
        let (dns, ips) = subject_alt_names(&cert);
        assert_eq!(
            dns,
            BTreeSet::from([
                "mla-gateway.abc123.europe.example.com".to_string(),
                "abc123.europe.example.com".to_string()
            ])
        );
        assert_eq!(ips, BTreeSet::from(["192.0.2.7".parse::<IpAddr>().expect("ip")]));
        let eku = cert.extended_key_usage().expect("eku").expect("eku present");
        assert!(eku.value.server_auth && !eku.value.client_auth);
        assert!(!is_ca(&cert));
        assert_eq!(cert.validity().not_after.timestamp(), OffsetDateTime::from(t0() + LEAF_VALIDITY).unix_timestamp());
        assert!(signed_by(&cert, &ca.cert_pem));
        let spec = LeafSpec::gateway_server("abc123.europe.example.com", Some("192.0.2.7")).expect("spec");
        assert_eq!(leaf_renewal(Some(&gw.cert_pem), Some(&gw.key_pem), &ca.cert_pem, &spec, t0()), None);
    }

    #[test]
    fn gateway_certificate_without_ip() {
        let ca = ca();
        let gw = issue_gateway_certificate(&ca, "Example.COM.", None, t0()).expect("gw");
        let spec = LeafSpec::gateway_server("example.com", Some("")).expect("spec");
        assert_eq!(leaf_renewal(Some(&gw.cert_pem), Some(&gw.key_pem), &ca.cert_pem, &spec, t0()), None);
    }

    #[test]
    fn gateway_inputs_are_validated() {
        let ca = ca();
        for (name, ip, field) in [
            ("", None, "external name"),
            ("a b.example", None, "external name"),
            ("a;b", None, "external name"),
            ("ex\u{e4}mple.com", None, "external name"),
            ("example.com", Some("1.2.3"), "address IP"),
            ("example.com", Some("example.com"), "address IP"),
        ] {
            let err = issue_gateway_certificate(&ca, name, ip, t0()).expect_err(name);
            assert!(matches!(err, PkiError::InvalidInput { field: f, .. } if f == field), "{err}");
        }
        assert!(issue_client_certificate(&ca, "", t0()).is_err());
        assert!(issue_client_certificate(&ca, "bad\nname", t0()).is_err());
    }

    #[test]
    fn client_certificate() {
        let ca = ca();
        let client = issue_client_certificate(&ca, "promtail", t0()).expect("client");
        let der = der_of(&client.cert_pem);
        let cert = parse_der(&der).expect("X.509");
        let eku = cert.extended_key_usage().expect("eku").expect("eku present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        let spec = LeafSpec::client("promtail").expect("spec");
        assert_eq!(leaf_renewal(Some(&client.cert_pem), Some(&client.key_pem), &ca.cert_pem, &spec, t0()), None);
        let other_cn = LeafSpec::client("prometheus").expect("spec");
        assert_eq!(
            leaf_renewal(Some(&client.cert_pem), Some(&client.key_pem), &ca.cert_pem, &other_cn, t0()),
            Some(RenewalReason::SubjectChanged)
        );
        // A server certificate with the right names is no client certificate.
        let server_spec = LeafSpec { usage: Usage::Server, ..spec.clone() };
        assert_eq!(
            leaf_renewal(Some(&client.cert_pem), Some(&client.key_pem), &ca.cert_pem, &server_spec, t0()),
            Some(RenewalReason::UsageChanged)
        );
    }

    #[test]
    fn leaf_renewal_reasons() {
        let ca = ca();
        let other_ca = create_ca("abc123", t0()).expect("another CA with the same name");
        let spec = LeafSpec::gateway_server("abc123.example.com", Some("192.0.2.7")).expect("spec");
        let gw = issue(&ca, &spec, t0()).expect("gw");
        let foreign = issue(&other_ca, &spec, t0()).expect("foreign");
        let check = |cert: Option<&str>, key: Option<&str>, ca_pem: &str, spec: &LeafSpec, now| {
            leaf_renewal(cert, key, ca_pem, spec, now)
        };
        let (c, k) = (Some(gw.cert_pem.as_str()), Some(gw.key_pem.as_str()));
        assert_eq!(check(None, k, &ca.cert_pem, &spec, t0()), Some(RenewalReason::Missing));
        assert_eq!(check(c, None, &ca.cert_pem, &spec, t0()), Some(RenewalReason::Missing));
        assert_eq!(
            check(Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), k, &ca.cert_pem, &spec, t0()),
            Some(RenewalReason::Unparseable)
        );
        assert_eq!(check(c, Some(&foreign.key_pem), &ca.cert_pem, &spec, t0()), Some(RenewalReason::KeyMismatch));
        // Another CA: same subject, different key.
        assert_eq!(
            check(Some(&foreign.cert_pem), Some(&foreign.key_pem), &ca.cert_pem, &spec, t0()),
            Some(RenewalReason::WrongIssuer)
        );
        assert_eq!(check(c, k, "not a CA", &spec, t0()), Some(RenewalReason::WrongIssuer));
        assert_eq!(check(c, k, &ca.cert_pem, &spec, t0() + LEAF_VALIDITY - 31 * DAY), None);
        assert_eq!(check(c, k, &ca.cert_pem, &spec, t0() + LEAF_VALIDITY - 29 * DAY), Some(RenewalReason::Expiring));
        assert_eq!(check(c, k, &ca.cert_pem, &spec, t0() + LEAF_VALIDITY + DAY), Some(RenewalReason::Expiring));
        let moved = LeafSpec::gateway_server("abc123.example.com", Some("192.0.2.8")).expect("spec");
        assert_eq!(check(c, k, &ca.cert_pem, &moved, t0()), Some(RenewalReason::SansChanged));
        let no_ip = LeafSpec::gateway_server("abc123.example.com", None).expect("spec");
        assert_eq!(check(c, k, &ca.cert_pem, &no_ip, t0()), Some(RenewalReason::SansChanged));
        let renamed = LeafSpec::gateway_server("xyz.example.com", Some("192.0.2.7")).expect("spec");
        assert_eq!(check(c, k, &ca.cert_pem, &renamed, t0()), Some(RenewalReason::SubjectChanged));
    }

    #[test]
    fn leaf_never_outlives_its_ca() {
        let ca = ca();
        let late = t0() + CA_VALIDITY - 100 * DAY;
        let client = issue_client_certificate(&ca, "prometheus", late).expect("client");
        let der = der_of(&client.cert_pem);
        let cert = parse_der(&der).expect("X.509");
        let ca_der = der_of(&ca.cert_pem);
        let ca_cert = parse_der(&ca_der).expect("X.509");
        assert_eq!(cert.validity().not_after.timestamp(), ca_cert.validity().not_after.timestamp());
    }

    #[test]
    fn issuing_from_garbage_is_an_error() {
        let ca = ca();
        let leaf = issue_client_certificate(&ca, "prometheus", t0()).expect("leaf");
        for bad in [
            CertifiedKeyPem { cert_pem: "x".into(), key_pem: ca.key_pem.clone() },
            CertifiedKeyPem { cert_pem: ca.cert_pem.clone(), key_pem: "x".into() },
            leaf.clone(),
        ] {
            let err = issue_client_certificate(&bad, "prometheus", t0()).expect_err("refused");
            assert!(matches!(err, PkiError::Unusable { .. }), "{err}");
        }
        assert!(!format!("{leaf:?}").contains("PRIVATE KEY"), "Debug must not show keys");
    }

    #[test]
    fn ca_lifecycle_with_rotation() {
        // Fresh: a CA is created.
        let (state, change) = reconcile_ca(&CaState::default(), "abc123", t0()).expect("ok").expect("created");
        assert_eq!(change, CaChange::Created(RenewalReason::Missing));
        assert!(state.previous_cert_pem.is_none());
        assert_eq!(reconcile_ca(&state, "abc123", t0() + 100 * DAY).expect("ok"), None, "steady");
        let first = state.current().expect("current");
        let bundle = trust_bundle(&state, t0()).expect("bundle");
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 1);

        // An agent's certificate from the first CA.
        let agent = issue_client_certificate(&first, "prometheus", t0() + CA_VALIDITY - 60 * DAY).expect("agent");

        // Under 30 days left: rotation, the old CA stays trusted.
        let rotate_at = t0() + CA_VALIDITY - 29 * DAY;
        let (rotated, change) = reconcile_ca(&state, "abc123", rotate_at).expect("ok").expect("rotated");
        assert_eq!(change, CaChange::Rotated(RenewalReason::Expiring));
        assert_eq!(rotated.previous_cert_pem.as_deref(), Some(first.cert_pem.as_str()));
        assert_ne!(rotated.cert_pem, state.cert_pem);
        assert_eq!(reconcile_ca(&rotated, "abc123", rotate_at + DAY).expect("ok"), None, "steady while rotating");
        let bundle = trust_bundle(&rotated, rotate_at).expect("bundle");
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(bundle.contains(first.cert_pem.trim()));
        assert!(bundle.contains(rotated.cert_pem.as_deref().expect("cert").trim()));
        assert!(bundle.starts_with(rotated.cert_pem.as_deref().expect("cert").trim()), "current CA first");

        // The agent's certificate no longer verifies against the current CA: it is reissued.
        let new_ca = rotated.current().expect("current");
        let spec = LeafSpec::client("prometheus").expect("spec");
        assert_eq!(
            leaf_renewal(Some(&agent.cert_pem), Some(&agent.key_pem), &new_ca.cert_pem, &spec, rotate_at),
            Some(RenewalReason::WrongIssuer)
        );
        let reissued = issue(&new_ca, &spec, rotate_at).expect("reissued");
        assert_eq!(
            leaf_renewal(Some(&reissued.cert_pem), Some(&reissued.key_pem), &new_ca.cert_pem, &spec, rotate_at),
            None
        );

        // Once the old CA has expired it is dropped from the bundle and then from the Secret.
        let after = t0() + CA_VALIDITY + DAY;
        assert_eq!(trust_bundle(&rotated, after).expect("bundle").matches("BEGIN CERTIFICATE").count(), 1);
        let (done, change) = reconcile_ca(&rotated, "abc123", after).expect("ok").expect("dropped");
        assert_eq!(change, CaChange::PreviousDropped);
        assert_eq!(done, rotated.without_previous());
        assert_eq!(reconcile_ca(&done, "abc123", after).expect("ok"), None);
    }

    #[test]
    fn staged_rotation_trusts_the_successor_before_it_issues() {
        let (state, _) = reconcile_ca(&CaState::default(), "abc123", t0()).expect("ok").expect("created");
        let first = state.current().expect("current");
        assert_eq!(reconcile_ca(&state, "abc123", t0() + CA_VALIDITY - 61 * DAY).expect("ok"), None);

        // 59 days left: the successor is prepared and trusted, the current CA still issues.
        let prepare_at = t0() + CA_VALIDITY - 59 * DAY;
        let (prepared, change) = reconcile_ca(&state, "abc123", prepare_at).expect("ok").expect("prepared");
        assert_eq!(change, CaChange::NextPrepared);
        assert_eq!(prepared.current(), Some(first.clone()), "the current CA keeps issuing");
        let next_cert = prepared.next_cert_pem.clone().expect("next");
        let bundle = trust_bundle(&prepared, prepare_at).expect("bundle");
        assert!(bundle.contains(first.cert_pem.trim()) && bundle.contains(next_cert.trim()), "both trusted");
        assert_eq!(reconcile_ca(&prepared, "abc123", prepare_at + DAY).expect("ok"), None, "steady while prepared");
        let spec = LeafSpec::client("prometheus").expect("spec");
        let agent = issue(&first, &spec, prepare_at).expect("agent");
        assert_eq!(leaf_renewal(Some(&agent.cert_pem), Some(&agent.key_pem), &first.cert_pem, &spec, prepare_at), None);

        // 29 days left: the prepared successor is promoted, not a fresh CA.
        let rotate_at = t0() + CA_VALIDITY - 29 * DAY;
        let (rotated, change) = reconcile_ca(&prepared, "abc123", rotate_at).expect("ok").expect("rotated");
        assert_eq!(change, CaChange::Rotated(RenewalReason::Expiring));
        assert_eq!(rotated.cert_pem.as_deref(), Some(next_cert.as_str()), "the successor everyone trusts");
        assert_eq!(rotated.previous_cert_pem.as_deref(), Some(first.cert_pem.as_str()));
        assert!(rotated.next_cert_pem.is_none() && rotated.next_key_pem.is_none());
        assert!(!format!("{prepared:?}").contains("PRIVATE KEY"), "Debug must not show keys");
    }

    #[test]
    fn broken_ca_is_replaced_without_previous() {
        let state = CaState { cert_pem: Some("garbage".into()), key_pem: Some("garbage".into()), ..Default::default() };
        let (next, change) = reconcile_ca(&state, "abc123", t0()).expect("ok").expect("created");
        assert_eq!(change, CaChange::Created(RenewalReason::Unparseable));
        assert!(next.previous_cert_pem.is_none());
        assert!(trust_bundle(&state, t0()).is_err());

        // A CA that has already expired is not worth trusting any more.
        let old = ca();
        let state = CaState { cert_pem: Some(old.cert_pem), key_pem: Some(old.key_pem), ..Default::default() };
        let (next, change) = reconcile_ca(&state, "abc123", t0() + CA_VALIDITY + DAY).expect("ok").expect("created");
        assert_eq!(change, CaChange::Created(RenewalReason::Expiring));
        assert!(next.previous_cert_pem.is_none());
        assert!(!format!("{next:?}").contains("PRIVATE KEY"), "Debug must not show keys");
    }

    #[test]
    fn garbage_previous_is_dropped() {
        let ca = ca();
        let state = CaState {
            cert_pem: Some(ca.cert_pem.clone()),
            key_pem: Some(ca.key_pem.clone()),
            previous_cert_pem: Some("garbage".into()),
            ..Default::default()
        };
        assert_eq!(trust_bundle(&state, t0()).expect("bundle").matches("BEGIN CERTIFICATE").count(), 1);
        let (next, change) = reconcile_ca(&state, "abc123", t0()).expect("ok").expect("dropped");
        assert_eq!(change, CaChange::PreviousDropped);
        assert!(next.previous_cert_pem.is_none());
    }
}
