//! The storage adapters against the local stand-ins (PostgreSQL, s3s-fs,
//! dynalite, SecantusDB), one test binary for the crate: each file linked
//! on its own would repeat the whole dependency graph in an executable.

mod documentdb;
mod dynamodb;
mod postgres;
mod s3;
