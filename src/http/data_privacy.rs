//! Data subjects' rights for partners (issue 16): which calls hold a phone number or e-mail
//! address, and erasing it from them. Support has the same for any partner (admin token).

use std::sync::Arc;

use callingest_domain::call::ErasureReason;
use callingest_domain::values::PartnerId;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::{AdminAuth, PartnerAuth};
use super::error::ApiError;
use super::{ApiTags, AppState};
use crate::erasure::{self, Subject};

pub struct DataPrivacyApi {
    pub state: Arc<AppState>,
}

/// Whose personal data to erase: exactly one of the two.
#[derive(Object)]
pub struct ErasureRequest {
    /// The customer's phone number, as submitted in `call.contact_number` (spaces and dashes
    /// are ignored).
    #[oai(validator(max_length = 64))]
    pub phone_number: Option<String>,
    /// A customer's e-mail (`customer.email`: the whole call is erased) or an agent's
    /// (`agent.email`: only the agent's name, e-mail and extra fields are erased). Compared
    /// without regard to case.
    #[oai(validator(max_length = 320))]
    pub email: Option<String>,
}

/// What an erasure did.
#[derive(Object)]
pub struct ErasureAnswer {
    pub success: bool,
    /// Calls whose personal data was erased (the subject was the customer).
    pub calls_erased: usize,
    /// Calls whose agent fields were erased (the subject was the agent).
    pub agent_calls_erased: usize,
    /// Their call ids, the customer's calls first.
    pub call_ids: Vec<String>,
}

/// A call that holds the subject's data.
#[derive(Object)]
pub struct SubjectCallView {
    pub call_id: String,
    /// `customer` or `agent`: how the subject appears in the call.
    pub role: String,
}

/// The calls held for a subject.
#[derive(Object)]
pub struct SubjectCalls {
    pub success: bool,
    pub calls: Vec<SubjectCallView>,
}

impl DataPrivacyApi {
    async fn erase_for(
        &self,
        partner_id: &str,
        request: &ErasureRequest,
    ) -> Result<Json<ErasureAnswer>, ApiError> {
        let subject =
            Subject::from_request(request.phone_number.as_deref(), request.email.as_deref())?;
        let s = &self.state;
        let erased = erasure::erase(
            &s.pool,
            &s.privacy,
            &s.calls,
            partner_id,
            &subject,
            ErasureReason::Request,
        )
        .await?;
        Ok(Json(ErasureAnswer {
            success: true,
            calls_erased: erased.calls.len(),
            agent_calls_erased: erased.agent_calls.len(),
            call_ids: erased.call_ids(),
        }))
    }

    async fn calls_for(
        &self,
        partner_id: &str,
        phone_number: Option<&str>,
        email: Option<&str>,
    ) -> Result<Json<SubjectCalls>, ApiError> {
        let subject = Subject::from_request(phone_number, email)?;
        let calls =
            erasure::calls_of(&self.state.pool, &self.state.privacy, partner_id, &subject).await?;
        Ok(Json(SubjectCalls {
            success: true,
            calls: calls
                .into_iter()
                .map(|c| SubjectCallView {
                    call_id: c.call_id,
                    role: c.role.to_owned(),
                })
                .collect(),
        }))
    }
}

#[OpenApi(tag = "ApiTags::DataPrivacy")]
impl DataPrivacyApi {
    /// Erase a data subject's personal data
    ///
    /// Destroys the keys that seal the personal fields of every call of yours holding the
    /// phone number or e-mail address: from then on every API, the callback and every copy of
    /// the event log show them as erased (`null` and `personal_data_erased: true`). A
    /// customer's number or e-mail erases those calls' personal data (number, names,
    /// e-mails, recording URL, metadata, custom and extra fields, transcript); an agent's
    /// e-mail erases the agent's name, e-mail and extra fields only. Ids, times, statuses and
    /// analytics stay. Idempotent: erasing again answers 0 calls. 400 without exactly one of
    /// `phone_number` and `email`.
    #[oai(
        path = "/api/v1/partner/data-privacy/erase",
        method = "post",
        operation_id = "erasePersonalData"
    )]
    async fn erase(
        &self,
        PartnerAuth(partner): PartnerAuth,
        body: Json<ErasureRequest>,
    ) -> Result<Json<ErasureAnswer>, ApiError> {
        self.erase_for(partner.id.as_str(), &body.0).await
    }

    /// List the calls that hold a data subject's personal data
    ///
    /// Your calls whose customer has this phone number or e-mail address, or whose agent has
    /// this e-mail address (found through keyed blind indexes: the values themselves are not
    /// kept in clear). Erased calls no longer hold it and are not listed.
    #[oai(
        path = "/api/v1/partner/data-privacy/calls",
        method = "get",
        operation_id = "listSubjectCalls"
    )]
    async fn subject_calls(
        &self,
        PartnerAuth(partner): PartnerAuth,
        phone_number: Query<Option<String>>,
        email: Query<Option<String>>,
    ) -> Result<Json<SubjectCalls>, ApiError> {
        self.calls_for(
            partner.id.as_str(),
            phone_number.0.as_deref(),
            email.0.as_deref(),
        )
        .await
    }

    /// Erase a data subject's personal data for a partner (support)
    ///
    /// The partner endpoint's erasure, for support acting on a partner's request.
    #[oai(
        path = "/api/v1/admin/partners/:partner_id/data-privacy/erase",
        method = "post",
        operation_id = "adminErasePersonalData"
    )]
    async fn admin_erase(
        &self,
        _admin: AdminAuth,
        partner_id: Path<String>,
        body: Json<ErasureRequest>,
    ) -> Result<Json<ErasureAnswer>, ApiError> {
        let partner = PartnerId::parse(&partner_id.0).map_err(|_| ApiError::not_found())?;
        self.erase_for(partner.as_str(), &body.0).await
    }

    /// List a partner's calls that hold a data subject's personal data (support)
    #[oai(
        path = "/api/v1/admin/partners/:partner_id/data-privacy/calls",
        method = "get",
        operation_id = "adminListSubjectCalls"
    )]
    async fn admin_subject_calls(
        &self,
        _admin: AdminAuth,
        partner_id: Path<String>,
        phone_number: Query<Option<String>>,
        email: Query<Option<String>>,
    ) -> Result<Json<SubjectCalls>, ApiError> {
        let partner = PartnerId::parse(&partner_id.0).map_err(|_| ApiError::not_found())?;
        self.calls_for(
            partner.as_str(),
            phone_number.0.as_deref(),
            email.0.as_deref(),
        )
        .await
    }
}
