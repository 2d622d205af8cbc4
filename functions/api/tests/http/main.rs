//! The API on a random port against the local stack, one test binary for
//! the crate: each integration-test file would otherwise be linked as its
//! own ~100 MB executable with the whole dependency graph in it.

mod common;

mod annotations;
mod inference;
mod oidc;
mod studies;
