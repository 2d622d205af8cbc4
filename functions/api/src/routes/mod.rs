//! The endpoints under `/v1`, one module per resource.

pub mod annotations;
pub mod health;
pub mod label_sets;
pub mod predict;
pub mod studies;
pub mod uploads;
