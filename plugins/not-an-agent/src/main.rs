//! Fixture: a WASI command, not a corral agent; loading it must fail with a clear error.

fn main() {
    println!("I am a command, not an agent.");
}
