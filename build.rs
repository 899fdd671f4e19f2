//! Rebuilds the daemon when a migration in schema/ changes: `sqlx::migrate!` embeds them at compile time
//! and cannot see a new file on its own.

fn main() {
    println!("cargo:rerun-if-changed=schema");
}
