//! The part of a configure log worth quoting in an error: CMake's own error messages.

/// The `CMake Error …` blocks of `log` (each up to its blank-line end), at most `max_lines`.
pub fn quote(log: &str, max_lines: usize) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() && out.len() < max_lines {
        if lines[i].starts_with("CMake Error") {
            out.push(lines[i]);
            i += 1;
            // The message: indented or blank lines, up to the first unindented line.
            while i < lines.len() && out.len() < max_lines {
                let l = lines[i];
                if !l.is_empty() && !l.starts_with(' ') {
                    break;
                }
                if !l.trim().is_empty() {
                    out.push(l);
                }
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_cmake_errors() {
        let log = "-- The C compiler identification is GNU 12.2.0\n\
                   CMake Error at CMakeLists.txt:11 (message):\n  HELLO_FAIL is set\n\n\
                   \n-- Configuring incomplete, errors occurred!\n";
        assert_eq!(
            super::quote(log, 20).unwrap(),
            "CMake Error at CMakeLists.txt:11 (message):\n  HELLO_FAIL is set"
        );
        assert_eq!(super::quote("-- fine\n", 20), None);
    }
}
