//! Hex dump lines in the classic `hexdump -C` layout: offset, 16 hex bytes, printable text.

/// Formats one line for up to 16 `bytes` found at `offset`.
pub fn line(offset: usize, bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(50);
    for i in 0..16 {
        if i == 8 {
            hex.push(' ');
        }
        match bytes.get(i) {
            Some(b) => hex.push_str(&format!("{b:02x} ")),
            None => hex.push_str("   "),
        }
    }
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{offset:08x}  {hex} |{text}|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_partial_lines() {
        assert_eq!(
            line(0x10, b"Hello, world!\n\0\xff"),
            "00000010  48 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 0a 00 ff  |Hello, world!...|"
        );
        let short = line(0, b"ab");
        assert!(short.starts_with("00000000  61 62  "));
        assert!(short.ends_with(" |ab|"));
        // The text column lines up with a full line's.
        assert_eq!(short.find('|'), line(0, &[0; 16]).find('|'));
    }
}
