//! Who is calling: verification of the Cognito JWT in `Authorization: Bearer`,
//! roles from its groups, and the Twilio client identity derived from it.
//!
//! In AWS the HTTP API's JWT authorizer checks the token first; the functions
//! check it again with the same rules (RS256 signature against the issuer's
//! JWKS, `iss`, audience or `client_id`, `token_use`, `exp`/`nbf`), so the
//! rules also hold locally, where no authorizer runs. See docs/auth.md.
//!
//! Built on `jsonwebtoken` (pure-Rust `rust_crypto` backend, no C toolchain for
//! the arm64 Lambda build): it parses JWKs into keys, restricts the algorithm
//! to RS256 and checks the registered claims; Cognito's own claims
//! (`token_use`, `client_id`, `cognito:groups`) are checked here.

pub mod identity;
mod jwks;
#[cfg(feature = "test-support")]
pub mod testing;
mod verify;

pub use identity::derive_identity;
pub use jwks::{JWKS_REFETCH_INTERVAL, JwksCache, JwksError};
pub use verify::{AuthConfig, AuthError, LEEWAY_SECONDS, TokenUse, Verifier, bearer_token};

use std::collections::BTreeSet;

use serde::Serialize;

use crate::http::ApiError;

/// What a user may do, from their Cognito groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Group `agents`: takes calls.
    Agent,
    /// Group `supervisors`: monitors, whispers, barges.
    Supervisor,
}

impl Role {
    /// The Cognito group that grants this role (`template.yaml` declares them).
    pub const fn group(self) -> &'static str {
        match self {
            Self::Agent => "agents",
            Self::Supervisor => "supervisors",
        }
    }

    /// Unknown groups grant nothing.
    pub fn from_group(group: &str) -> Option<Self> {
        [Self::Agent, Self::Supervisor]
            .into_iter()
            .find(|r| r.group() == group)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Agent => "agent",
            Self::Supervisor => "supervisor",
        })
    }
}

/// An authenticated caller. Only [`Verifier`] makes one from a request, so
/// holding a `Principal` means the token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Cognito's `sub`: unique and never reassigned.
    pub subject: String,
    /// Cognito's username (`username` in access tokens, `cognito:username`
    /// in ID tokens); the subject when the token carries none.
    pub username: String,
    pub roles: BTreeSet<Role>,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// 403 unless the caller has `role`.
    pub fn require_role(&self, role: Role) -> Result<(), ApiError> {
        self.require_any_role(&[role])
    }

    /// 403 unless the caller has at least one of `roles`.
    pub fn require_any_role(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.has_role(*r)) {
            Ok(())
        } else {
            let wanted: Vec<String> = roles.iter().map(|r| r.group().to_owned()).collect();
            Err(ApiError::Forbidden(format!(
                "this route needs membership of the group {}",
                wanted.join(" or ")
            )))
        }
    }

    /// The caller's Twilio client identity; see [`derive_identity`].
    pub fn identity(&self) -> Result<crate::ids::ClientIdentity, ApiError> {
        derive_identity(&self.subject, &self.username)
            .map_err(|e| ApiError::Internal(format!("derived identity: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_known_groups_only() {
        assert_eq!(Role::from_group("agents"), Some(Role::Agent));
        assert_eq!(Role::from_group("supervisors"), Some(Role::Supervisor));
        assert_eq!(Role::from_group("Agents"), None);
        assert_eq!(Role::from_group("admins"), None);
    }

    #[test]
    fn guards() {
        let p = Principal {
            subject: "s".into(),
            username: "u".into(),
            roles: [Role::Agent].into(),
        };
        assert!(p.require_role(Role::Agent).is_ok());
        let err = p.require_role(Role::Supervisor).unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(p.require_any_role(&[Role::Supervisor, Role::Agent]).is_ok());
        let nobody = Principal {
            roles: BTreeSet::new(),
            ..p
        };
        assert!(
            nobody
                .require_any_role(&[Role::Agent, Role::Supervisor])
                .is_err()
        );
    }
}
