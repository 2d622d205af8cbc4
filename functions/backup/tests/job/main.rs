//! The backup job against the local PostgreSQL and S3 stand-in, one test
//! binary for the crate (each file linked on its own would repeat the whole
//! dependency graph in an executable).

mod backup;
mod interrupted;
