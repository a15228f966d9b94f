//! Item names, type names and paths: what is allowed, and the folded form
//! used for case-insensitive uniqueness and lookup.

use crate::{Error, Result};

/// The most characters a name may have.
pub const MAX_NAME_CHARS: usize = 128;

/// The most bytes a name may take once folded to lower case. LMDB keys are
/// at most 511 bytes and a child-index key is the 16-byte parent id plus the
/// folded name; this leaves room and is checked up front, so an over-long
/// name is a clear error and never a raw storage failure.
pub const MAX_NAME_BYTES: usize = 480;

/// The most bytes a type name may take (a type-index key is the type, a
/// separator and a 16-byte id).
pub const MAX_TYPE_BYTES: usize = 256;

/// A valid item name: its display form (case kept) and its folded form
/// (lower case, the key for uniqueness and lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub display: String,
    pub folded: String,
}

/// Checks `name`: Unicode letters and digits, `_`, `.`, `-`; 1 to
/// [`MAX_NAME_CHARS`] characters; not `.` or `..`; at most
/// [`MAX_NAME_BYTES`] bytes folded.
pub(crate) fn check_name(name: &str) -> Result<Name> {
    let bad = |why: &str| Error::invalid_argument(format!("bad item name {name:?}: {why}"));
    let chars = name.chars().count();
    if chars == 0 {
        return Err(bad("it is empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(bad(&format!("{chars} characters, at most {MAX_NAME_CHARS}")));
    }
    if name == "." || name == ".." {
        return Err(bad("`.` and `..` are not names"));
    }
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(bad(&format!(
            "{c:?} is not allowed (only letters, digits, `_`, `.`, `-`)"
        )));
    }
    let folded = fold(name);
    if folded.len() > MAX_NAME_BYTES {
        return Err(bad(&format!(
            "{} bytes in lower case, at most {MAX_NAME_BYTES}",
            folded.len()
        )));
    }
    Ok(Name {
        display: name.to_owned(),
        folded,
    })
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The case-insensitive key of a name.
pub(crate) fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// Checks a type name: 1 to [`MAX_TYPE_BYTES`] bytes of letters, digits,
/// `_`, `.`, `-`, `:`. Types are case-sensitive.
pub(crate) fn check_type(kind: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid_argument(format!("bad item type {kind:?}: {why}"));
    if kind.is_empty() {
        return Err(bad("it is empty"));
    }
    if kind.len() > MAX_TYPE_BYTES {
        return Err(bad(&format!("{} bytes, at most {MAX_TYPE_BYTES}", kind.len())));
    }
    if let Some(c) = kind.chars().find(|&c| !(is_name_char(c) || c == ':')) {
        return Err(bad(&format!("{c:?} is not allowed")));
    }
    Ok(())
}

/// Splits a drive path into checked names. Leading and trailing spaces and
/// slashes are ignored (paths are always relative to the drive's root), so
/// `""` and `"/"` are the root itself; an empty step (`a//b`), `.`, `..` or a
/// bad name is an error naming the step.
pub(crate) fn parse_path(path: &str) -> Result<Vec<Name>> {
    let trimmed = path.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .enumerate()
        .map(|(index, step)| check_name(step).map_err(|e| e.context(format!("path {path:?}, step {}", index + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn names_keep_their_case_and_fold_to_lower_case() {
        let name = check_name("Users.Ä-1_x").unwrap();
        assert_eq!(name.display, "Users.Ä-1_x");
        assert_eq!(name.folded, "users.ä-1_x");
        assert!(check_name("名前").is_ok());
        assert!(check_name(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn bad_names_are_invalid_arguments_that_say_why() {
        let long_wide = "𝔸".repeat(128); // 128 characters, 512 bytes
        for (bad, why) in [
            ("", "empty"),
            (".", "`.`"),
            ("..", "`..`"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("a\0b", "'\\0'"),
            (&"a".repeat(129)[..], "129 characters"),
            (&long_wide[..], "bytes in lower case"),
        ] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.message().contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn paths_ignore_outer_slashes_and_spaces_and_name_the_bad_step() {
        let steps: Vec<String> = parse_path(" /A/b/c/ ").unwrap().into_iter().map(|n| n.folded).collect();
        assert_eq!(steps, ["a", "b", "c"]);
        assert!(parse_path("/").unwrap().is_empty());
        assert!(parse_path("").unwrap().is_empty());
        for bad in ["a//b", "a/../b", "a/./b", "a/b c"] {
            let err = parse_path(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(err.message().contains("step 2"), "{err}");
        }
    }

    #[test]
    fn type_names_are_checked() {
        assert!(check_type("acme:doc.v1").is_ok());
        assert_eq!(check_type("").unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(check_type("a\0").unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            check_type(&"t".repeat(300)).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
