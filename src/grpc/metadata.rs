//! What a call's metadata says: the bearer token and the end user's address and agent.

use std::net::IpAddr;

use ipnet::IpNet;
use tonic::{Request, metadata::MetadataMap};

use crate::domain::ClientInfo;

/// Metadata entry carrying the end user's IP address (the leftmost untrusted hop is used).
pub const FORWARDED_FOR: &str = "x-forwarded-for";
/// Metadata entry carrying the end user's browser user agent.
pub const FORWARDED_USER_AGENT: &str = "x-forwarded-user-agent";
/// Longest user agent kept.
const MAX_USER_AGENT_CHARS: usize = 512;

/// The token of `authorization: Bearer <token>`, if present.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Reads the end user's address and agent. Forwarded values are believed only when the peer
/// is a trusted proxy; otherwise the peer's own address is the client's.
pub fn client_info<T>(request: &Request<T>, trusted: &[IpNet]) -> ClientInfo {
    let peer = request.remote_addr().map(|a| a.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let metadata = request.metadata();
    let peer_trusted = peer.as_ref().is_some_and(is_trusted);

    let ip = if peer_trusted { forwarded_client(metadata, &is_trusted).or(peer) } else { peer };
    // A proxy that forwards the user's address speaks for the user: its own `user-agent` is
    // its gRPC library's, not the user's browser, so it is not used in place of a missing
    // forwarded one.
    let agent = if peer_trusted && metadata.contains_key(FORWARDED_FOR) {
        metadata.get(FORWARDED_USER_AGENT)
    } else if peer_trusted {
        metadata.get(FORWARDED_USER_AGENT).or_else(|| metadata.get("user-agent"))
    } else {
        metadata.get("user-agent")
    };
    ClientInfo {
        ip: ip.map(|ip| ip.to_canonical().to_string()),
        user_agent: agent.and_then(|v| v.to_str().ok()).map(sanitize).filter(|s| !s.is_empty()),
    }
}

/// Walks x-forwarded-for from the right, skipping trusted proxies: the first other address is
/// the client. Malformed entries end the walk, since nothing left of them can be trusted.
fn forwarded_client(metadata: &MetadataMap, is_trusted: &dyn Fn(&IpAddr) -> bool) -> Option<IpAddr> {
    let header = metadata.get(FORWARDED_FOR)?.to_str().ok()?;
    let mut last = None;
    for hop in header.rsplit(',') {
        let ip: IpAddr = hop.trim().parse().ok()?;
        if !is_trusted(&ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    last
}

/// Keeps printable characters only (no CR/LF log injection) and bounds the length.
fn sanitize(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(MAX_USER_AGENT_CHARS).collect::<String>().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        let mut m = MetadataMap::new();
        assert_eq!(bearer(&m), None);
        m.insert("authorization", "Bearer gate_abc".parse().unwrap());
        assert_eq!(bearer(&m), Some("gate_abc"));
        m.insert("authorization", "bearer  gate_abc ".parse().unwrap());
        assert_eq!(bearer(&m), Some("gate_abc"));
        m.insert("authorization", "Basic Zm9v".parse().unwrap());
        assert_eq!(bearer(&m), None);
    }

    #[test]
    fn forwarded_for_skips_trusted_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        let mut m = MetadataMap::new();
        m.insert(FORWARDED_FOR, "203.0.113.9, 198.51.100.7, 10.0.0.2".parse().unwrap());
        assert_eq!(forwarded_client(&m, &is_trusted), "198.51.100.7".parse().ok());
        m.insert(FORWARDED_FOR, "garbage".parse().unwrap());
        assert_eq!(forwarded_client(&m, &is_trusted), None);
    }

    #[test]
    fn sanitizes_agents() {
        assert_eq!(sanitize("Mozilla\r\nX-Evil: 1"), "MozillaX-Evil: 1");
        assert_eq!(sanitize(&"a".repeat(600)).len(), 512);
    }
}
