//! S3 object keys, and the key layout of the images bucket, spelled here
//! only. Keys carry random study ids and content digests: nothing that
//! identifies a patient or an owner.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{MediaType, Sha256Digest, StudyId};

/// An S3 object key that is safe to use: 1 to 1024 bytes, no leading slash,
/// no empty, `.` or `..` segments, no control characters. Records hold this
/// type, so a key read back from storage was checked on the way out too.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid object key {key:?}: {reason}")]
pub struct InvalidKey {
    pub key: String,
    pub reason: &'static str,
}

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidKey> {
        let key = key.into();
        let reason = if key.is_empty() || key.len() > 1024 {
            Some("must be 1 to 1024 bytes")
        } else if key.chars().any(char::is_control) {
            Some("must not contain control characters")
        } else if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            Some("must not start or end with '/' or contain empty, '.' or '..' segments")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidKey { key, reason }),
            None => Ok(Self(key)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = InvalidKey;
    fn try_from(key: String) -> Result<Self, InvalidKey> {
        Self::new(key)
    }
}

impl From<ObjectKey> for String {
    fn from(key: ObjectKey) -> Self {
        key.0
    }
}

/// A key column (`TEXT`), checked as it is read.
#[cfg(feature = "sqlx")]
mod column {
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
    use sqlx::{Decode, Encode, Postgres, Type};

    use super::ObjectKey;

    impl Type<Postgres> for ObjectKey {
        fn type_info() -> PgTypeInfo {
            <String as Type<Postgres>>::type_info()
        }
        fn compatible(ty: &PgTypeInfo) -> bool {
            <String as Type<Postgres>>::compatible(ty)
        }
    }

    impl Encode<'_, Postgres> for ObjectKey {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            <&str as Encode<Postgres>>::encode(self.as_str(), buf)
        }
    }

    impl<'r> Decode<'r, Postgres> for ObjectKey {
        fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
            Ok(ObjectKey::new(<String as Decode<Postgres>>::decode(value)?)?)
        }
    }
}

/// Where a study's original image is uploaded.
pub fn image_key(study: StudyId, media_type: MediaType) -> ObjectKey {
    layout(format!("studies/{study}/original.{}", media_type.file_extension()))
}

/// The browser-viewable preview of an image, by content (any study with
/// this content shows it).
pub fn preview_key(sha256: &Sha256Digest) -> ObjectKey {
    layout(format!("previews/{}.png", sha256.to_hex()))
}

/// The Grad-CAM heatmap of an image by one model version, by content.
/// Model names and versions are reduced to key-safe characters (`_` for an
/// empty one, and dots alone become underscores, so no segment is `.` or `..`).
pub fn heatmap_key(sha256: &Sha256Digest, model_name: &str, model_version: &str) -> ObjectKey {
    let clean = |s: &str| {
        let cleaned = s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect::<String>();
        if cleaned.chars().all(|c| c == '.') { "_".repeat(cleaned.len().max(1)) } else { cleaned }
    };
    layout(format!("heatmaps/{}/{}/{}.png", sha256.to_hex(), clean(model_name), clean(model_version)))
}

/// The layout above makes only valid keys (ids, hex digests, cleaned
/// names between fixed segments), so no check is needed.
fn layout(key: String) -> ObjectKey {
    debug_assert!(ObjectKey::new(key.clone()).is_ok(), "{key}");
    ObjectKey(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_only_ids_and_digests() {
        let id: StudyId = "2f1b8a3c-0000-4000-8000-000000000001".parse().expect("id");
        assert_eq!(image_key(id, MediaType::Dicom).as_str(), "studies/2f1b8a3c-0000-4000-8000-000000000001/original.dcm");
        let digest = Sha256Digest::of(b"x");
        assert_eq!(preview_key(&digest).as_str(), format!("previews/{}.png", digest.to_hex()));
        assert_eq!(heatmap_key(&digest, "dense net/121", "1.0").as_str(), format!("heatmaps/{}/dense_net_121/1.0.png", digest.to_hex()));
        assert_eq!(heatmap_key(&digest, "", "..").as_str(), format!("heatmaps/{}/_/__.png", digest.to_hex()));
    }

    #[test]
    fn unsafe_keys_are_refused_also_when_deserialised() {
        for bad in ["", "/a", "a//b", "a/../b", "a/.", "a\nb"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
            assert!(serde_json::from_value::<ObjectKey>(serde_json::json!(bad)).is_err(), "{bad:?}");
        }
        let key: ObjectKey = serde_json::from_value(serde_json::json!("studies/a/original.png")).expect("valid");
        assert_eq!(serde_json::to_value(&key).expect("json"), serde_json::json!("studies/a/original.png"));
    }
}
