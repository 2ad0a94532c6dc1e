//! `ProfileService` over gRPC.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    convert::{profile_from_pb, update_fields},
    metadata::bearer,
};
use crate::{
    domain::{Auth, Profiles, error::Violations},
    proto::v1::{self as pb, profile_service_server::ProfileService},
};

/// The gRPC face of [`Profiles`].
pub struct ProfileApi {
    auth: Arc<Auth>,
    profiles: Arc<Profiles>,
}

impl ProfileApi {
    /// Serves `profiles`, authenticating callers with `auth`.
    pub fn new(auth: Arc<Auth>, profiles: Arc<Profiles>) -> Self {
        Self { auth, profiles }
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
        let r = req.into_inner();
        let mut v = Violations::default();
        let values = profile_from_pb(r.profile.unwrap_or_default(), "profile.", &mut v);
        let fields = update_fields(r.update_mask, &values, &mut v);
        values.validate("profile.", &mut v);
        v.finish()?;
        let profile = self.profiles.update(caller.user.id, &values, &fields).await?;
        Ok(Response::new(pb::UpdateProfileResponse { profile: Some((&profile).into()) }))
    }
}
