//! `AuthService` over gRPC: decode, call the domain, encode.

use std::sync::Arc;

use ipnet::IpNet;
use tonic::{Request, Response, Status};

use secrecy::ExposeSecret;

use super::{
    convert::{profile_from_pb, saturate, timestamp},
    metadata::{bearer, client_info},
};
use crate::{
    domain::{
        Auth, OAuth, Recovery,
        auth::SignUpInput,
        error::Violations,
        factors::{Factors, SecondFactorProof},
        oauth::CompleteInput,
        privacy::Privacy,
        session::Authenticated,
    },
    proto::v1::{self as pb, auth_service_server::AuthService},
};

/// The gRPC face of [`Auth`], [`Recovery`] and [`OAuth`].
pub struct AuthApi {
    auth: Arc<Auth>,
    recovery: Arc<Recovery>,
    oauth: Arc<OAuth>,
    privacy: Arc<Privacy>,
    factors: Arc<Factors>,
    trusted_proxies: Arc<[IpNet]>,
}

impl AuthApi {
    /// Serves `auth`, `recovery` and `oauth`, believing forwarded client metadata from
    /// `trusted_proxies` only.
    pub fn new(
        auth: Arc<Auth>,
        recovery: Arc<Recovery>,
        oauth: Arc<OAuth>,
        privacy: Arc<Privacy>,
        factors: Arc<Factors>,
        trusted_proxies: Arc<[IpNet]>,
    ) -> Self {
        Self { auth, recovery, oauth, privacy, factors, trusted_proxies }
    }

    /// The caller if the call carries an `authorization` entry (which must then be valid).
    async fn optional_caller<T>(&self, req: &Request<T>) -> Result<Option<Authenticated>, Status> {
        if req.metadata().contains_key("authorization") {
            Ok(Some(self.auth.authenticate(bearer(req.metadata())).await?))
        } else {
            Ok(None)
        }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn sign_up(&self, req: Request<pb::SignUpRequest>) -> Result<Response<pb::AuthResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        let mut v = Violations::default();
        let profile = r.profile.map(|p| profile_from_pb(p, "profile.", &mut v));
        v.finish()?;
        let input = SignUpInput { email: r.email, password: r.password, name: r.name, profile };
        Ok(Response::new(self.auth.sign_up(input, client).await?.into()))
    }

