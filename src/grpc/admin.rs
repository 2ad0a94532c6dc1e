//! `AdminService` over gRPC: every call authenticated as a service and audited.

use std::sync::Arc;

use ipnet::IpNet;
use tonic::{Request, Response, Status};

use super::{
    convert::{from_timestamp, saturate, timestamp},
    metadata::client_info,
    service_auth::ServiceAuth,
};
use crate::{
    domain::admin::Admin,
    proto::v1::{self as pb, admin_service_server::AdminService},
};

/// The gRPC face of [`Admin`].
pub struct AdminApi {
    admin: Arc<Admin>,
    services: Arc<ServiceAuth>,
    trusted_proxies: Arc<[IpNet]>,
}

impl AdminApi {
    /// Serves admin operations to authenticated services.
    pub fn new(admin: Arc<Admin>, services: Arc<ServiceAuth>, trusted_proxies: Arc<[IpNet]>) -> Self {
        Self { admin, services, trusted_proxies }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn reset_second_factors(
        &self,
        req: Request<pb::ResetSecondFactorsRequest>,
    ) -> Result<Response<pb::ResetSecondFactorsResponse>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        let n = self.admin.reset_second_factors(&who, &client, &req.into_inner().user_id).await?;
        Ok(Response::new(pb::ResetSecondFactorsResponse { removed_count: saturate(n) }))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        let (users, next_page_token) =
            self.admin.list_users(&who, &client, r.page_size, &r.page_token, &r.email_filter).await?;
        Ok(Response::new(pb::ListUsersResponse { users: users.into_iter().map(Into::into).collect(), next_page_token }))
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> Result<Response<pb::AdminUser>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        Ok(Response::new(self.admin.get_user(&who, &client, &req.into_inner().user_id).await?.into()))
    }

    async fn disable_user(&self, req: Request<pb::DisableUserRequest>) -> Result<Response<pb::AdminUser>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        Ok(Response::new(self.admin.disable(&who, &client, &req.into_inner().user_id).await?.into()))
    }

    async fn enable_user(&self, req: Request<pb::EnableUserRequest>) -> Result<Response<pb::AdminUser>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        Ok(Response::new(self.admin.enable(&who, &client, &req.into_inner().user_id).await?.into()))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        self.admin.delete(&who, &client, &req.into_inner().user_id).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn revoke_user_sessions(
        &self,
        req: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        let n = self.admin.revoke_sessions(&who, &client, &req.into_inner().user_id).await?;
        Ok(Response::new(pb::RevokeUserSessionsResponse { revoked_count: saturate(n) }))
    }

    async fn export_user_data(
        &self,
        req: Request<pb::ExportUserDataRequest>,
    ) -> Result<Response<pb::ExportUserDataResponse>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        let export = self.admin.export_user(&who, &client, &req.into_inner().user_id).await?;
        Ok(Response::new(pb::ExportUserDataResponse {
            document: export.document,
            exported_at: Some(timestamp(export.exported_at)),
        }))
    }

    async fn get_privacy_report(
        &self,
        req: Request<pb::GetPrivacyReportRequest>,
    ) -> Result<Response<pb::PrivacyReport>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        let mut v = crate::domain::error::Violations::default();
        let since = r.since.map(|t| v.check("since", from_timestamp(t)));
        let until = r.until.map(|t| v.check("until", from_timestamp(t)));
        v.finish()?;
        let report = self.admin.privacy_report(&who, &client, since.flatten(), until.flatten()).await?;
        Ok(Response::new(report.into()))
    }

    async fn list_user_audit_events(
        &self,
        req: Request<pb::ListUserAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let who = self.services.authenticate(&req)?;
        let client = client_info(&req, &self.trusted_proxies);
        let r = req.into_inner();
        let (events, next_page_token) =
            self.admin.audit_events(&who, &client, &r.user_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }
}
