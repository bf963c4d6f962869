//! Tests of the whole crate, in one binary (each test binary links libtorch, which is slow).
mod dataset;
mod fixture;
mod prepare;
mod stream;
