//! Reading the official Twilio vectors (`../shared/twilio-vectors/`, beside
//! the clone, or `$TWILIO_VECTORS_DIR`).

use std::path::PathBuf;

use serde_json::Value;

fn vectors_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TWILIO_VECTORS_DIR") {
        return PathBuf::from(dir);
    }
    // shared/ (this crate) -> the clone -> its parent, where shared/twilio-vectors lives.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/twilio-vectors");
    assert!(
        dir.is_dir(),
        "Twilio vectors not found at {}; set TWILIO_VECTORS_DIR",
        dir.display()
    );
    dir
}

/// The vectors of one file, e.g. `signatures.json`.
pub fn load(name: &str) -> Vec<Value> {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vector file is JSON")
}
