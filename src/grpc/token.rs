//! `TokenService` over gRPC: access tokens, JWKS, introspection and the revocation stream.

use std::{pin::Pin, sync::Arc};

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{convert::timestamp, metadata::bearer, service_auth::ServiceAuth};
use crate::{
    domain::{
        Auth,
        mesh::Mesh,
        revocations::{Revocation, RevocationHub, WatchEnd},
    },
    proto::v1::{self as pb, token_service_server::TokenService},
};

/// The gRPC face of [`Mesh`].
pub struct TokenApi {
    auth: Arc<Auth>,
    mesh: Arc<Mesh>,
    hub: Arc<RevocationHub>,
    services: Arc<ServiceAuth>,
}

impl TokenApi {
    /// Serves token operations; introspection and watching need service credentials.
    pub fn new(auth: Arc<Auth>, mesh: Arc<Mesh>, hub: Arc<RevocationHub>, services: Arc<ServiceAuth>) -> Self {
        Self { auth, mesh, hub, services }
    }
}

impl From<Revocation> for pb::RevocationEvent {
    fn from(r: Revocation) -> Self {
        pb::RevocationEvent {
            id: r.id,
            session_id: r.session_id.to_string(),
            user_id: r.user_id.to_string(),
            reason: r.reason,
            revoked_at: Some(timestamp(r.revoked_at)),
        }
    }
}

impl From<WatchEnd> for Status {
    fn from(end: WatchEnd) -> Self {
        match end {
            WatchEnd::Store(e) => e.into(),
            // The watcher resumes on another replica (or this one, restarted) from its last id
            // without a gap.
            WatchEnd::Stopping { last } => {
                Status::unavailable(format!("the server is shutting down; reconnect with after_id = {last}"))
            }
            WatchEnd::Lagged => Status::data_loss("watcher fell behind; resume from your last event id"),
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RevocationEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn issue_access_token(
        &self,
        req: Request<pb::IssueAccessTokenRequest>,
    ) -> Result<Response<pb::IssueAccessTokenResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let issued = self.mesh.issue(&caller, &req.into_inner().audience).await?;
        Ok(Response::new(pb::IssueAccessTokenResponse {
            access_token: issued.token,
            token_type: "Bearer".into(),
            expires_at: Some(timestamp(issued.expires_at)),
        }))
    }

    async fn get_jwks(&self, _req: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse { jwks_json: self.mesh.keys().jwks_json().await }))
    }

    async fn introspect_token(
        &self,
        req: Request<pb::IntrospectTokenRequest>,
    ) -> Result<Response<pb::IntrospectTokenResponse>, Status> {
        self.services.authenticate(&req)?;
        let Some(i) = self.mesh.introspect(&req.into_inner().token).await? else {
            return Ok(Response::new(pb::IntrospectTokenResponse::default()));
        };
        Ok(Response::new(pb::IntrospectTokenResponse {
            active: true,
            token_type: i.token_type.into(),
            sub: i.sub.to_string(),
            sid: i.sid.to_string(),
            aud: i.aud.unwrap_or_default(),
            iss: i.iss.unwrap_or_default(),
            email: i.email,
            email_verified: i.email_verified,
            exp: Some(timestamp(i.exp)),
            iat: Some(timestamp(i.iat)),
        }))
    }

    type WatchRevocationsStream = EventStream;

    async fn watch_revocations(
        &self,
        req: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let who = self.services.authenticate(&req)?;
        let (after, events) = self.hub.watch(req.into_inner().after_id);
        tracing::info!(service = who.0, after, "revocation watcher connected");
        let stream = events.map(|item| item.map(pb::RevocationEvent::from).map_err(Status::from));
        let mut response = Response::new(Box::pin(stream) as EventStream);
        // Where the stream starts: a watcher that has seen no event yet can still resume from
        // here without a gap.
        if let Ok(value) = after.to_string().parse() {
            response.metadata_mut().insert("gatehouse-revocation-cursor", value);
        }
        Ok(response)
    }
}
