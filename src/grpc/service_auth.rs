//! Authenticates calling services (not people): an `x-api-key` whose SHA-256 is configured,
//! or a client certificate (mutual TLS) naming an allowed service.

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::{domain::admin::ServiceIdentity, tls::certificate_names};

/// Configured service credentials.
#[derive(Debug, Clone, Default)]
pub struct ServiceAuth {
    /// (name, SHA-256 of the key).
    api_keys: Vec<(String, [u8; 32])>,
    /// Allowed certificate subject common names and SANs.
    cert_names: Vec<String>,
}

impl ServiceAuth {
    /// Parses `name=<hex sha256>` entries and the certificate allow-list.
    pub fn new(api_keys: &[String], cert_names: &[String]) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(api_keys.len());
        for entry in api_keys.iter().filter(|e| !e.trim().is_empty()) {
            let (name, hex) =
                entry.split_once('=').ok_or_else(|| anyhow::anyhow!("admin API key entries are NAME=SHA256HEX"))?;
            let bytes: Vec<u8> = (0..hex.trim().len())
                .step_by(2)
                .map(|i| hex.trim().get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| anyhow::anyhow!("admin API key hash of {name} is not hex"))?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("admin API key hash of {name} is not 32 bytes of SHA-256"))?;
            keys.push((name.trim().to_owned(), hash));
        }
        Ok(Self {
            api_keys: keys,
            cert_names: cert_names.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect(),
        })
    }

    /// The calling service, or the reason it is refused.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<ServiceIdentity, Status> {
        if let Some(key) = request.metadata().get("x-api-key") {
            let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            // Compare every entry in full, so timing does not reveal how close a guess was.
            let mut found = None;
            for (name, hash) in &self.api_keys {
                let diff = hash.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if diff == 0 {
                    found = Some(name.clone());
                }
            }
            return found
                .map(|name| ServiceIdentity(format!("api-key:{name}")))
                .ok_or_else(|| Status::unauthenticated("invalid API key"));
        }
        if let Some(leaf) = request.peer_certs().and_then(|certs| certs.first().cloned()) {
            let names = certificate_names(leaf.as_ref());
            return match names.iter().find(|n| self.cert_names.contains(n)) {
                Some(name) => Ok(ServiceIdentity(format!("cert:{name}"))),
                None => Err(Status::permission_denied("this client certificate is not allowed to call this API")),
            };
        }
        if request.metadata().contains_key("authorization") {
            return Err(Status::permission_denied("a user session cannot call this API; use service credentials"));
        }
        Err(Status::unauthenticated("service credentials required: x-api-key or a client certificate"))
    }
}
