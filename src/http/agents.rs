//! The partner's per-agent interaction statistics, from the `agent_daily_stats` read model.

use std::sync::Arc;

use chrono::{Days, NaiveDate, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::OpenApi;

use super::auth::PartnerAuth;
use super::error::ApiError;
use super::serde_json_body::SerdeJson;
use super::{ApiTags, AppState};
use crate::queries::interaction::{self, AgentDayView, AgentDaysFilter};

/// Longest range of days one request may ask for.
const MAX_DAYS: u64 = 366;
/// Days reported when `from` is not given.
const DEFAULT_DAYS: u64 = 30;

pub struct AgentsApi {
    pub state: Arc<AppState>,
}

/// One agent's interaction statistics, per day (described by
/// [`super::view_schema::AgentStats`]).
#[derive(serde::Serialize)]
pub struct AgentStats {
    pub agent_id: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: Vec<AgentDayView>,
}

#[OpenApi(tag = "ApiTags::Calls")]
impl AgentsApi {
    /// Get an agent's interaction statistics
    ///
    /// Per day (the UTC date the calls started): calls, and the means of the interaction
    /// figures of the agent's completed calls (talk ratio, monologues, interactivity, patience,
    /// questions, pace). Mono calls and calls analysed before these figures existed count in
    /// the call counts only. Without `tenant_id`/`sub_tenant_id`, all are summed.
    #[oai(
        path = "/api/v1/partner/agents/:agent_id/stats",
        method = "get",
        operation_id = "getAgentStats"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn get_agent_stats(
        &self,
        PartnerAuth(partner): PartnerAuth,
        /// Your agent id, as submitted in `agent.id`.
        agent_id: Path<String>,
        /// First day (YYYY-MM-DD, UTC); default: 29 days before `to`.
        from: Query<Option<NaiveDate>>,
        /// Last day, included (YYYY-MM-DD, UTC); default: today.
        to: Query<Option<NaiveDate>>,
        /// Only calls of this tenant.
        tenant_id: Query<Option<String>>,
        /// Only calls of this sub-tenant.
        sub_tenant_id: Query<Option<String>>,
    ) -> Result<SerdeJson<AgentStats>, ApiError> {
        let (from, to) = day_range(from.0, to.0, Utc::now().date_naive())?;
        let days = interaction::agent_days(
            &self.state.pool,
            &AgentDaysFilter {
                partner_id: partner.id.as_str(),
                agent_id: &agent_id.0,
                from,
                to,
                tenant_id: tenant_id.0.as_deref(),
                sub_tenant_id: sub_tenant_id.0.as_deref(),
            },
        )
        .await?;
        Ok(SerdeJson(AgentStats {
            agent_id: agent_id.0,
            from,
            to,
            days,
        }))
    }
}

/// The days asked for, with defaults; at most [`MAX_DAYS`], `from` not after `to`.
fn day_range(
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let to = to.unwrap_or(today);
    let from = from.unwrap_or_else(|| to - Days::new(DEFAULT_DAYS - 1));
    if from > to {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    if (to - from).num_days() as u64 >= MAX_DAYS {
        return Err(ApiError::bad_request(format!(
            "from and to may span at most {MAX_DAYS} days"
        )));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_range_is_the_last_thirty_days() {
        let today = day("2024-03-10");
        assert_eq!(
            day_range(None, None, today).ok(),
            Some((day("2024-02-10"), today))
        );
        assert_eq!(
            day_range(None, Some(day("2024-01-30")), today).ok(),
            Some((day("2024-01-01"), day("2024-01-30")))
        );
    }

    #[test]
    fn reversed_or_too_long_ranges_are_refused() {
        let today = day("2024-03-10");
        assert!(day_range(Some(day("2024-03-02")), Some(day("2024-03-01")), today).is_err());
        // 2023-01-01 to 2024-01-01 is 366 days, both ends included: the most allowed.
        assert!(day_range(Some(day("2022-12-31")), Some(day("2024-01-01")), today).is_err());
        assert!(day_range(Some(day("2023-01-01")), Some(day("2024-01-01")), today).is_ok());
    }
}
