//! What the client was told about token usage: [`Tokens`] by kind, and [`Seen`], which reads
//! them from the events a client received (summed over attempts, as the splicer reports them).

/// Tokens of one request, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Tokens {
    /// `(kind label, count)` for each kind.
    pub fn kinds(&self) -> [(&'static str, u64); 4] {
        [
            ("input", self.input),
            ("output", self.output),
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
        ]
    }

    pub fn add(&mut self, other: &Tokens) {
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
    }

    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }
}

/// Usage numbers as they appear in the events the client receives. Later numbers replace
/// earlier ones (the terminal event carries the sum over attempts); input announced early
/// (Claude `message_start`, Llama, Titan) is used when no later event reports input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
    early_input: Option<u64>,
    early_cache: Option<(Option<u64>, Option<u64>)>,
}

/// Cache read / write tokens, where an event carries them.
pub type CacheCounts = Option<(Option<u64>, Option<u64>)>;

impl Seen {
    /// One event the client received: its start flag, early input, usage and cache counts.
    pub fn see(
        &mut self,
        start: bool,
        known_input: Option<u64>,
        usage: Option<(Option<u64>, Option<u64>)>,
        cache: CacheCounts,
    ) {
        if let Some(n) = known_input {
            self.early_input.get_or_insert(n);
        }
        if let Some((input, output)) = usage {
            self.input = input.or(self.input);
            self.output = output.or(self.output);
        }
        match cache {
            Some(c) if start => self.early_cache = Some(c),
            Some((read, write)) => {
                self.cache_read = read.or(self.cache_read);
                self.cache_write = write.or(self.cache_write);
            }
            None => {}
        }
    }

    /// The usage the client was told, when it was told any.
    pub fn tokens(&self) -> Option<Tokens> {
        let any = self.input.is_some()
            || self.output.is_some()
            || self.early_input.is_some()
            || self.cache_read.is_some()
            || self.early_cache.is_some();
        if !any {
            return None;
        }
        let early = self.early_cache.unwrap_or_default();
        Some(Tokens {
            input: self.input.or(self.early_input).unwrap_or(0),
            output: self.output.unwrap_or(0),
            cache_read: self.cache_read.or(early.0).unwrap_or(0),
            cache_write: self.cache_write.or(early.1).unwrap_or(0),
        })
    }
}
