//! The Twilio client identity of a user.
//!
//! Twilio accepts letters, digits and underscore, at most 121 characters.
//! Usernames may hold anything (e-mail addresses, accents, spaces), so the
//! identity is a readable, sanitised prefix of the username plus a hash of the
//! exact Cognito subject. The subject is unique per user and never reassigned,
//! so two users differ in the hash even when their sanitised names are equal
//! (`o'brien` and `o_brien`); the same user always gets the same identity.

use sha2::{Digest, Sha256};

use crate::ids::{ClientIdentity, InvalidId};

/// Characters of readable prefix kept.
pub const PREFIX_MAX: usize = 32;
/// Hex digits of the subject's SHA-256 kept: 128 bits, so a collision between
/// two subjects is out of reach for any user pool.
pub const HASH_HEX: usize = 32;

/// `<sanitised username>_<first 128 bits of sha256(subject), hex>`; at most
/// `PREFIX_MAX + 1 + HASH_HEX` (65) characters.
pub fn derive_identity(subject: &str, username: &str) -> Result<ClientIdentity, InvalidId> {
    let mut prefix = String::with_capacity(PREFIX_MAX);
    for c in username.chars() {
        if prefix.len() >= PREFIX_MAX {
            break;
        }
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        // Runs of rejected characters read better as one underscore.
        if c == '_' && prefix.ends_with('_') {
            continue;
        }
        prefix.push(c);
    }
    let prefix = prefix.trim_matches('_');
    let prefix = if prefix.is_empty() { "user" } else { prefix };
    let digest = Sha256::digest(subject.as_bytes());
    let mut hash = String::with_capacity(HASH_HEX);
    for byte in digest.iter().take(HASH_HEX / 2) {
        hash.push_str(&format!("{byte:02x}"));
    }
    // Valid by construction; the `Result` only keeps a future change to
    // `ClientIdentity`'s rules from turning into a panic.
    ClientIdentity::parse(&format!("{prefix}_{hash}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn valid(id: &ClientIdentity) {
        let s = id.as_str();
        assert!(!s.is_empty() && s.len() <= ClientIdentity::MAX_LEN, "{s}");
        assert!(
            s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{s}"
        );
        assert!(ClientIdentity::parse(s).is_ok());
    }

    #[test]
    fn readable_and_stable() {
        let a = derive_identity(
            "b277f015-9777-44d9-b259-2ee54997a5f6",
            "alice.o'brien@example.com",
        )
        .unwrap();
        assert!(a.as_str().starts_with("alice_o_brien_example_com_"), "{a}");
        assert_eq!(
            a,
            derive_identity(
                "b277f015-9777-44d9-b259-2ee54997a5f6",
                "alice.o'brien@example.com"
            )
            .unwrap()
        );
        valid(&a);
    }

    #[test]
    fn names_twilio_rejects_still_give_valid_distinct_identities() {
        let users = [
            ("s1", "o'brien"),
            ("s2", "o_brien"),
            ("s3", "o brien"),
            ("s4", "o-brien"),
            ("s5", "Ørjan Ærø"),
            ("s6", "日本語"),
            ("s7", ""),
            ("s8", "___"),
            ("s9", "client:bob"),
            ("s10", &"x".repeat(500)),
            ("s11", &"é".repeat(200)),
            ("s12", "a\u{0}b\nc"),
        ];
        let mut seen = HashMap::new();
        for (sub, name) in users {
            let id = derive_identity(sub, name).unwrap();
            valid(&id);
            assert!(seen.insert(id.clone(), sub).is_none(), "{id} collides");
        }
    }

    #[test]
    fn same_name_different_subjects_never_collide() {
        // Property-style: many subjects under one name, and one subject under
        // many names: identity depends on the subject for uniqueness.
        let mut seen = std::collections::HashSet::new();
        for i in 0..5_000 {
            let id = derive_identity(&format!("sub-{i}"), "same name").unwrap();
            valid(&id);
            assert!(seen.insert(id));
        }
        let hash_of = |id: ClientIdentity| id.as_str().rsplit('_').next().map(str::to_owned);
        assert_eq!(
            hash_of(derive_identity("one", "name a").unwrap()),
            hash_of(derive_identity("one", "name b").unwrap())
        );
    }
}
