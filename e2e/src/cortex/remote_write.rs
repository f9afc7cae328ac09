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

/// [`body`] compressed as Prometheus compresses it (snappy with back-references, so a
/// batch of similar series shrinks several times): for benchmarks, where the bytes on the
/// wire should be what a real agent sends.
pub fn compressed_body(series: &[Series]) -> Vec<u8> {
    snappy_compress(&write_request(series))
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
    snappy_literal(&mut out, data);
    out
}

/// Snappy block format with back-references: a greedy match finder over 4-byte hashes,
/// copies with 2-byte offsets (up to 64 KiB back), literals between them. Not as tight as
/// the reference compressor, close enough for request sizes.
fn snappy_compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 16);
    varint(&mut out, data.len() as u64);
    let mut table = vec![usize::MAX; 1 << 14];
    let hash = |i: usize| {
        let v = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        (v.wrapping_mul(0x1e35_a7bd) >> 18) as usize
    };
    let (mut i, mut literal_start) = (0, 0);
    while i + 4 <= data.len() {
        let h = hash(i);
        let candidate = table[h];
        table[h] = i;
        if candidate != usize::MAX && i - candidate <= 65_535 && data[candidate..candidate + 4] == data[i..i + 4] {
            snappy_literal(&mut out, &data[literal_start..i]);
            let mut len = 4;
            while i + len < data.len() && data[candidate + len] == data[i + len] {
                len += 1;
            }
            snappy_copy(&mut out, i - candidate, len);
            i += len;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    snappy_literal(&mut out, &data[literal_start..]);
    out
}

fn snappy_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.chunks(65_536) {
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
}

/// Copies of `len` (>= 4) bytes from `offset` back, as 2-byte-offset elements of at most 64.
fn snappy_copy(out: &mut Vec<u8>, offset: usize, mut len: usize) {
    let mut one = |len: usize| {
        out.push((((len - 1) as u8) << 2) | 2);
        out.extend_from_slice(&(offset as u16).to_le_bytes());
    };
    while len >= 68 {
        one(64);
        len -= 64;
    }
    if len > 64 {
        one(60);
        len -= 60;
    }
    one(len);
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

    /// A snappy block decoder for the elements the compressor writes.
    fn unsnappy(mut input: &[u8]) -> Vec<u8> {
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = input[0];
            input = &input[1..];
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        let mut out = Vec::with_capacity(len);
        while !input.is_empty() {
            let tag = input[0];
            match tag & 3 {
                0 => {
                    let (n, skip) = match tag >> 2 {
                        60 => (input[1] as usize + 1, 2),
                        61 => (u16::from_le_bytes([input[1], input[2]]) as usize + 1, 3),
                        n => (n as usize + 1, 1),
                    };
                    out.extend_from_slice(&input[skip..skip + n]);
                    input = &input[skip + n..];
                }
                2 => {
                    let n = (tag >> 2) as usize + 1;
                    let offset = u16::from_le_bytes([input[1], input[2]]) as usize;
                    for _ in 0..n {
                        out.push(out[out.len() - offset]);
                    }
                    input = &input[3..];
                }
                other => panic!("tag {other} not written by the compressor"),
            }
        }
        assert_eq!(out.len(), len);
        out
    }

    #[test]
    fn snappy_compression_round_trips_and_shrinks() {
        let series: Vec<Series> = (0..2000)
            .map(|i| Series::now("bench_samples", &[("instance", &i.to_string()), ("job", "bench")], 1.0))
            .collect();
        let raw = write_request(&series);
        let compressed = compressed_body(&series);
        assert_eq!(unsnappy(&compressed), raw);
        assert!(compressed.len() * 3 < raw.len(), "{} of {}", compressed.len(), raw.len());
        for data in [
            &b""[..],
            b"a",
            b"abcd",
            b"abcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcd",
        ] {
            assert_eq!(unsnappy(&snappy_compress(data)), data);
        }
        let long = vec![7u8; 200_000];
        assert_eq!(unsnappy(&snappy_compress(&long)), long);
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
