//! Sealing and opening secret values with XChaCha20-Poly1305 (RustCrypto
//! `chacha20poly1305`): a fresh random 24-byte nonce per sealed value, and AAD binding the
//! ciphertext to `scope|name|version`, so a row copied or moved to another secret, scope or
//! version fails authentication instead of decrypting. Also the master-key check value.
//! It must not store anything, log plaintext, or reuse a nonce.

use std::fmt;

use chacha20poly1305::{
    aead::{Aead, Generate, KeyInit, Payload},
    Key, XChaCha20Poly1305, XNonce,
};
use rdev_core::{SecretName, SecretScope};
use zeroize::Zeroizing;

use super::key::MasterKey;

/// The AAD of the master-key check row; cannot collide with a secret's AAD (no `|`).
const KEY_CHECK_AAD: &[u8] = b"rdev:master-key-check:v1";
/// The plaintext of the master-key check row.
const KEY_CHECK_PLAINTEXT: &[u8] = b"rdev master key check v1";

/// The AAD of one secret version: `scope|name|version`. Neither a scope nor a name can
/// contain `|`, so the encoding is unambiguous.
pub fn secret_aad(scope: &SecretScope, name: &SecretName, version: u32) -> Vec<u8> {
    format!("{scope}|{name}|{version}").into_bytes()
}

/// Authentication failed: wrong key, altered bytes, or the row belongs elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFailed;

/// An AEAD cipher under one master key.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(XChaCha20-Poly1305)")
    }
}

impl Cipher {
    /// A cipher keyed with `key`.
    pub fn new(key: &MasterKey) -> Self {
        let key = Key::from(*key.bytes());
        Self {
            aead: XChaCha20Poly1305::new(&key),
        }
    }

    /// Encrypts `plaintext` under a fresh random nonce; returns `(nonce, ciphertext+tag)`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let nonce = XNonce::generate();
        let ciphertext = self
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message below 256 GiB");
        (nonce.to_vec(), ciphertext)
    }

    /// Decrypts and authenticates; the plaintext is zeroed when dropped.
    pub fn open(
        &self,
        aad: &[u8],
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenFailed> {
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenFailed)?;
        self.aead
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenFailed)
    }

    /// A new master-key check value: `(nonce, ciphertext)`.
    pub fn seal_key_check(&self) -> (Vec<u8>, Vec<u8>) {
        self.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
    }

    /// Whether this cipher's key made the check value.
    pub fn opens_key_check(&self, nonce: &[u8], ciphertext: &[u8]) -> bool {
        self.open(KEY_CHECK_AAD, nonce, ciphertext)
            .is_ok_and(|p| p.as_slice() == KEY_CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> SecretScope {
        SecretScope::parse(s).unwrap()
    }
    fn name(s: &str) -> SecretName {
        SecretName::parse(s).unwrap()
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let c = Cipher::new(&MasterKey::generate());
        let aad = secret_aad(&scope("global"), &name("T"), 1);
        let (n1, c1) = c.seal(&aad, b"value");
        let (n2, c2) = c.seal(&aad, b"value");
        assert_eq!(n1.len(), 24);
        assert_ne!(n1, n2, "nonce reused");
        assert_ne!(c1, c2);
        assert_eq!(c.open(&aad, &n1, &c1).unwrap().as_slice(), b"value");
    }

    #[test]
    fn altered_bytes_other_aad_or_other_key_fail() {
        let key = MasterKey::generate();
        let c = Cipher::new(&key);
        let aad = secret_aad(&scope("project:site"), &name("T"), 2);
        let (nonce, ct) = c.seal(&aad, b"value");
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_eq!(c.open(&aad, &nonce, &bad), Err(OpenFailed), "byte {i}");
        }
        let mut bad_nonce = nonce.clone();
        bad_nonce[0] ^= 1;
        assert_eq!(c.open(&aad, &bad_nonce, &ct), Err(OpenFailed));
        assert_eq!(c.open(&aad, &nonce[..12], &ct), Err(OpenFailed));
        for other in [
            secret_aad(&scope("global"), &name("T"), 2),
            secret_aad(&scope("project:site"), &name("U"), 2),
            secret_aad(&scope("project:site"), &name("T"), 1),
        ] {
            assert_eq!(c.open(&other, &nonce, &ct), Err(OpenFailed));
        }
        let other = Cipher::new(&MasterKey::generate());
        assert_eq!(other.open(&aad, &nonce, &ct), Err(OpenFailed));
    }

    #[test]
    fn key_check_detects_a_wrong_key() {
        let c = Cipher::new(&MasterKey::generate());
        let (n, ct) = c.seal_key_check();
        assert!(c.opens_key_check(&n, &ct));
        assert!(!Cipher::new(&MasterKey::generate()).opens_key_check(&n, &ct));
    }
}
