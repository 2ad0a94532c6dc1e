//! `ProfileService` over gRPC.

use std::sync::Arc;

use ipnet::IpNet;
use tonic::{Request, Response, Status};

use super::{
    convert::{profile_from_pb, update_fields},
    metadata::{bearer, client_info},
};
use crate::{
    domain::{Auth, Profiles, error::Violations},
    proto::v1::{self as pb, profile_service_server::ProfileService},
};

/// The gRPC face of [`Profiles`].
pub struct ProfileApi {
    auth: Arc<Auth>,
    profiles: Arc<Profiles>,
    trusted_proxies: Arc<[IpNet]>,
}

impl ProfileApi {
    /// Serves `profiles`, authenticating callers with `auth` and believing forwarded client
    /// metadata (recorded with consent) from `trusted_proxies` only.
    pub fn new(auth: Arc<Auth>, profiles: Arc<Profiles>, trusted_proxies: Arc<[IpNet]>) -> Self {
        Self { auth, profiles, trusted_proxies }
    }
}

#[tonic::async_trait]
impl ProfileService for ProfileApi {
    async fn get_profile(
        &self,
        req: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let profile = self.profiles.get(caller.user.id).await?;
        Ok(Response::new(pb::GetProfileResponse { profile: Some((&profile).into()) }))
    }

    async fn update_profile(
        &self,
        req: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        let mut v = Violations::default();
        let values = profile_from_pb(r.profile.unwrap_or_default(), "profile.", &mut v);
        let fields = update_fields(r.update_mask, &values, &mut v);
        values.validate("profile.", &mut v);
        v.finish()?;
        let profile = self.profiles.update(caller.user.id, &values, &fields, &client).await?;
        Ok(Response::new(pb::UpdateProfileResponse { profile: Some((&profile).into()) }))
    }

    async fn list_consent_records(
        &self,
        req: Request<pb::ListConsentRecordsRequest>,
    ) -> Result<Response<pb::ListConsentRecordsResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let r = req.into_inner();
        let (records, next_page_token, states) =
            self.profiles.consents(caller.user.id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListConsentRecordsResponse {
            records: records.into_iter().map(Into::into).collect(),
            next_page_token,
            purposes: states.into_iter().map(Into::into).collect(),
            policy_version: self.profiles.policy().version.clone(),
        }))
    }

    async fn update_consent(
        &self,
        req: Request<pb::UpdateConsentRequest>,
    ) -> Result<Response<pb::UpdateConsentResponse>, Status> {
        let caller = self.auth.authenticate(bearer(req.metadata())).await?;
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        let state = self.profiles.set_consent(caller.user.id, r.purpose.trim(), r.granted, &client).await?;
        Ok(Response::new(pb::UpdateConsentResponse { state: Some(state.into()) }))
    }
}
