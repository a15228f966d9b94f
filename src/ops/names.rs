//! Validation of the names and keys callers hand to operations and jobs.

use crate::{Error, Result};

/// The longest item key, unique key or worker name, in bytes. LMDB keys are
/// at most 511 bytes and index keys add a name and 16 bytes of times and ids.
pub const MAX_KEY_LEN: usize = 400;

/// The longest operation or job kind name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// An operation or job kind name: 1 to 64 of ASCII letters, digits, `_`,
/// `-`, `.` and `:`.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(valid_char) {
        return Err(Error::invalid_argument(format!(
            "{what} name {name:?}: use 1 to {MAX_NAME_LEN} ASCII letters, digits, '_', '-', '.', ':'"
        )));
    }
    Ok(())
}

/// An item key, unique key or worker name: 1 to 400 bytes, no NUL (NUL
/// separates fields in stored keys).
pub fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.contains('\0') {
        return Err(Error::invalid_argument(format!(
            "{what} {key:?}: must be 1 to {MAX_KEY_LEN} bytes without NUL"
        )));
    }
    Ok(())
}

/// A JSON document (payloads and results are stored as given, once checked).
pub fn check_json(what: &str, text: &str) -> Result<()> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(drop)
        .map_err(|err| Error::invalid_argument(format!("{what} is not valid JSON: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn bad_names_and_keys_are_invalid_arguments() {
        for name in ["", "a b", "x/y", "é", &"n".repeat(65)] {
            assert_eq!(check_name("kind", name).unwrap_err().kind(), ErrorKind::InvalidArgument);
        }
        check_name("kind", "mail.send-v2:x_y").unwrap();
        for key in ["", "a\0b", &"k".repeat(401)] {
            assert_eq!(check_key("item", key).unwrap_err().kind(), ErrorKind::InvalidArgument);
        }
        check_key("item", "datasets/../ é").unwrap();
    }

    #[test]
    fn payloads_must_be_json() {
        check_json("payload", r#"{"a":[1,2]}"#).unwrap();
        let err = check_json("payload", "{nope").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().starts_with("payload"));
    }
}
