//! Domain types and the facts every part of the platform shares. Each type
//! validates on construction, so a value that exists is a value that is
//! allowed. This crate depends on no storage, AWS SDK or web framework (the
//! model server uses it too); `sqlx` is an optional feature for the one
//! column type PostgreSQL stores as an enum.

mod digest;
mod geometry;
mod image;
pub mod invocation;
mod keys;
mod labels;
mod limits;
mod owner;
mod study;

pub use digest::Sha256Digest;
pub use geometry::{BoxError, PixelBox};
pub use image::ImageFacts;
pub use keys::{InvalidKey, ObjectKey, heatmap_key, image_key, preview_key};
pub use labels::{LabelSet, LabelSetError, LabelSets};
pub use limits::MAX_IMAGE_BYTES;
pub use owner::{Owner, OwnerError};
pub use study::{MediaType, StudyId, StudyStatus, UnknownMediaType};
