//! `TokenService` over gRPC: access tokens, JWKS, introspection and the revocation stream.

use std::{collections::HashSet, pin::Pin, sync::Arc};

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{convert::timestamp, metadata::bearer, service_auth::ServiceAuth};
use crate::{
    domain::{Auth, mesh::Mesh, revocations::RevocationHub},
    proto::v1::{self as pb, token_service_server::TokenService},
    storage::RevocationRow,
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

fn event(row: RevocationRow) -> pb::RevocationEvent {
    pb::RevocationEvent {
        id: row.id,
        session_id: row.session_id.to_string(),
        user_id: row.user_id.to_string(),
        reason: row.reason,
        revoked_at: Some(timestamp(row.created_at)),
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
        // Subscribe before reading the backlog, so nothing falls between the two.
        let mut live = self.hub.subscribe();
        let after = match req.into_inner().after_id {
            n if n > 0 => n,
            _ => self.hub.cursor(),
        };
        let hub = Arc::clone(&self.hub);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tracing::info!(service = who.0, after, "revocation watcher connected");
        tokio::spawn(async move {
            let mut sent: HashSet<i64> = HashSet::new();
            let mut last = after;
            // The backlog: everything after the watcher's last id.
            loop {
                let page = match hub.after(last).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                if page.is_empty() {
                    break;
                }
                for row in page {
                    last = last.max(row.id);
                    sent.insert(row.id);
                    if tx.send(Ok(event(row))).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let received = tokio::select! {
                    received = live.recv() => received,
                    () = hub.stopped() => {
                        // Ending the stream lets shutdown finish; the watcher resumes on another
                        // replica (or this one, restarted) from its last id without a gap.
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "the server is shutting down; reconnect with after_id = {last}"
                            ))))
                            .await;
                        return;
                    }
                };
                match received {
                    Ok(row) if row.id > after && sent.insert(row.id) => {
                        last = last.max(row.id);
                        if tx.send(Ok(event(row))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Too slow to keep up: tell the watcher to resume from its last id.
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::data_loss("watcher fell behind; resume from your last event id")))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
                // Bound the dedupe set: ids far behind can no longer arrive live.
                if sent.len() > 10_000 {
                    let keep_from = sent.iter().max().copied().unwrap_or(0) - 5_000;
                    sent.retain(|id| *id >= keep_from);
                }
            }
        });
        let mut response = Response::new(Box::pin(ReceiverStream::new(rx)) as EventStream);
        // Where the stream starts: a watcher that has seen no event yet can still resume from
        // here without a gap.
        if let Ok(value) = after.to_string().parse() {
            response.metadata_mut().insert("gatehouse-revocation-cursor", value);
        }
        Ok(response)
    }
}
