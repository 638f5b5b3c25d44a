//! Signing keys: ECDSA P-256 (the default, as cosign's) or Ed25519, stored
//! as PKCS#8 PEM (`PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY` with a
//! passphrase: PBES2 with scrypt and AES-256-CBC) and SubjectPublicKeyInfo
//! PEM (`PUBLIC KEY`, which `cosign verify --key` reads as is).

use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::OsRng;

use crate::error::{Result, TrustError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Ed25519,
}

pub enum SigningKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyingKey {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl SigningKey {
    pub fn generate(kind: KeyKind) -> SigningKey {
        match kind {
            KeyKind::EcdsaP256 => SigningKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            KeyKind::Ed25519 => SigningKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
        }
    }

    /// PKCS#8 PEM, encrypted when `password` is given.
    pub fn to_pem(&self, password: Option<&str>) -> Result<String> {
        let der = match self {
            SigningKey::P256(k) => k.to_pkcs8_der(),
            SigningKey::Ed25519(k) => k.to_pkcs8_der(),
        }
        .map_err(|e| TrustError::Key(format!("encoding the private key: {e}")))?;
        let pem = match password {
            None => der.to_pem("PRIVATE KEY", LineEnding::LF),
            Some(p) => {
                let info = pkcs8::PrivateKeyInfo::try_from(der.as_bytes())
                    .map_err(|e| TrustError::Key(format!("encoding the private key: {e}")))?;
                info.encrypt(OsRng, p.as_bytes())
                    .map_err(|e| TrustError::Key(format!("encrypting the private key: {e}")))?
                    .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            }
        }
        .map_err(|e| TrustError::Key(format!("encoding the private key: {e}")))?;
        Ok(pem.to_string())
    }

    /// Reads a PKCS#8 PEM key of either kind; `password` for encrypted ones.
    pub fn from_pem(text: &str, password: Option<&str>) -> Result<SigningKey> {
        if text.contains("ENCRYPTED PRIVATE KEY") {
            let p = password.ok_or_else(|| {
                TrustError::Key("the key is encrypted: set INGOT_KEY_PASSWORD to its passphrase".into())
            })?;
            if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_encrypted_pem(text, p.as_bytes()) {
                return Ok(SigningKey::P256(k));
            }
            return ed25519_dalek::SigningKey::from_pkcs8_encrypted_pem(text, p.as_bytes())
                .map(SigningKey::Ed25519)
                .map_err(|_| {
                    TrustError::Key("cannot decrypt the key: wrong passphrase, or not a P-256/Ed25519 key".into())
                });
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(text) {
            return Ok(SigningKey::P256(k));
        }
        ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map(SigningKey::Ed25519)
            .map_err(|_| TrustError::Key("not a PKCS#8 PEM private key of kind P-256 or Ed25519".into()))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            SigningKey::P256(k) => VerifyingKey::P256(*k.verifying_key()),
            SigningKey::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
        }
    }

    /// The signature of `msg`: ASN.1 DER for ECDSA (as cosign), 64 bytes
    /// for Ed25519.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.to_der().as_bytes().to_vec()
            }
            SigningKey::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
        }
    }
}

impl VerifyingKey {
    pub fn to_pem(&self) -> Result<String> {
        match self {
            VerifyingKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
            VerifyingKey::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .map_err(|e| TrustError::Key(format!("encoding the public key: {e}")))
    }

    pub fn from_pem(text: &str) -> Result<VerifyingKey> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(text) {
            return Ok(VerifyingKey::P256(k));
        }
        ed25519_dalek::VerifyingKey::from_public_key_pem(text)
            .map(VerifyingKey::Ed25519)
            .map_err(|_| TrustError::Key("not a PEM public key of kind P-256 or Ed25519".into()))
    }

    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            VerifyingKey::P256(k) => p256::ecdsa::Signature::from_der(sig)
                .or_else(|_| p256::ecdsa::Signature::from_slice(sig))
                .is_ok_and(|s| k.verify(msg, &s).is_ok()),
            VerifyingKey::Ed25519(k) => {
                ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_sign_and_verify() {
        for kind in [KeyKind::EcdsaP256, KeyKind::Ed25519] {
            let k = SigningKey::generate(kind);
            let pem = k.to_pem(None).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let k2 = SigningKey::from_pem(&pem, None).unwrap();
            let enc = k.to_pem(Some("s3cret")).unwrap();
            assert!(enc.contains("ENCRYPTED PRIVATE KEY"));
            assert!(SigningKey::from_pem(&enc, None).is_err(), "needs the passphrase");
            assert!(SigningKey::from_pem(&enc, Some("wrong")).is_err());
            let k3 = SigningKey::from_pem(&enc, Some("s3cret")).unwrap();
            let public = VerifyingKey::from_pem(&k.verifying_key().to_pem().unwrap()).unwrap();
            for signer in [&k, &k2, &k3] {
                let sig = signer.sign(b"payload");
                assert!(public.verify(b"payload", &sig), "{kind:?}");
                assert!(!public.verify(b"payloaD", &sig), "{kind:?}");
            }
            let other = SigningKey::generate(kind).verifying_key();
            assert!(!other.verify(b"payload", &k.sign(b"payload")));
        }
    }
}
