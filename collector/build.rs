//! Rebuilds the collector when the web console's built files change: they are embedded
//! (`src/console.rs`), and a file added to `console/dist` is not otherwise noticed.

fn main() {
    println!("cargo:rerun-if-changed=../console/dist");
}
