//! `FactorService` over gRPC: decode, call the domain, encode.

use std::sync::Arc;

use ipnet::IpNet;
use tonic::{Request, Response, Status};

use super::{
    convert::{saturate, timestamp},
    metadata::{bearer, client_info},
};
use crate::{
    domain::{Auth, factors::Factors},
    proto::v1::{self as pb, factor_service_server::FactorService},
};

/// The gRPC face of [`Factors`].
pub struct FactorApi {
    auth: Arc<Auth>,
    factors: Arc<Factors>,
    trusted_proxies: Arc<[IpNet]>,
}

impl FactorApi {
    /// Serves `factors` to callers authenticated by `auth`.
    pub fn new(auth: Arc<Auth>, factors: Arc<Factors>, trusted_proxies: Arc<[IpNet]>) -> Self {
        Self { auth, factors, trusted_proxies }
    }
}

#[tonic::async_trait]
impl FactorService for FactorApi {
    async fn start_totp_enrollment(
        &self,
        req: Request<pb::StartTotpEnrollmentRequest>,
    ) -> Result<Response<pb::StartTotpEnrollmentResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let e = self.factors.start_totp(&caller, &req.into_inner().name).await?;
        Ok(Response::new(pb::StartTotpEnrollmentResponse {
            factor_id: e.factor_id.to_string(),
            secret: e.secret,
            otpauth_uri: e.otpauth_uri,
            qr_code_svg: e.qr_code_svg,
            expires_at: Some(timestamp(e.expires_at)),
        }))
    }

    async fn confirm_totp_enrollment(
        &self,
        req: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<pb::ConfirmTotpEnrollmentResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let (factor, codes) = self.factors.confirm_totp(&caller, &req.into_inner().code, &client).await?;
        Ok(Response::new(pb::ConfirmTotpEnrollmentResponse { factor: Some(factor.into()), recovery_codes: codes.0 }))
    }

    async fn regenerate_recovery_codes(
        &self,
        req: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<pb::RegenerateRecoveryCodesResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let codes = self.factors.regenerate_recovery_codes(&caller, &client).await?;
        Ok(Response::new(pb::RegenerateRecoveryCodesResponse { recovery_codes: codes.0 }))
    }

    async fn list_factors(
        &self,
        req: Request<pb::ListFactorsRequest>,
    ) -> Result<Response<pb::ListFactorsResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let (factors, left) = self.factors.list(&caller).await?;
        Ok(Response::new(pb::ListFactorsResponse {
            factors: factors.into_iter().map(Into::into).collect(),
            recovery_codes_remaining: saturate(u64::try_from(left).unwrap_or(0)),
        }))
    }

    async fn start_passkey_registration(
        &self,
        req: Request<pb::StartPasskeyRegistrationRequest>,
    ) -> Result<Response<pb::StartPasskeyRegistrationResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let options = self.factors.start_passkey_registration(&caller, &req.into_inner().name).await?;
        Ok(Response::new(pb::StartPasskeyRegistrationResponse {
            options_json: options.options_json,
            expires_at: Some(timestamp(options.expires_at)),
        }))
    }

    async fn finish_passkey_registration(
        &self,
        req: Request<pb::FinishPasskeyRegistrationRequest>,
    ) -> Result<Response<pb::FinishPasskeyRegistrationResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let (factor, codes) =
            self.factors.finish_passkey_registration(&caller, &req.into_inner().credential_json, &client).await?;
        Ok(Response::new(pb::FinishPasskeyRegistrationResponse {
            factor: Some(factor.into()),
            recovery_codes: codes.map(|c| c.0).unwrap_or_default(),
        }))
    }

    async fn remove_factor(
        &self,
        req: Request<pb::RemoveFactorRequest>,
    ) -> Result<Response<pb::RemoveFactorResponse>, Status> {
        let client = client_info(&req, &self.trusted_proxies);
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        self.factors.remove(&caller, &req.into_inner().factor_id, &client).await?;
        Ok(Response::new(pb::RemoveFactorResponse {}))
    }
}
