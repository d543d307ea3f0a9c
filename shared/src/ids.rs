//! Identifiers that parse once and cannot hold an invalid value afterwards.
//!
//! Twilio rejects (or worse, silently ignores) malformed SIDs, numbers and client
//! identities. Parsing them at the edge means a bad webhook field becomes a clear
//! 400 before any state is touched, and nothing deeper has to re-check.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value was refused. The message names what was expected so it can go
/// straight into a 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub reason: String,
}

impl InvalidId {
    fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

/// `Display`, `Debug`, `AsRef<str>`, `FromStr` and serde for a string newtype
/// whose `parse` is the only constructor.
macro_rules! string_newtype_impls {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Defines a Twilio SID type: a two-letter prefix followed by 32 lowercase hex digits.
macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                parse_sid(value, $prefix, $kind).map(|()| Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A fresh random SID; used by the simulator and by tests.
            pub fn random() -> Self {
                Self(random_sid($prefix))
            }
        }

        string_newtype_impls!($name);
    };
}

fn parse_sid(value: &str, prefix: &str, kind: &'static str) -> Result<(), InvalidId> {
    let Some(hex) = value.strip_prefix(prefix) else {
        return Err(InvalidId::new(kind, format!("must start with {prefix}")));
    };
    if hex.len() != 32 {
        return Err(InvalidId::new(
            kind,
            format!("must be {prefix} followed by 32 hex digits"),
        ));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(InvalidId::new(
            kind,
            "must contain lowercase hex digits only",
        ));
    }
    Ok(())
}

fn random_sid(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let mut out = String::with_capacity(34);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

sid_type!(
    /// The SID of one call leg (`CA…`).
    CallSid, "CA", "CallSid"
);
sid_type!(
    /// The SID of a conference (`CF…`).
    ConferenceSid, "CF", "ConferenceSid"
);
sid_type!(
    /// The SID of a recording (`RE…`).
    RecordingSid, "RE", "RecordingSid"
);
sid_type!(
    /// The SID of a Twilio account or subaccount (`AC…`).
    AccountSid, "AC", "AccountSid"
);
sid_type!(
    /// The SID of an API key (`SK…`), the username of API-key Basic auth.
    ApiKeySid, "SK", "ApiKeySid"
);
sid_type!(
    /// The SID of a TwiML App (`AP…`), which routes the softphone's outgoing calls.
    ApplicationSid, "AP", "ApplicationSid"
);

/// A telephone number in E.164 form: `+`, a country code not starting with 0,
/// at most 15 digits in all.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    const MIN_DIGITS: usize = 7;
    const MAX_DIGITS: usize = 15;

    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let kind = "E.164 number";
        let Some(digits) = value.strip_prefix('+') else {
            return Err(InvalidId::new(kind, "must start with +"));
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidId::new(kind, "must contain digits only after +"));
        }
        if digits.starts_with('0') {
            return Err(InvalidId::new(kind, "country code cannot start with 0"));
        }
        if !(Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&digits.len()) {
            return Err(InvalidId::new(
                kind,
                format!(
                    "must have {} to {} digits",
                    Self::MIN_DIGITS,
                    Self::MAX_DIGITS
                ),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits after `+`; the country code is a prefix of these.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// Whether the number's country calling code is one of `codes` (digits
    /// without `+`, e.g. `"1"`, `"44"`, `"81"`). Calling codes are prefix-free,
    /// so a prefix match is exact.
    pub fn has_country_code_in<S: AsRef<str>>(&self, codes: &[S]) -> bool {
        codes.iter().any(|c| self.digits().starts_with(c.as_ref()))
    }
}

/// A Twilio Voice client identity: what follows `client:` in TwiML and in the
/// Participants API `To`. Letters, digits and underscore only so it survives
/// every place Twilio puts it (URIs, TwiML, access tokens) unescaped.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientIdentity(String);

impl ClientIdentity {
    /// Twilio caps identities at 121 characters.
    pub const MAX_LEN: usize = 121;

    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let kind = "client identity";
        let value = value.strip_prefix("client:").unwrap_or(value);
        if value.is_empty() {
            return Err(InvalidId::new(kind, "must not be empty"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(InvalidId::new(
                kind,
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(InvalidId::new(
                kind,
                "may contain only letters, digits and underscore",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address Twilio dials: `client:<identity>`.
    pub fn to_client_uri(&self) -> String {
        format!("client:{}", self.0)
    }
}

string_newtype_impls!(E164);
string_newtype_impls!(ClientIdentity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_accept_twilio_shapes_only() {
        assert!(CallSid::parse("CA923d5a4fd12aabfe228f219e9cb0eb53").is_ok());
        assert!(CallSid::parse("CF923d5a4fd12aabfe228f219e9cb0eb53").is_err());
        assert!(CallSid::parse("CA923d5a4fd12aabfe228f219e9cb0eb5").is_err());
        assert!(CallSid::parse("CA923d5a4fd12aabfe228f219e9cb0eb533").is_err());
        assert!(CallSid::parse("CA923D5A4FD12AABFE228F219E9CB0EB53").is_err());
        assert!(CallSid::parse("CA923d5a4fd12aabfe228f219e9cb0eb5g").is_err());
        assert!(CallSid::parse("").is_err());
        assert!(RecordingSid::parse(RecordingSid::random().as_str()).is_ok());
        let err = ConferenceSid::parse("nope").unwrap_err();
        assert_eq!(err.to_string(), "invalid ConferenceSid: must start with CF");
    }

    #[test]
    fn sids_refuse_invalid_values_when_deserialised() {
        let ok: Result<AccountSid, _> =
            serde_json::from_str("\"AC17149d439536b3216fdaeeb975729fae\"");
        assert!(ok.is_ok());
        let bad: Result<AccountSid, _> = serde_json::from_str("\"AC1\"");
        assert!(bad.is_err());
    }

    #[test]
    fn e164_numbers() {
        for ok in ["+815076262352", "+14155550100", "+4420794600"] {
            assert!(E164::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "815076262352",
            "+0815076262352",
            "+141555",
            "+1234567890123456",
            "+1 415 555 0100",
            "+",
            "",
        ] {
            assert!(E164::parse(bad).is_err(), "{bad}");
        }
        let n = E164::parse("+815076262352").unwrap();
        assert!(n.has_country_code_in(&["1", "81"]));
        assert!(!n.has_country_code_in(&["1", "44"]));
    }

    #[test]
    fn client_identities() {
        assert_eq!(
            ClientIdentity::parse("client:agent_7").unwrap().as_str(),
            "agent_7"
        );
        assert!(ClientIdentity::parse("agent-7").is_err());
        assert!(ClientIdentity::parse("agent 7").is_err());
        assert!(ClientIdentity::parse("").is_err());
        assert!(ClientIdentity::parse(&"a".repeat(121)).is_ok());
        assert!(ClientIdentity::parse(&"a".repeat(122)).is_err());
        assert_eq!(
            ClientIdentity::parse("bob").unwrap().to_client_uri(),
            "client:bob"
        );
    }
}
