//! Prometheus remote-write requests (`prometheus.WriteRequest`, protobuf, snappy block
//! format) made by hand, for tests that push their own samples: a tenant-spoofing request
//! through a gateway, a burst over an ingestion limit. Only what a request needs is
//! encoded: series of labels with one sample each; the snappy block holds literals only
//! (valid snappy, not compressed), which every decoder accepts.

/// One series with one sample.
#[derive(Clone, Debug)]
pub struct Series {
    /// Labels, `__name__` included; sorted by name when encoded (Prometheus requires it).
    pub labels: Vec<(String, String)>,
    /// The sample's value.
    pub value: f64,
    /// The sample's timestamp in milliseconds since the epoch.
    pub timestamp_ms: i64,
}

impl Series {
    /// A series named `name` with `labels`, sampled now.
    pub fn now(name: &str, labels: &[(&str, &str)], value: f64) -> Self {
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut all = vec![("__name__".to_string(), name.to_string())];
        all.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self { labels: all, value, timestamp_ms }
    }
}

/// The HTTP body of a remote-write request (snappy-compressed protobuf), to be sent with
/// `Content-Type: application/x-protobuf`, `Content-Encoding: snappy` and
/// `X-Prometheus-Remote-Write-Version: 0.1.0`.
pub fn body(series: &[Series]) -> Vec<u8> {
    snappy_literals(&write_request(series))
}

/// The headers a remote-write body goes with.
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

fn write_request(series: &[Series]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in series {
        let mut encoded = Vec::new();
        let mut labels = s.labels.clone();
        labels.sort();
        for (name, value) in &labels {
            let mut label = Vec::new();
            field_bytes(&mut label, 1, name.as_bytes());
            field_bytes(&mut label, 2, value.as_bytes());
            field_bytes(&mut encoded, 1, &label);
        }
        let mut sample = Vec::new();
        // value: field 1, 64-bit; timestamp: field 2, varint.
        sample.push(1 << 3 | 1);
        sample.extend_from_slice(&s.value.to_le_bytes());
        sample.push(2 << 3);
        varint(&mut sample, s.timestamp_ms as u64);
        field_bytes(&mut encoded, 2, &sample);
        field_bytes(&mut out, 1, &encoded);
    }
    out
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Snappy block format with literal elements only: the uncompressed length as a varint,
/// then literals of at most 65,536 bytes (tag 61: two length bytes follow).
fn snappy_literals(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_536 * 3 + 8);
    varint(&mut out, data.len() as u64);
    for chunk in data.chunks(65_536) {
        let n = chunk.len() - 1;
        if n < 60 {
            out.push((n as u8) << 2);
        } else if n < 256 {
            out.push(60 << 2);
            out.push(n as u8);
        } else {
            out.push(61 << 2);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_by_hand() {
        let series = Series { labels: vec![("__name__".into(), "m".into())], value: 1.0, timestamp_ms: 2 };
        let encoded = write_request(&[series]);
        // timeseries{labels{name "__name__" value "m"} samples{value 1.0 timestamp 2}}
        let mut expected = vec![0x0a, 0x1c, 0x0a, 0x0d, 0x0a, 0x08];
        expected.extend_from_slice(b"__name__");
        expected.extend_from_slice(&[0x12, 0x01, b'm', 0x12, 0x0b, 0x09]);
        expected.extend_from_slice(&1.0f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 0x02]);
        assert_eq!(encoded, expected);
    }

    #[test]
    fn snappy_literal_lengths() {
        assert_eq!(snappy_literals(b"abc"), vec![3, 2 << 2, b'a', b'b', b'c']);
        let long = vec![7u8; 300];
        let out = snappy_literals(&long);
        assert_eq!(&out[..5], &[0xac, 0x02, 61 << 2, 0x2b, 0x01]);
        assert_eq!(out.len(), 5 + 300);
    }
}
