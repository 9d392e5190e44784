//! The `kiln` command-line front end.
fn main() {}
