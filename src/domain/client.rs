//! Who is behind a call, as far as Gatehouse can tell.

/// The end user behind a call, as forwarded by the calling backend.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// IP address.
    pub ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
}
