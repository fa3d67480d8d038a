//! A fuzz input read as a stream of small decisions: bytes, numbers, bounded strings. Running
//! out of bytes yields zeros and empty strings, so every input decodes to something and a
//! shorter input is a simpler case (what libFuzzer's minimisation needs).

/// The bytes of one fuzz input, consumed from the front.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from its first byte.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next byte, 0 when none is left.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// A boolean from the next byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A number below `n` (`n` > 0), from one byte.
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    /// One of `items` (which must not be empty), chosen by the next byte.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Up to `max` bytes: a length byte, then that many bytes (fewer when the input ends).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = self.below(max + 1).min(self.rest.len());
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        taken
    }

    /// Up to `max` bytes as text (invalid UTF-8 replaced).
    pub fn string(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }

    /// Every byte left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::Input;

    #[test]
    fn reads_in_order_and_runs_dry_as_zeros() {
        let mut i = Input::new(&[3, b'a', b'b', b'c', 7, 0xff]);
        assert_eq!(i.bytes(10), b"abc");
        assert_eq!(i.below(5), 2);
        assert!(i.bool());
        assert!(i.is_empty());
        assert_eq!(i.byte(), 0);
        assert_eq!(i.string(4), "");
    }
}
