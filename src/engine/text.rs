//! Turns the byte pieces of sampled tokens into text that is safe to send.
//!
//! Two problems meet here: a token's bytes may end in the middle of a UTF-8
//! character (emoji, CJK), and a stop string may be split across tokens. So we
//! keep back the bytes of an unfinished character and the tail of the text
//! that could still grow into a stop string, and emit only the rest.

/// The result of feeding one token's bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text that is final and may be sent now (possibly empty).
    pub text: String,
    /// A stop string was found (its index in the request's `stop`); `text`
    /// ends right before it.
    pub stopped: Option<usize>,
}

#[derive(Debug, Default)]
pub struct TextStream {
    /// Bytes of a character not yet complete.
    partial_char: Vec<u8>,
    /// Decoded text held back because it may be the start of a stop string.
    held: String,
    /// The non-empty stop strings with their index in the request's list.
    stops: Vec<(usize, String)>,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().enumerate().filter(|(_, s)| !s.is_empty()).collect();
        Self { partial_char: Vec::new(), held: String::new(), stops }
    }

    /// Feeds the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        self.partial_char.extend_from_slice(bytes);
        let decoded = take_complete_utf8(&mut self.partial_char);
        self.held.push_str(&decoded);

        if let Some((at, index)) = self.earliest_stop() {
            let text = self.held[..at].to_string();
            self.held.clear();
            self.partial_char.clear();
            return Pushed { text, stopped: Some(index) };
        }
        let keep = self.stop_prefix_len();
        let emit_to = self.held.len() - keep;
        let text = self.held[..emit_to].to_string();
        self.held.drain(..emit_to);
        Pushed { text, stopped: None }
    }

    /// Everything still held back, at the end of generation. Bytes of an
    /// unfinished character become U+FFFD, as a lossy decoder would show them.
    pub fn finish(&mut self) -> String {
        let mut rest = std::mem::take(&mut self.held);
        rest.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial_char)));
        rest
    }

    /// Where the earliest stop string starts, and its index (the first
    /// listed wins a tie).
    fn earliest_stop(&self) -> Option<(usize, usize)> {
        self.stops.iter().filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, *i))).min()
    }

    /// Length of the longest tail of `held` that is a proper prefix of a stop
    /// string, rounded to a character boundary.
    fn stop_prefix_len(&self) -> usize {
        let mut best = 0;
        for (_, stop) in &self.stops {
            let max = stop.len().saturating_sub(1).min(self.held.len());
            for len in (best + 1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && stop.starts_with(&self.held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

/// Removes and returns the longest valid UTF-8 prefix of `buf`. Invalid bytes
/// (not merely incomplete ones) are replaced with U+FFFD so the stream never
/// stalls on them.
fn take_complete_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(buf) {
            Ok(s) => {
                out.push_str(s);
                buf.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // SAFETY-free: the prefix was just validated.
                out.push_str(std::str::from_utf8(&buf[..valid]).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        buf.drain(..valid + bad);
                    }
                    None => {
                        buf.drain(..valid);
                        return out;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stream: &mut TextStream, pieces: &[&[u8]]) -> (String, Option<usize>) {
        let mut out = String::new();
        for p in pieces {
            let pushed = stream.push(p);
            out.push_str(&pushed.text);
            if pushed.stopped.is_some() {
                return (out, pushed.stopped);
            }
        }
        out.push_str(&stream.finish());
        (out, None)
    }

    #[test]
    fn never_splits_a_multibyte_character() {
        let smile = "😀".as_bytes();
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.push(&smile[..1]).text, "");
        assert_eq!(s.push(&smile[1..3]).text, "");
        assert_eq!(s.push(&smile[3..]).text, "😀");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.push(b"a\xffb").text, "a\u{FFFD}b");
    }

    #[test]
    fn unfinished_character_at_the_end_is_replaced() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.push(&"é".as_bytes()[..1]).text, "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_string_split_across_tokens_is_cut_out() {
        let mut s = TextStream::new(vec!["</end>".into()]);
        let (out, stopped) = feed(&mut s, &[b"hello </", b"en", b"d> ignored"]);
        assert_eq!(out, "hello ");
        assert_eq!(stopped, Some(0));
    }

    #[test]
    fn text_that_only_looked_like_a_stop_is_released() {
        let mut s = TextStream::new(vec!["STOP".into()]);
        assert_eq!(s.push(b"ab ST").text, "ab ");
        assert_eq!(s.push(b"ART").text, "START");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut s = TextStream::new(vec!["".into(), "world".into(), "lo".into()]);
        let (out, stopped) = feed(&mut s, &[b"hello world"]);
        assert_eq!(out, "hel");
        assert_eq!(stopped, Some(2), "the index in the request's list, empty strings counted");
    }

    #[test]
    fn held_back_prefix_is_flushed_at_finish() {
        let mut s = TextStream::new(vec!["\n\n".into()]);
        assert_eq!(s.push(b"line\n").text, "line");
        assert_eq!(s.finish(), "\n");
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let mut s = TextStream::new(vec![String::new()]);
        assert_eq!(s.push(b"abc"), Pushed { text: "abc".into(), stopped: None });
    }
}
