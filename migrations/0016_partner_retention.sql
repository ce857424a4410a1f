-- Retention (issue 16): a partner's calls older than this many days have their personal data
-- erased by a background job (their keys destroyed). Null: kept until erased on request.
alter table partner add column retention_days integer check (retention_days > 0);
