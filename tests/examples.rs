//! The library examples run as tests, so they cannot rot.

#[path = "../examples/embed.rs"]
mod embed;

#[test]
fn the_embed_example_runs() {
    embed::run().expect("examples/embed.rs");
}
