//! Content digests (`sha256:<hex>`) and the canonical JSON they are taken of.

use serde_json::Value;

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Hex SHA-256 of the bytes `value`'s `Hash` implementation writes. Stable
/// where `DefaultHasher` is not: the standard library reserves the right
/// to change SipHash's output between Rust releases.
pub fn hash_digest(value: &impl std::hash::Hash) -> String {
    use sha2::Digest;
    struct Sha(sha2::Sha256);
    impl std::hash::Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            unreachable!("only the SHA-256 is read")
        }
    }
    let mut h = Sha(sha2::Sha256::new());
    value.hash(&mut h);
    hex::encode(h.0.finalize())
}

/// JSON with object keys sorted and no whitespace: the same value always
/// gives the same bytes. Integers stay exact (RFC 8785 would round those
/// above 2^53 to doubles and make different inputs collide).
pub fn canonical_json(v: &Value) -> Vec<u8> {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(v)).unwrap_or_default()
}
