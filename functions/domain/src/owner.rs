use std::fmt;

use serde::{Deserialize, Serialize};

/// The tenant a study belongs to: the authenticated caller's subject (a
/// Cognito `sub` in AWS, a development token's subject locally).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct Owner(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OwnerError {
    #[error("owner must be 1 to 128 characters long")]
    Length,
    #[error("owner may only contain letters, digits and . _ - @ : |")]
    Character,
}

impl Owner {
    pub fn new(value: impl Into<String>) -> Result<Self, OwnerError> {
        let value = value.into();
        if value.is_empty() || value.len() > 128 {
            return Err(OwnerError::Length);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-@:|".contains(c);
        if !value.chars().all(allowed) {
            return Err(OwnerError::Character);
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Owner {
    type Error = OwnerError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> Self {
        owner.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_cognito_subjects_and_rejects_junk() {
        assert!(Owner::new("3f1c2a9e-7b1d-4a8e-9c55-0d2b7f6a1e42").is_ok());
        assert!(Owner::new("dev|alice@example.org").is_ok());
        assert_eq!(Owner::new(""), Err(OwnerError::Length));
        assert_eq!(Owner::new("x".repeat(129)), Err(OwnerError::Length));
        assert_eq!(Owner::new("a b"), Err(OwnerError::Character));
        assert_eq!(Owner::new("../etc"), Err(OwnerError::Character));
    }
}
