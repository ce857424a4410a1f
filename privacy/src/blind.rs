//! Keyed blind indexes: an HMAC of a normalised value under the index key, stored beside a
//! call's keys so a subject's calls can be found without keeping the value in clear. Without
//! the key an index value cannot be tested against guesses (unlike a plain hash of a phone
//! number, which a table of all numbers reverses).

use crate::keys::{Privacy, VersionNotHeld};

/// What a blind index is of; part of the MAC, so equal values of two kinds never match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    ContactNumber,
    CustomerEmail,
    AgentEmail,
}

impl Subject {
    fn label(self) -> &'static [u8] {
        match self {
            Subject::ContactNumber => b"contact_number",
            Subject::CustomerEmail => b"customer_email",
            Subject::AgentEmail => b"agent_email",
        }
    }
}

/// Phone numbers are compared as E.164 digits (spaces, dashes and brackets dropped); e-mail
/// addresses trimmed and lower-cased (a mailbox's case is not significant in practice).
pub fn normalise(subject: Subject, value: &str) -> String {
    match subject {
        Subject::ContactNumber => value
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect(),
        Subject::CustomerEmail | Subject::AgentEmail => value.trim().to_lowercase(),
    }
}

impl Privacy {
    /// The blind index of `value` for one partner (partners never share an index value), under
    /// the index key of the master key that wraps new rows.
    pub fn blind_index(&self, partner_id: &str, subject: Subject, value: &str) -> Vec<u8> {
        self.blind_index_under(self.writing_version(), partner_id, subject, value)
            .expect("the writing version is always one held")
    }

    /// The blind index of `value` under the index key of master key `version`.
    pub fn blind_index_under(
        &self,
        version: i32,
        partner_id: &str,
        subject: Subject,
        value: &str,
    ) -> Result<Vec<u8>, VersionNotHeld> {
        self.mac(
            version,
            &[
                partner_id.as_bytes(),
                subject.label(),
                normalise(subject, value).as_bytes(),
            ],
        )
    }

    /// Every index value `value` may be stored under: one per master key held (two during a
    /// rotation, when rows not yet re-wrapped still hold indexes under the previous key).
    pub fn blind_indexes(&self, partner_id: &str, subject: Subject, value: &str) -> Vec<Vec<u8>> {
        self.versions()
            .map(|v| {
                self.blind_index_under(v, partner_id, subject, value)
                    .expect("a version held")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterKey;

    #[test]
    fn equal_subjects_match_after_normalising_and_nothing_else_does() {
        let p = Privacy::new(&MasterKey::from_base64(&MasterKey::generate_base64()).unwrap());
        let n = |v| p.blind_index("p", Subject::ContactNumber, v);
        assert_eq!(n("+44 20-7946 0000"), n("+442079460000"));
        assert_ne!(n("+442079460000"), n("+442079460001"));
        let e = |s, v| p.blind_index("p", s, v);
        assert_eq!(
            e(Subject::CustomerEmail, " Ann@Example.com"),
            e(Subject::CustomerEmail, "ann@example.com")
        );
        assert_ne!(
            e(Subject::CustomerEmail, "ann@example.com"),
            e(Subject::AgentEmail, "ann@example.com")
        );
        assert_ne!(
            p.blind_index("p", Subject::CustomerEmail, "ann@example.com"),
            p.blind_index("q", Subject::CustomerEmail, "ann@example.com")
        );
    }
}
