//! Error chains, for log lines and for deciding what an error means: shared by the HTTP layer,
//! ingest and the workers.

use std::error::Error;

/// Formats an error with all its sources: `outer: inner: root`.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// Whether `err` or any of its sources is a database error that means "unavailable right now"
/// by [`crate::db::means_unavailable`], the one classifier. Frameworks wrap database errors
/// (postgres-es reports a query cut by the server going away as an unexpected error), so the
/// whole chain is searched.
pub fn caused_by_unavailable_database(err: &(dyn Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err
            .downcast_ref::<sqlx::Error>()
            .is_some_and(crate::db::means_unavailable)
        {
            return true;
        }
        source = err.source();
    }
    false
}
