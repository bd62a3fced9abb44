//! Rebuilds rdev-server when anything under the repository's `templates/` folder changes:
//! the built-in templates are embedded with `include_dir!`, which does not tell Cargo about
//! files added or removed there.

fn main() {
    println!("cargo:rerun-if-changed=../../templates");
    println!("cargo:rerun-if-changed=build.rs");
}
