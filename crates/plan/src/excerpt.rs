//! The source line shown under a diagnostic, cut to a window around the problem: a config
//! line can be megabytes long (minified JSON), and every diagnostic on it would otherwise
//! print all of it.

/// The most characters of a source line shown under a diagnostic.
pub const EXCERPT_CHARS: usize = 160;

/// Characters shown before the problem's column when the line is cut.
const BEFORE: usize = 40;

/// What is shown of a line: the text, and the caret line under it (up to the carets).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Excerpt {
    pub text: String,
    pub carets: String,
}

/// The byte offset of character `n` of `line` (its end when shorter), without walking the
/// characters when the part before it is ASCII.
fn byte_offset(line: &str, n: usize) -> usize {
    let head = &line.as_bytes()[..n.min(line.len())];
    if head.is_ascii() {
        return head.len();
    }
    line.char_indices().nth(n).map_or(line.len(), |(i, _)| i)
}

/// The part of `line` to show for a problem at 1-based character `column`, `len` characters
/// long, with `^` under it; whitespace before the carets copies the line's tabs.
pub(crate) fn excerpt(line: &str, column: usize, len: usize) -> Excerpt {
    let line = line.trim_end();
    let col = column.saturating_sub(1);
    let long = line.len() > EXCERPT_CHARS && line.chars().nth(EXCERPT_CHARS).is_some();
    let (start, marker) = if long && col > BEFORE {
        (col - BEFORE, "…")
    } else {
        (0, "")
    };
    let from = byte_offset(line, start);
    let window = &line[from..];
    let to = byte_offset(window, EXCERPT_CHARS);
    let shown = &window[..to];
    let cut_end = to < window.len();
    let mut text = String::with_capacity(shown.len() + 8);
    text.push_str(marker);
    text.push_str(shown);
    if cut_end {
        text.push('…');
    }
    let mut carets: String = marker.chars().map(|_| ' ').collect();
    carets.extend(
        shown
            .chars()
            .take(col - start)
            .map(|c| if c == '\t' { '\t' } else { ' ' }),
    );
    let room = EXCERPT_CHARS.saturating_sub(col - start).max(1);
    carets.extend(std::iter::repeat_n('^', len.clamp(1, room)));
    Excerpt { text, carets }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_shown_whole() {
        let e = excerpt("  id: a\t", 3, 2);
        assert_eq!(e.text, "  id: a");
        assert_eq!(e.carets, "  ^^");
        let e = excerpt("\tx: y", 2, 1);
        assert_eq!(e.carets, "\t^");
    }

    #[test]
    fn long_lines_are_cut_around_the_column() {
        let line = format!("{}TARGET{}", "a".repeat(10_000), "b".repeat(10_000));
        let e = excerpt(&line, 10_001, 6);
        assert!(
            e.text.starts_with('…') && e.text.ends_with('…'),
            "{}",
            e.text
        );
        assert_eq!(e.text.chars().count(), EXCERPT_CHARS + 2);
        let at = e.carets.find('^').unwrap();
        assert_eq!(
            &e.text.chars().skip(at).take(6).collect::<String>(),
            "TARGET"
        );
        assert_eq!(e.carets.trim_start(), "^^^^^^");
        // Near the start: not cut before.
        let e = excerpt(&line, 5, 1);
        assert!(!e.text.starts_with('…') && e.text.ends_with('…'));
        assert_eq!(e.carets, "    ^");
        // A huge length is cut to the window.
        assert!(excerpt(&line, 1, 1 << 30).carets.len() <= EXCERPT_CHARS);
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let line = "é".repeat(1000);
        let e = excerpt(&line, 500, 1);
        assert_eq!(e.text.chars().count(), EXCERPT_CHARS + 2);
        assert_eq!(e.carets.chars().count(), BEFORE + 2);
    }
}
