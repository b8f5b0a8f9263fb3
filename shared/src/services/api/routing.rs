//! Routing: which handler answers a method and path, and the checks every
//! JSON body passes first.

use crate::ports::log_form;
use tracing::{info, warn};

use super::{ApiError, ApiRequest, ApiResponse, ApiService};

impl ApiService {
    /// Routes one request and answers it; every failure becomes a response.
    pub async fn handle(&self, request: &ApiRequest) -> ApiResponse {
        match self.route(request).await {
            Ok(response) => response,
            Err(error) => {
                let status = error.status();
                if status >= 500 {
                    warn!(status, error = %log_form(&error), "request failed");
                } else {
                    info!(status, code = error.code(), "request refused");
                }
                error.to_response()
            }
        }
    }

    pub(super) async fn route(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let method = request.method.to_ascii_uppercase();
        let allow = |allowed: &'static str| -> Result<(), ApiError> {
            if method == allowed {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed {
                    method: method.clone(),
                    allowed,
                })
            }
        };
        match segments.as_slice() {
            ["v1", "jobs"] => match method.as_str() {
                "GET" => self.list_jobs(request).await,
                "POST" => self.submit(request).await,
                _ => Err(ApiError::MethodNotAllowed {
                    method: method.clone(),
                    allowed: "GET, POST",
                }),
            },
            ["v1", "jobs", job_id] => {
                allow("GET")?;
                self.get_job(job_id).await
            }
            ["v1", "jobs", job_id, "cancel"] => {
                allow("POST")?;
                self.cancel_job(job_id, request).await
            }
            ["v1", "members", member_id, "balances"] => {
                allow("GET")?;
                self.get_balances(member_id).await
            }
            ["v1", "members", member_id, "ledger"] => {
                allow("GET")?;
                self.get_history(member_id, request).await
            }
            ["v1", "members", member_id, "uses"] => {
                allow("POST")?;
                self.apply_use(member_id, request).await
            }
            ["v1", "uploads"] => {
                allow("POST")?;
                self.create_upload(request).await
            }
            ["v1", "reversals"] => {
                allow("POST")?;
                self.reverse(request).await
            }
            _ => Err(ApiError::NotFoundRoute {
                method,
                path: request.path.clone(),
            }),
        }
    }

    /// Refuses a body that is not JSON or is too large.
    pub(super) fn check_json_body(&self, request: &ApiRequest) -> Result<(), ApiError> {
        let content_type = request.header("content-type");
        let is_json = content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType {
                found: content_type.map(str::to_owned),
            });
        }
        if request.body.len() > self.settings.max_body_bytes {
            return Err(ApiError::PayloadTooLarge {
                bytes: request.body.len(),
                max: self.settings.max_body_bytes,
            });
        }
        Ok(())
    }
}
