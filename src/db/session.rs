//! What kind of session a connection must have (libpq's `target_session_attrs`) and what a
//! connected node says about itself: in recovery (a standby), read-only, committing
//! synchronously.

use std::fmt;
use std::str::FromStr;

use sqlx::PgConnection;

/// libpq's `target_session_attrs`: which of the listed hosts a connection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// The first host that accepts the connection.
    Any,
    /// A session that accepts writes by default (`transaction_read_only` off).
    ReadWrite,
    /// A session that refuses writes by default (a standby, or `default_transaction_read_only`).
    ReadOnly,
    /// A node not in recovery.
    Primary,
    /// A node in recovery.
    Standby,
    /// A standby if any host is one, else any host.
    PreferStandby,
}

impl FromStr for SessionAttrs {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "any" => Self::Any,
            "read-write" => Self::ReadWrite,
            "read-only" => Self::ReadOnly,
            "primary" => Self::Primary,
            "standby" => Self::Standby,
            "prefer-standby" => Self::PreferStandby,
            _ => return Err(()),
        })
    }
}

impl fmt::Display for SessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::ReadOnly => "read-only",
            Self::Primary => "primary",
            Self::Standby => "standby",
            Self::PreferStandby => "prefer-standby",
        })
    }
}

/// What a node reported about the session just opened on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// `pg_is_in_recovery()`: a standby (or a primary being demoted).
    pub in_recovery: bool,
    /// `transaction_read_only` of a new transaction in this session.
    pub read_only: bool,
    /// `synchronous_commit` of this session (`on`, `remote_apply`, `local`, ...).
    pub synchronous_commit: String,
    /// `synchronous_standby_names`: empty when no standby is synchronous.
    pub synchronous_standby_names: String,
}

impl NodeState {
    /// Asks the node, in one round trip.
    pub async fn of(conn: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let (in_recovery, read_only, synchronous_commit, synchronous_standby_names) =
            sqlx::query_as::<_, (bool, bool, String, String)>(
                "select pg_is_in_recovery(), current_setting('transaction_read_only') = 'on',
                        current_setting('synchronous_commit'),
                        current_setting('synchronous_standby_names')",
            )
            .fetch_one(conn)
            .await?;
        Ok(Self {
            in_recovery,
            read_only,
            synchronous_commit,
            synchronous_standby_names,
        })
    }

    /// Whether a commit that returned is on a synchronous standby too, so it survives the loss
    /// of this node: a standby is named and commits wait for it (`on`, `remote_write`,
    /// `remote_apply`; not `local` or `off`).
    pub fn commits_synchronously(&self) -> bool {
        !self.synchronous_standby_names.trim().is_empty()
            && matches!(
                self.synchronous_commit.as_str(),
                "on" | "remote_write" | "remote_apply"
            )
    }
}

impl SessionAttrs {
    /// Whether a session on a node in `state` is one to keep. `PreferStandby` keeps a standby
    /// only: [`choose`] falls back to any host when none is.
    pub fn accepts(self, state: &NodeState) -> bool {
        match self {
            Self::Any => true,
            Self::ReadWrite => !state.read_only,
            Self::ReadOnly => state.read_only,
            Self::Primary => !state.in_recovery,
            Self::Standby | Self::PreferStandby => state.in_recovery,
        }
    }

    /// Whether a session that [`accepts`](Self::accepts) refused is still acceptable once no
    /// host matched (libpq's second pass of `prefer-standby`).
    pub fn falls_back_to_any(self) -> bool {
        self == Self::PreferStandby
    }
}

/// The host to keep, given what each host said in order (`None`: it could not be reached):
/// the first accepted one, else for `prefer-standby` the first reachable one.
pub fn choose(attrs: SessionAttrs, states: &[Option<NodeState>]) -> Option<usize> {
    let accepted = states
        .iter()
        .position(|state| state.as_ref().is_some_and(|state| attrs.accepts(state)));
    match accepted {
        Some(index) => Some(index),
        None if attrs.falls_back_to_any() => states.iter().position(Option::is_some),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(in_recovery: bool, read_only: bool) -> Option<NodeState> {
        Some(NodeState {
            in_recovery,
            read_only,
            synchronous_commit: "on".into(),
            synchronous_standby_names: String::new(),
        })
    }

    const PRIMARY: (bool, bool) = (false, false);
    const STANDBY: (bool, bool) = (true, true);
    /// A primary with `default_transaction_read_only = on` (e.g. being drained).
    const READ_ONLY_PRIMARY: (bool, bool) = (false, true);

    fn nodes(list: &[Option<(bool, bool)>]) -> Vec<Option<NodeState>> {
        list.iter()
            .map(|n| n.and_then(|(r, ro)| node(r, ro)))
            .collect()
    }

    #[test]
    fn each_target_session_attrs_picks_what_libpq_picks() {
        let hosts = nodes(&[None, Some(STANDBY), Some(READ_ONLY_PRIMARY), Some(PRIMARY)]);
        let picks = [
            (SessionAttrs::Any, Some(1)),
            (SessionAttrs::ReadWrite, Some(3)),
            (SessionAttrs::ReadOnly, Some(1)),
            (SessionAttrs::Primary, Some(2)),
            (SessionAttrs::Standby, Some(1)),
            (SessionAttrs::PreferStandby, Some(1)),
        ];
        for (attrs, expected) in picks {
            assert_eq!(choose(attrs, &hosts), expected, "{attrs}");
        }
    }

    #[test]
    fn after_a_failover_the_writer_follows_the_new_primary_and_nothing_matches_in_between() {
        let before = nodes(&[Some(PRIMARY), Some(STANDBY)]);
        let during = nodes(&[None, Some(STANDBY)]);
        let after = nodes(&[Some(STANDBY), Some(PRIMARY)]);
        assert_eq!(choose(SessionAttrs::ReadWrite, &before), Some(0));
        assert_eq!(choose(SessionAttrs::ReadWrite, &during), None);
        assert_eq!(choose(SessionAttrs::ReadWrite, &after), Some(1));
    }

    #[test]
    fn prefer_standby_falls_back_to_the_first_reachable_host() {
        let hosts = nodes(&[None, Some(PRIMARY), Some(PRIMARY)]);
        assert_eq!(choose(SessionAttrs::PreferStandby, &hosts), Some(1));
        assert_eq!(choose(SessionAttrs::Standby, &hosts), None);
        assert_eq!(choose(SessionAttrs::Any, &nodes(&[None, None])), None);
    }

    #[test]
    fn commits_are_synchronous_only_with_a_named_standby_waited_for() {
        let mut state = node(false, false).unwrap();
        assert!(!state.commits_synchronously(), "no standby named");
        state.synchronous_standby_names = "ANY 1 (pgautofailover_standby_2)".into();
        assert!(state.commits_synchronously());
        for level in ["local", "off"] {
            state.synchronous_commit = level.into();
            assert!(!state.commits_synchronously(), "{level}");
        }
        state.synchronous_commit = "remote_apply".into();
        assert!(state.commits_synchronously());
    }

    #[test]
    fn the_names_read_back_as_written() {
        for name in [
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ] {
            assert_eq!(name.parse::<SessionAttrs>().unwrap().to_string(), name);
        }
        assert!("readwrite".parse::<SessionAttrs>().is_err());
    }
}
