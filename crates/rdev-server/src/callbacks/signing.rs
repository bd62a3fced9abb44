//! Standard Webhooks signing (<https://www.standardwebhooks.com/>): a `whsec_` secret per
//! project, headers `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`. Verification is here too, for receivers written in
//! Rust and for our own tests. HMAC comes from the RustCrypto `hmac` crate.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rdev_core::{ErrorCode, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// How far a timestamp may be from now and still verify (the spec's suggestion).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Signing or verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signing secret must be \"whsec_\" followed by base64")]
    BadSecret,
    #[error("webhook timestamp is missing, malformed or outside the tolerance")]
    BadTimestamp,
    #[error("no webhook signature matches")]
    NoMatch,
}

impl ErrorCode for SignatureError {
    fn code(&self) -> &'static str {
        match self {
            Self::BadSecret => "invalid_signing_secret",
            Self::BadTimestamp => "invalid_webhook_timestamp",
            Self::NoMatch => "invalid_webhook_signature",
        }
    }
}

/// A new random signing secret (`whsec_` + base64 of 32 random bytes).
pub fn generate_secret() -> SecretString {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    SecretString::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

fn key_bytes(secret: &SecretString) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret
        .expose()
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SignatureError::BadSecret)?;
    let key = STANDARD
        .decode(b64)
        .map_err(|_| SignatureError::BadSecret)?;
    if key.is_empty() {
        return Err(SignatureError::BadSecret);
    }
    Ok(key)
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The three headers for one delivery of `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub webhook_id: String,
    pub webhook_timestamp: String,
    pub webhook_signature: String,
}

/// Signs `body` as message `id` sent at `timestamp` (unix seconds).
pub fn sign(
    secret: &SecretString,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<SignedHeaders, SignatureError> {
    let key = key_bytes(secret)?;
    let sig = mac(&key, id, timestamp, body).finalize().into_bytes();
    Ok(SignedHeaders {
        webhook_id: id.to_owned(),
        webhook_timestamp: timestamp.to_string(),
        webhook_signature: format!("v1,{}", STANDARD.encode(sig)),
    })
}

/// Verifies a delivery: the timestamp is within [`TOLERANCE_SECS`] of `now` and one of the
/// space-separated `v1,` signatures matches (compared in constant time).
pub fn verify(
    secret: &SecretString,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let key = key_bytes(secret)?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(SignatureError::BadTimestamp);
    }
    let expected = mac(&key, id, ts, body);
    for candidate in signatures.split(' ') {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(b64) else {
            continue;
        };
        if expected.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks reference libraries' test suite.
        let secret = SecretString::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let h = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(
            h.webhook_signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn sign_then_verify_and_tampering_fails() {
        let secret = generate_secret();
        assert!(secret.expose().starts_with("whsec_"));
        let body = br#"{"task_id":"x"}"#;
        let h = sign(&secret, "msg_1", 1_000, body).unwrap();
        verify(&secret, "msg_1", "1000", &h.webhook_signature, body, 1_010).unwrap();
        let other = format!("v1,AAAA {}", h.webhook_signature);
        verify(&secret, "msg_1", "1000", &other, body, 1_010).unwrap();
        assert_eq!(
            verify(&secret, "msg_1", "1000", &h.webhook_signature, b"{}", 1_010),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&secret, "msg_2", "1000", &h.webhook_signature, body, 1_010),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                &secret,
                "msg_1",
                "1000",
                &h.webhook_signature,
                body,
                1_000 + 301
            ),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(
                &generate_secret(),
                "msg_1",
                "1000",
                &h.webhook_signature,
                body,
                1_000
            ),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn malformed_secret_is_refused() {
        assert_eq!(
            sign(&SecretString::new("nope"), "m", 1, b"").unwrap_err(),
            SignatureError::BadSecret
        );
        assert_eq!(
            sign(&SecretString::new("whsec_!!"), "m", 1, b"").unwrap_err(),
            SignatureError::BadSecret
        );
    }
}
