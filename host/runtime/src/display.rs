//! Text a guest wrote, made safe to print: control characters and escape sequences escaped, length bounded.
//!
//! An agent's name, description, capabilities, error and panic messages are
//! untrusted: printed raw, an escape sequence could recolour, move or clear
//! the user's terminal, or fake a line of corral's own output.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters of guest text printed in one place before it is cut with `…`.
pub const MAX_GUEST_TEXT_CHARS: usize = 1024;

/// `s` with every control character (C0, DEL, C1: ESC, CR, newline and
/// the rest) and every bidirectional override written as `\u{..}`, and
/// cut to `max_chars` characters. Borrowed when nothing needs escaping.
pub fn guest_text(s: &str, max_chars: usize) -> Cow<'_, str> {
    let clean = s.chars().take(max_chars + 1).all(|c| !needs_escape(c));
    if clean && s.chars().nth(max_chars).is_none() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`guest_text`] with the default bound, for one printed field.
pub fn guest(s: &str) -> Cow<'_, str> {
    guest_text(s, MAX_GUEST_TEXT_CHARS)
}

/// Control characters, and the Unicode controls that reorder text on
/// screen (so `abc` can display as `cba`).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_sequences_and_bounds_length() {
        assert_eq!(guest_text("plain name", 64), "plain name");
        assert!(matches!(guest_text("plain", 64), Cow::Borrowed(_)));
        assert_eq!(
            guest_text("\u{1b}[2J\u{1b}]0;owned\u{7}x\r\n", 64),
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7}x\\u{d}\\u{a}"
        );
        assert_eq!(guest_text("\u{9b}31m", 64), "\\u{9b}31m");
        assert_eq!(guest_text("a\u{202e}cba", 64), "a\\u{202e}cba");
        assert_eq!(guest_text("abcdef", 3), "abc…");
        assert_eq!(guest_text("abc", 3), "abc");
        assert_eq!(guest_text("ééé", 2), "éé…");
    }
}
