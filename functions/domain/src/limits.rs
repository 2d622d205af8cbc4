//! Limits every component must agree on.

/// The largest image accepted anywhere: the API refuses larger uploads, the
/// inference handler, the COCO export and the model server read at most
/// this much (each holds one image in memory).
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
