fn main() {
    // The migrations are embedded at build time: rebuild when one is added or changed.
    println!("cargo:rerun-if-changed=../migrations");
}
