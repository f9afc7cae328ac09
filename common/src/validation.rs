//! Checks and helpers the configuration renderers of both managers share.

/// Why a DNS-1123 label was refused (a fixed phrase, for error messages).
pub fn dns_label_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() || value.len() > 63 {
        return Some("must be a DNS-1123 label of 1 to 63 characters");
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Some("must be a DNS-1123 label: lower case letters, digits and '-'");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Some("must be a DNS-1123 label: starting and ending with a letter or digit");
    }
    None
}

/// Whether `value` is a non-empty path of `A-Za-z0-9._/-` only: nothing that could end a
/// directive or start another in a generated configuration.
pub fn is_plain_path(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
}

/// A short, stable hash of a rendered configuration, for a pod template annotation that
/// rolls the pods when the configuration changes. FNV-1a: stable across builds and
/// platforms, unlike std's hasher.
pub fn config_hash(config: &str) -> String {
    let hash = config.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "abc-123", "x7k2m9", &"a".repeat(63)] {
            assert_eq!(dns_label_problem(ok), None, "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "a;b", &"a".repeat(64)] {
            assert!(dns_label_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn plain_paths() {
        assert!(is_plain_path("/etc/ssl/mla-gateway/ca-bundle.crt") && is_plain_path("run/nginx.pid"));
        for bad in ["", "/a b", "/a;b", "/a{b", "/a$b", "/a\nb"] {
            assert!(!is_plain_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn config_hash_is_stable() {
        assert_eq!(config_hash(""), "cbf29ce484222325");
        assert_ne!(config_hash("a"), config_hash("b"));
    }
}
