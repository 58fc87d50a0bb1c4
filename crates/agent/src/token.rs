//! The control-API token: what a usable one looks like, reading it from a file, and the
//! constant-time comparison the agent makes (the `subtle` crate: a plain `==` stops at the
//! first differing byte, and its timing tells a guesser how much of a guess was right).

use std::path::Path;

use subtle::ConstantTimeEq;

/// Most bytes of a control token (the agent's limit too).
pub const MAX_TOKEN_LEN: usize = 4096;

/// A token's text, trimmed: non-empty, at most [`MAX_TOKEN_LEN`] bytes, visible ASCII only
/// (it travels in an HTTP header). The reason when it is not; the token itself is never
/// quoted, it is a secret.
pub fn check_token(text: &str) -> Result<String, String> {
    let token = text.trim();
    if token.is_empty() {
        return Err("is empty".into());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "is {} bytes; the limit is {MAX_TOKEN_LEN}",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "may hold only visible ASCII characters (no spaces or control characters)".into(),
        );
    }
    Ok(token.to_string())
}

/// Reads a token file ([`check_token`]).
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read: {e}"))?;
    check_token(&text)
}

/// Whether `given` is `expected`, in time that does not depend on where they differ (only
/// on their lengths, which tell a guesser nothing worth having: tokens are long and random).
pub fn matches(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_trimmed_and_must_be_visible_ascii() {
        assert_eq!(
            check_token("  s3cr3t-token\n").as_deref(),
            Ok("s3cr3t-token")
        );
        assert!(check_token(" \n").is_err());
        assert!(check_token("two words").is_err());
        assert!(check_token("bell\u{7}").is_err());
        assert!(check_token(&"x".repeat(MAX_TOKEN_LEN + 1)).is_err());
        let err = check_token("two words").expect_err("space");
        assert!(!err.contains("two"), "the token is never quoted: {err}");
    }

    #[test]
    fn only_the_same_bytes_match() {
        assert!(matches(b"abc", b"abc"));
        assert!(!matches(b"abd", b"abc"));
        assert!(!matches(b"ab", b"abc"));
        assert!(!matches(b"", b"abc"));
    }
}
