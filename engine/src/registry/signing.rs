//! Signed plugins: a detached ed25519 signature over a component's bytes, checked against the
//! public keys the operator trusts.
//!
//! With no trusted keys configured every component is accepted, signed or not. With any, a
//! component is accepted only with a valid signature by one of them: uploads carry it in the
//! `X-Routewatch-Signature` header, files in the plugin directory beside them as
//! `NAME.wasm.sig`. Both are 128 hex digits (`routewatch plugin sign` writes them).
//!
//! ```
//! use routewatch_engine::registry::signing::{KeyPair, TrustedKeys};
//!
//! let pair = KeyPair::from_secret_hex(&"07".repeat(32)).unwrap();
//! let signature = pair.sign_hex(b"component bytes");
//! let trusted = TrustedKeys::parse(&[pair.public_hex()]).unwrap();
//! assert!(trusted.verify(b"component bytes", Some(&signature)).is_ok());
//! assert!(trusted.verify(b"other bytes", Some(&signature)).is_err());
//! assert!(trusted.verify(b"component bytes", None).is_err());
//! ```

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// Longest signature text accepted (a header or a `.sig` file), before it is even parsed.
pub const MAX_SIGNATURE_BYTES: usize = 512;

/// Why a signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A signature is required and there is none.
    #[error("plugins must be signed by a trusted key, and this one carries no signature")]
    Missing,
    /// The signature does not parse.
    #[error("the signature is not 128 hex digits")]
    Malformed,
    /// No trusted key made the signature.
    #[error("the signature does not match any trusted key")]
    Untrusted,
    /// A configured key does not parse.
    #[error("key {0:?} is not 64 hex digits of an ed25519 public key")]
    BadKey(String),
}

/// The public keys plugins may be signed with; empty means signatures are not required.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<VerifyingKey>,
}

impl TrustedKeys {
    /// Keys as 64 hex digits each.
    pub fn parse(keys: &[String]) -> Result<TrustedKeys, SignatureError> {
        let keys = keys
            .iter()
            .map(|text| {
                let bytes: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| SignatureError::BadKey(text.chars().take(80).collect()))?;
                VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::BadKey(text.chars().take(80).collect()))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedKeys { keys })
    }

    /// Whether signatures are required.
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks `signature` (hex) over `component`, when keys are configured.
    pub fn verify(&self, component: &[u8], signature: Option<&str>) -> Result<(), SignatureError> {
        if !self.required() {
            return Ok(());
        }
        let signature = parse_signature(signature.ok_or(SignatureError::Missing)?)?;
        if self.keys.iter().any(|key| key.verify(component, &signature).is_ok()) {
            Ok(())
        } else {
            Err(SignatureError::Untrusted)
        }
    }
}

fn parse_signature(text: &str) -> Result<Signature, SignatureError> {
    if text.len() > MAX_SIGNATURE_BYTES {
        return Err(SignatureError::Malformed);
    }
    let bytes: [u8; 64] =
        hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(SignatureError::Malformed)?;
    Ok(Signature::from_bytes(&bytes))
}

/// A signing key, for `routewatch plugin keygen` and `sign`.
pub struct KeyPair {
    key: SigningKey,
}

impl KeyPair {
    /// A new key from 32 bytes of the operating system's randomness.
    pub fn generate() -> std::io::Result<KeyPair> {
        use std::io::Read;
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        Ok(KeyPair { key: SigningKey::from_bytes(&secret) })
    }

    /// The key whose secret is 64 hex digits (what [`KeyPair::secret_hex`] writes).
    pub fn from_secret_hex(text: &str) -> Result<KeyPair, SignatureError> {
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SignatureError::BadKey("(secret key)".into()))?;
        Ok(KeyPair { key: SigningKey::from_bytes(&bytes) })
    }

    /// The secret key, as 64 hex digits.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// The public key, as `trusted_keys` takes it.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The detached signature of `component`, as hex.
    pub fn sign_hex(&self, component: &[u8]) -> String {
        hex::encode(self.key.sign(component).to_bytes())
    }
}
