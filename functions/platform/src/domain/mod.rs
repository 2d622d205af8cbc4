//! Domain types. Each validates on construction, so a value that exists is
//! a value that is allowed.

mod digest;
mod geometry;
mod labels;
mod owner;
mod study;

pub use digest::Sha256Digest;
pub use geometry::{BoxError, PixelBox};
pub use labels::{LabelSet, LabelSetError, LabelSets};
pub use owner::{Owner, OwnerError};
pub use study::{MediaType, StudyId, StudyStatus, UnknownMediaType};
