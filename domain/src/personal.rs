//! Personal data that can be erased.
//!
//! A call's personal fields are stored sealed under a data key of the call (see the service's
//! `privacy` module); destroying that key erases them everywhere the event log is kept. A
//! field read back without its key is [`Personal::Erased`]: readers show it as erased (`null`
//! plus a flag), never as an error.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::submission::{CustomField, ExtraFields, NewCall};
use crate::values::{E164Number, EmailAddress, RecordingUrl, ShortText};

/// A personal value, in clear or erased. In JSON a clear value is the value itself; an erased
/// one is left out (fields of this type carry `#[serde(default, skip_serializing_if =
/// "Personal::is_erased")]`), so events written before sealing existed read as clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Personal<T> {
    Clear(T),
    #[default]
    Erased,
}

impl<T> Personal<T> {
    pub fn is_erased(&self) -> bool {
        matches!(self, Personal::Erased)
    }

    /// The value, unless erased.
    pub fn clear(&self) -> Option<&T> {
        match self {
            Personal::Clear(value) => Some(value),
            Personal::Erased => None,
        }
    }

    /// Takes the value out, leaving the field erased.
    pub fn take(&mut self) -> Personal<T> {
        std::mem::take(self)
    }
}

impl<T> Personal<Option<T>> {
    /// The value when it is clear and present.
    pub fn present(&self) -> Option<&T> {
        self.clear().and_then(Option::as_ref)
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Personal::Clear(value) => value.serialize(serializer),
            // Only reached when a field lacks `skip_serializing_if`; `null` is the safe answer.
            Personal::Erased => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Personal::Clear)
    }
}

/// A call's personal fields as the event log stores them: sealed, one ciphertext (base64) per
/// data key. Readers never see this: the service opens it back into the fields, or leaves
/// them erased when the key is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// [`CallPersonal`] under the call's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// [`AgentPersonal`] under the call's agent key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// What the call's data key seals: the customer, the number, the recording's address and
/// everything free-form the partner sent (metadata, custom fields, unknown fields). Ids, times,
/// the disposition status and the callback URL (the partner's own endpoint, still needed for a
/// callback due after an erasure) stay in clear.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallPersonal {
    pub recording_url: Personal<RecordingUrl>,
    pub contact_number: Personal<E164Number>,
    #[serde(default, skip_serializing_if = "ExtraFields::is_empty")]
    pub call_extra: ExtraFields,
    pub customer_name: Personal<Option<ShortText>>,
    pub customer_email: Personal<Option<EmailAddress>>,
    #[serde(default, skip_serializing_if = "ExtraFields::is_empty")]
    pub customer_extra: ExtraFields,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<CustomField>,
    #[serde(default, skip_serializing_if = "ExtraFields::is_empty")]
    pub extra: ExtraFields,
}

/// What the agent key seals: the agent's name, e-mail and unknown fields. Erasing an agent's
/// e-mail destroys this key only; the customer's data of the call is untouched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentPersonal {
    pub name: Personal<Option<ShortText>>,
    pub email: Personal<Option<EmailAddress>>,
    #[serde(default, skip_serializing_if = "ExtraFields::is_empty")]
    pub extra: ExtraFields,
}

impl NewCall {
    /// Takes the fields the call key seals out, leaving them erased.
    pub fn take_call_personal(&mut self) -> CallPersonal {
        CallPersonal {
            recording_url: self.call.recording_url.take(),
            contact_number: self.call.contact_number.take(),
            call_extra: std::mem::take(&mut self.call.extra),
            customer_name: self.customer.name.take(),
            customer_email: self.customer.email.take(),
            customer_extra: std::mem::take(&mut self.customer.extra),
            metadata: std::mem::take(&mut self.metadata),
            custom_fields: std::mem::take(&mut self.custom_fields),
            extra: std::mem::take(&mut self.extra),
        }
    }

    pub fn restore_call_personal(&mut self, p: CallPersonal) {
        self.call.recording_url = p.recording_url;
        self.call.contact_number = p.contact_number;
        self.call.extra = p.call_extra;
        self.customer.name = p.customer_name;
        self.customer.email = p.customer_email;
        self.customer.extra = p.customer_extra;
        self.metadata = p.metadata;
        self.custom_fields = p.custom_fields;
        self.extra = p.extra;
    }

    /// Takes the fields the agent key seals out, leaving them erased.
    pub fn take_agent_personal(&mut self) -> AgentPersonal {
        AgentPersonal {
            name: self.agent.name.take(),
            email: self.agent.email.take(),
            extra: std::mem::take(&mut self.agent.extra),
        }
    }

    pub fn restore_agent_personal(&mut self, p: AgentPersonal) {
        self.agent.name = p.name;
        self.agent.email = p.email;
        self.agent.extra = p.extra;
    }

    /// The customer's side of the call (number, names, metadata, ...) has been erased.
    pub fn personal_data_erased(&self) -> bool {
        self.call.contact_number.is_erased()
    }

    /// The agent's name and e-mail have been erased.
    pub fn agent_data_erased(&self) -> bool {
        self.agent.email.is_erased()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        #[serde(default, skip_serializing_if = "Personal::is_erased")]
        email: Personal<Option<String>>,
    }

    #[test]
    fn a_clear_value_is_the_value_itself_and_an_erased_one_is_left_out() {
        let clear = Holder {
            email: Personal::Clear(Some("a@b.example".into())),
        };
        assert_eq!(
            serde_json::to_string(&clear).unwrap(),
            r#"{"email":"a@b.example"}"#
        );
        let absent = Holder {
            email: Personal::Clear(None),
        };
        assert_eq!(serde_json::to_string(&absent).unwrap(), r#"{"email":null}"#);
        let erased = Holder {
            email: Personal::Erased,
        };
        assert_eq!(serde_json::to_string(&erased).unwrap(), "{}");
        for h in [clear, absent, erased] {
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
        }
    }
}
