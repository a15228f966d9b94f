//! Item names, type names and paths: what is allowed, and the folded form
//! used for case-insensitive uniqueness and lookup.

use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// The most characters a name may have.
pub const MAX_NAME_CHARS: usize = 128;

/// The most bytes a name may take once case-folded. LMDB keys are
/// at most 511 bytes and a child-index key is the 16-byte parent id plus the
/// folded name; this leaves room and is checked up front, so an over-long
/// name is a clear error and never a raw storage failure.
pub const MAX_NAME_BYTES: usize = 480;

/// The most bytes a type name may take (a type-index key is the type, a
/// separator and a 16-byte id).
pub const MAX_TYPE_BYTES: usize = 256;

/// A valid item name: its display form (NFC, case kept) and its folded form
/// (the key for uniqueness and lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub display: String,
    pub folded: String,
}

/// Checks `name` and normalizes it to NFC (so a name arriving decomposed, as
/// macOS file names do, is the same name as its composed form). A name is 1
/// to [`MAX_NAME_CHARS`] characters (counted after NFC) of anything people
/// put in file and document names — letters, digits, spaces inside,
/// punctuation such as `()+,;:'&` — except `/`, control characters and
/// leading or trailing whitespace; `.` and `..` are not names; at most
/// [`MAX_NAME_BYTES`] bytes folded.
pub(crate) fn check_name(name: &str) -> Result<Name> {
    let bad = |why: &str| Error::invalid_argument(format!("bad item name {name:?}: {why}"));
    let display: String = name.nfc().collect();
    let chars = display.chars().count();
    if chars == 0 {
        return Err(bad("it is empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(bad(&format!("{chars} characters, at most {MAX_NAME_CHARS}")));
    }
    if display == "." || display == ".." {
        return Err(bad("`.` and `..` are not names"));
    }
    if let Some(c) = display.chars().find(|&c| !is_name_char(c)) {
        return Err(bad(&format!("{c:?} is not allowed (no `/` or control characters)")));
    }
    if display.starts_with(char::is_whitespace) || display.ends_with(char::is_whitespace) {
        return Err(bad("it starts or ends with whitespace"));
    }
    let folded = fold(&display);
    if folded.len() > MAX_NAME_BYTES {
        return Err(bad(&format!(
            "{} bytes once case-folded, at most {MAX_NAME_BYTES}",
            folded.len()
        )));
    }
    Ok(Name { display, folded })
}

/// Anything but the path separator, control characters (NUL included) and
/// the line and paragraph separators (which break every listing).
fn is_name_char(c: char) -> bool {
    !(c == '/' || c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// The case-insensitive key of a name: full Unicode case folding (so `ß`
/// and `SS` are one name, and so are `Σ`, `σ` and `ς`) of its NFC form,
/// normalized to NFC again (folding may decompose).
pub(crate) fn fold(name: &str) -> String {
    let composed: String = name.nfc().collect();
    caseless::default_case_fold_str(&composed).nfc().collect()
}

/// A type-name character: letters, digits, `_`, `.`, `-`, `:`.
fn is_type_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':')
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
    if let Some(c) = kind.chars().find(|&c| !is_type_char(c)) {
        return Err(bad(&format!("{c:?} is not allowed")));
    }
    Ok(())
}

/// Splits a drive path into checked names. Leading and trailing whitespace
/// and slashes are ignored (paths are always relative to the drive's root), so
/// `""` and `"/"` are the root itself; an empty step (`a//b`), `.`, `..` or a
/// bad name is an error naming the step.
pub(crate) fn parse_path(path: &str) -> Result<Vec<Name>> {
    let trimmed = path.trim_matches(|c: char| c == '/' || c.is_whitespace());
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
    fn names_are_nfc_and_fold_with_full_case_folding() {
        let decomposed = check_name("Cafe\u{301}").unwrap();
        assert_eq!(decomposed.display, "Café", "stored composed");
        assert_eq!(decomposed.folded, check_name("CAFÉ").unwrap().folded);
        assert_eq!(fold("Straße"), fold("STRASSE"));
        assert_eq!(fold("ΣΊΣΥΦΟΣ"), fold("σίσυφος"));
        assert_eq!(fold("σίσυφοσ"), fold("σίσυφος"), "final sigma folds like sigma");
        assert_ne!(fold("a"), fold("b"));
    }

    #[test]
    fn names_allow_spaces_inside_and_common_punctuation() {
        for good in ["My Report (final).pdf", "a+b, c; d: e's & f", "1 – 2", "Ünïcödé Ωmega"] {
            assert_eq!(check_name(good).unwrap().display, good);
        }
    }

    #[test]
    fn bad_names_are_invalid_arguments_that_say_why() {
        let long_wide = "𝔸".repeat(128); // 128 characters, 512 bytes
        let too_long_decomposed = "e\u{301}".repeat(129); // 129 characters once composed
        for (bad, why) in [
            ("", "empty"),
            (".", "`.`"),
            ("..", "`..`"),
            ("a/b", "'/'"),
            ("a\0b", "'\\0'"),
            ("a\nb", "'\\n'"),
            ("a\u{7f}", "'\\u{7f}'"),
            (" a", "whitespace"),
            ("a ", "whitespace"),
            ("a\u{3000}", "whitespace"),
            (&"a".repeat(129)[..], "129 characters"),
            (&too_long_decomposed[..], "129 characters"),
            (&long_wide[..], "bytes once case-folded"),
        ] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.message().contains(why), "{bad:?}: {err}");
        }
        assert!(check_name(&"e\u{301}".repeat(128)).is_ok(), "counted after NFC");
    }

    #[test]
    fn paths_ignore_outer_slashes_and_spaces_and_name_the_bad_step() {
        let steps: Vec<String> = parse_path(" /A/b c/d/ ")
            .unwrap()
            .into_iter()
            .map(|n| n.folded)
            .collect();
        assert_eq!(steps, ["a", "b c", "d"]);
        assert!(parse_path("/").unwrap().is_empty());
        assert!(parse_path("").unwrap().is_empty());
        for bad in ["a//b", "a/../b", "a/./b", "a/ b", "a/b /c"] {
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
        assert_eq!(check_type("a b").unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            check_type(&"t".repeat(300)).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
