use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The public identifier of a study (a random UUID). Database row ids never
/// leave the data lake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct StudyId(Uuid);

impl StudyId {
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl FromStr for StudyId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl fmt::Display for StudyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Where a study is in its life: created (upload URL issued) -> uploaded
/// (object read and described) -> processing (sent to the model) -> done,
/// or failed at any step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(type_name = "study_status", rename_all = "lowercase"))]
#[serde(rename_all = "lowercase")]
pub enum StudyStatus {
    Created,
    Uploaded,
    Processing,
    Done,
    Failed,
}

impl StudyStatus {
    pub const ALL: [StudyStatus; 5] = [Self::Created, Self::Uploaded, Self::Processing, Self::Done, Self::Failed];

    /// The status named `name` (its lowercase name), if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Uploaded => "uploaded",
            Self::Processing => "processing",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// The image formats the platform accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MediaType {
    #[serde(rename = "image/png")]
    Png,
    #[serde(rename = "image/jpeg")]
    Jpeg,
    #[serde(rename = "application/dicom")]
    Dicom,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported media type {0:?}: expected image/png, image/jpeg or application/dicom")]
pub struct UnknownMediaType(pub String);

impl MediaType {
    pub const ALL: [MediaType; 3] = [Self::Png, Self::Jpeg, Self::Dicom];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Dicom => "application/dicom",
        }
    }

    pub fn file_extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Dicom => "dcm",
        }
    }

    /// Identifies the format from the first bytes of the content, never from
    /// what a client claims. DICOM Part 10 files carry "DICM" after a
    /// 128-byte preamble.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
            Some(Self::Dicom)
        } else {
            None
        }
    }
}

impl FromStr for MediaType {
    type Err = UnknownMediaType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Parameters such as "; charset=..." carry no meaning for images.
        let essence = s.split(';').next().unwrap_or_default().trim();
        Self::ALL.into_iter().find(|m| m.as_str().eq_ignore_ascii_case(essence)).ok_or_else(|| UnknownMediaType(s.to_owned()))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_formats_from_magic_bytes() {
        assert_eq!(MediaType::sniff(b"\x89PNG\r\n\x1a\n...."), Some(MediaType::Png));
        assert_eq!(MediaType::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(MediaType::Jpeg));
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM\x02\x00");
        assert_eq!(MediaType::sniff(&dicom), Some(MediaType::Dicom));
        assert_eq!(MediaType::sniff(b"GIF89a"), None);
        assert_eq!(MediaType::sniff(b""), None);
    }

    #[test]
    fn parses_content_type_headers() {
        assert_eq!("image/PNG".parse(), Ok(MediaType::Png));
        assert_eq!("application/dicom; transfer-syntax=1.2.840.10008.1.2.1".parse(), Ok(MediaType::Dicom));
        assert!("image/gif".parse::<MediaType>().is_err());
    }
}
