//! Errors as one line for people: the message and its causes, each said once.

/// `error: cause: cause`, leaving out a cause whose text the line already holds. Many error
/// types quote their source in their own message (`cannot bind gossip address ...: Address
/// already in use (os error 98)`) and also return it as `source()`; anyhow's `{:#}` would
/// print it twice.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind gossip address 127.0.0.1:1: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    /// Issue 11: "Address already in use (os error 98): Address already in use (os error 98)".
    #[test]
    fn a_cause_the_message_already_quotes_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let io_text = io.to_string();
        let e = anyhow::Error::new(Bind { source: io }).context("agent start");
        let text = error_text(&e);
        assert_eq!(
            text,
            format!("agent start: cannot bind gossip address 127.0.0.1:1: {io_text}")
        );
        assert_eq!(text.matches(&io_text).count(), 1, "{text}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
