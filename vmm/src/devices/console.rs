//! Console output shared by the testdev and the serial port: line-buffered, each line optionally
//! prefixed with `[NAME] ` so the output of several VMs in one terminal stays readable.
use std::io::Write;
use std::sync::Mutex;

/// Where console output goes.
pub enum ConsoleSink {
    /// The VMM's stdout.
    Stdout,
    /// Appended to this file.
    File(std::fs::File),
    /// Thrown away.
    Discard,
}

/// A line-buffered console shared by the devices that print.
pub struct Console {
    prefix: Option<String>,
    state: Mutex<(Vec<u8>, ConsoleSink)>,
}

/// Longest line kept before it is flushed without a newline.
const MAX_LINE: usize = 4096;

impl Console {
    /// A console writing to `sink`, prefixing lines with `[NAME] ` when `name` is given.
    pub fn new(name: Option<&str>, sink: ConsoleSink) -> Console {
        Console {
            prefix: name.map(|n| format!("[{n}] ")),
            state: Mutex::new((Vec::new(), sink)),
        }
    }

    /// Buffers `bytes`, writing every complete line (and an overlong one) to the sink.
    pub fn write(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (line, sink) = &mut *state;
        for &b in bytes {
            line.push(b);
            if b == b'\n' || line.len() >= MAX_LINE {
                Self::emit(&self.prefix, line, sink);
            }
        }
    }

    /// Writes out a partial last line.
    pub fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (line, sink) = &mut *state;
        if !line.is_empty() {
            line.push(b'\n');
            Self::emit(&self.prefix, line, sink);
        }
    }

    fn emit(prefix: &Option<String>, line: &mut Vec<u8>, sink: &mut ConsoleSink) {
        let mut out = Vec::with_capacity(line.len() + 16);
        if let Some(p) = prefix {
            out.extend_from_slice(p.as_bytes());
        }
        out.append(line);
        // Console output is best effort: a closed stdout must not stop the VM.
        let _ = match sink {
            ConsoleSink::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&out).and_then(|_| stdout.flush())
            }
            ConsoleSink::File(f) => f.write_all(&out),
            ConsoleSink::Discard => Ok(()),
        };
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}
