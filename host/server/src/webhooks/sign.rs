//! Standard Webhooks signatures: `v1,` and base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed by a `whsec_` secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// An endpoint's signing key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// Reads `whsec_<base64 of 24 to 64 random bytes>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "not a webhook secret ({why}): write `whsec_` and the base64 of 24 to 64 random bytes (`corral token --webhook-secret` prints one)"
            )
        };
        let b64 = s
            .strip_prefix("whsec_")
            .ok_or_else(|| bad("no `whsec_` prefix"))?;
        let key = STANDARD.decode(b64).map_err(|_| bad("not base64"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(bad(&format!("{} bytes", key.len())));
        }
        Ok(Self(key))
    }

    /// `key` as the config writes it; the key must come from the
    /// operating system's generator (`corral token --webhook-secret`).
    pub fn encode(key: &[u8]) -> String {
        format!("whsec_{}", STANDARD.encode(key))
    }

    /// The `webhook-signature` header for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            unreachable!("HMAC accepts every key length")
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification.
    #[test]
    fn the_specification_example_signs_the_same() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_say_why() {
        assert!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap_err()
                .contains("whsec_")
        );
        assert!(Secret::parse("whsec_!!").unwrap_err().contains("base64"));
        assert!(Secret::parse("whsec_AAAA").unwrap_err().contains("3 bytes"));
        assert!(Secret::parse(&Secret::encode(&[7; 32])).is_ok());
    }
}
