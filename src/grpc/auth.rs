//! `AuthService` over gRPC: decode, call the domain, encode.

use std::sync::Arc;

use ipnet::IpNet;
use tonic::{Request, Response, Status};

use super::{
    convert::profile_from_pb,
    metadata::{bearer, client_info},
};
use crate::{
    domain::{Auth, auth::SignUpInput, error::Violations},
    proto::v1::{self as pb, auth_service_server::AuthService},
};

/// The gRPC face of [`Auth`].
pub struct AuthApi {
    auth: Arc<Auth>,
    trusted_proxies: Arc<[IpNet]>,
}

impl AuthApi {
    /// Serves `auth`, believing forwarded client metadata from `trusted_proxies` only.
    pub fn new(auth: Arc<Auth>, trusted_proxies: Arc<[IpNet]>) -> Self {
        Self {
            auth,
            trusted_proxies,
        }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn sign_up(
        &self,
        req: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        let mut v = Violations::default();
        let profile = r.profile.map(|p| profile_from_pb(p, "profile.", &mut v));
        v.finish()?;
        let input = SignUpInput {
            email: r.email,
            password: r.password,
            name: r.name,
            profile,
        };
        Ok(Response::new(
            self.auth.sign_up(input, client).await?.into(),
        ))
    }

    async fn sign_in(
        &self,
        req: Request<pb::SignInRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        Ok(Response::new(
            self.auth
                .sign_in(&r.email, &r.password, client)
                .await?
                .into(),
        ))
    }

    async fn sign_out(
        &self,
        req: Request<pb::SignOutRequest>,
    ) -> Result<Response<pb::SignOutResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        self.auth.sign_out(&caller).await?;
        Ok(Response::new(pb::SignOutResponse {}))
    }

    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        Ok(Response::new(pb::GetSessionResponse {
            user: Some(caller.user.into()),
            session: Some(caller.session.into()),
        }))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let sessions = self.auth.list_sessions(&caller).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        req: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        self.auth
            .revoke_session(&caller, &req.into_inner().session_id)
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn revoke_other_sessions(
        &self,
        req: Request<pb::RevokeOtherSessionsRequest>,
    ) -> Result<Response<pb::RevokeOtherSessionsResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let n = self.auth.revoke_other_sessions(&caller).await?;
        Ok(Response::new(pb::RevokeOtherSessionsResponse {
            revoked_count: saturate(n),
        }))
    }

    async fn change_password(
        &self,
        req: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let r = req.into_inner();
        let n = self
            .auth
            .change_password(
                &caller,
                &r.current_password,
                &r.new_password,
                r.revoke_other_sessions,
            )
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_count: saturate(n),
        }))
    }

    async fn delete_account(
        &self,
        req: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        self.auth
            .delete_account(&caller, &req.into_inner().password)
            .await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