    async fn sign_in(&self, req: Request<pb::SignInRequest>) -> Result<Response<pb::AuthResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        Ok(Response::new(self.auth.sign_in(&r.email, &r.password, client).await?.into()))
    }

    async fn complete_second_factor(
        &self,
        req: Request<pb::CompleteSecondFactorRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        use pb::complete_second_factor_request::Proof as P;
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        let proof = r.proof.map(|p| match p {
            P::TotpCode(code) => SecondFactorProof::Totp(code),
            P::RecoveryCode(code) => SecondFactorProof::RecoveryCode(code),
            P::PasskeyCredentialJson(json) => SecondFactorProof::Passkey(json),
        });
        Ok(Response::new(self.factors.complete(&r.challenge_token, proof, client).await?.into()))
    }

    async fn start_passkey_sign_in(
        &self,
        req: Request<pb::StartPasskeySignInRequest>,
    ) -> Result<Response<pb::StartPasskeySignInResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let start = self.factors.start_passkey_sign_in(&client).await?;
        Ok(Response::new(pb::StartPasskeySignInResponse {
            options_json: start.options_json,
            challenge_id: start.challenge_id.to_string(),
            expires_at: Some(timestamp(start.expires_at)),
        }))
    }

    async fn finish_passkey_sign_in(
        &self,
        req: Request<pb::FinishPasskeySignInRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        Ok(Response::new(
            self.factors.finish_passkey_sign_in(&r.challenge_id, &r.credential_json, client).await?.into(),
        ))
    }

    async fn sign_out(&self, req: Request<pb::SignOutRequest>) -> Result<Response<pb::SignOutResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        self.auth.sign_out(&caller, &client).await?;
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
        Ok(Response::new(pb::ListSessionsResponse { sessions: sessions.into_iter().map(Into::into).collect() }))
    }

    async fn revoke_session(
        &self,
        req: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        self.auth.revoke_session(&caller, &req.into_inner().session_id, &client).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn revoke_other_sessions(
        &self,
        req: Request<pb::RevokeOtherSessionsRequest>,
    ) -> Result<Response<pb::RevokeOtherSessionsResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let n = self.auth.revoke_other_sessions(&caller, &client).await?;
        Ok(Response::new(pb::RevokeOtherSessionsResponse { revoked_count: saturate(n) }))
    }

    async fn change_password(
        &self,
        req: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let r = req.into_inner();
        let n = self
            .auth
            .change_password(&caller, &r.current_password, &r.new_password, r.revoke_other_sessions, &client)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse { revoked_count: saturate(n) }))
    }

    async fn delete_account(
        &self,
        req: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        self.auth.delete_account(&caller, &req.into_inner().password, &client).await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn send_verification_email(
        &self,
        req: Request<pb::SendVerificationEmailRequest>,
    ) -> Result<Response<pb::SendVerificationEmailResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        self.recovery.send_verification_email(&caller, &client).await?;
        Ok(Response::new(pb::SendVerificationEmailResponse {}))
    }

    async fn verify_email(
        &self,
        req: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        self.recovery.verify_email(&req.into_inner().token, &client).await?;
        Ok(Response::new(pb::VerifyEmailResponse {}))
    }

    async fn request_password_reset(
        &self,
        req: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        self.recovery.request_password_reset(&req.into_inner().email, client).await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        req: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        self.recovery.reset_password(&r.token, &r.new_password, &client).await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn request_email_change(
        &self,
        req: Request<pb::RequestEmailChangeRequest>,
    ) -> Result<Response<pb::RequestEmailChangeResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let r = req.into_inner();
        self.recovery.request_email_change(&caller, &r.new_email, &r.current_password, &client).await?;
        Ok(Response::new(pb::RequestEmailChangeResponse {}))
    }

    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let r = req.into_inner();
        let (events, next_page_token) = self.auth.audit().list(caller.user.id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn export_my_data(
        &self,
        req: Request<pb::ExportMyDataRequest>,
    ) -> Result<Response<pb::ExportMyDataResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let client = client_info(&req, &self.trusted_proxies);
        let export = self.privacy.export_mine(caller.user.id, &client).await?;
        Ok(Response::new(pb::ExportMyDataResponse {
            document: export.document,
            exported_at: Some(timestamp(export.exported_at)),
        }))
    }

    async fn start_o_auth(
        &self,
        req: Request<pb::StartOAuthRequest>,
    ) -> Result<Response<pb::StartOAuthResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.optional_caller(&req).await?;
        let r = req.into_inner();
        let started = self.oauth.start(&r.provider, &r.redirect_uri, caller.as_ref(), &client).await?;
        Ok(Response::new(pb::StartOAuthResponse {
            authorization_url: started.authorization_url,
            state: started.state,
            expires_at: Some(timestamp(started.expires_at)),
        }))
    }

    async fn complete_o_auth(
        &self,
        req: Request<pb::CompleteOAuthRequest>,
    ) -> Result<Response<pb::CompleteOAuthResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.optional_caller(&req).await?;
        let r = req.into_inner();
        let input = CompleteInput { provider: r.provider, code: r.code, state: r.state, redirect_uri: r.redirect_uri };
        let done = self.oauth.complete(input, caller.as_ref(), client).await?;
        Ok(Response::new(done.into()))
    }

    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let accounts = self.oauth.list_accounts(&caller).await?;
        Ok(Response::new(pb::ListAccountsResponse { accounts: accounts.into_iter().map(Into::into).collect() }))
    }

    async fn unlink_account(
        &self,
        req: Request<pb::UnlinkAccountRequest>,
    ) -> Result<Response<pb::UnlinkAccountResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let r = req.into_inner();
        self.oauth.unlink(&caller, &r.provider, &r.account_id, &client).await?;
        Ok(Response::new(pb::UnlinkAccountResponse {}))
    }

    async fn get_provider_access_token(
        &self,
        req: Request<pb::GetProviderAccessTokenRequest>,
    ) -> Result<Response<pb::GetProviderAccessTokenResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let r = req.into_inner();
        let account_id = Some(r.account_id.trim()).filter(|a| !a.is_empty());
        let token = self.oauth.provider_access_token(&caller, &r.provider, account_id).await?;
        Ok(Response::new(pb::GetProviderAccessTokenResponse {
            access_token: token.access_token.expose_secret().to_owned(),
            expires_at: token.expires_at.map(timestamp),
            scopes: token.scopes,
        }))
    }
}
