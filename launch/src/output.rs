//! Rank-prefixed forwarding of worker output.
//!
//! Workers' pipes are read by async tasks; the writes to the launcher's own stdout/stderr
//! happen on one thread per stream, so a slow consumer of the launcher's output never stalls
//! the supervision loop (signal forwarding, timeouts), and each line is written whole.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// A line longer than this is forwarded in pieces rather than buffered without bound.
const MAX_LINE: usize = 64 * 1024;

/// How many stderr lines of each worker are kept to explain its failure.
pub const TAIL_LINES: usize = 10;

/// Splits a byte stream into lines ending at `\n` or `\r` (progress bars redraw with `\r`),
/// dropping empty ones.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.partial.is_empty() {
                    emit(&self.partial);
                    self.partial.clear();
                }
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    emit(&self.partial);
                    self.partial.clear();
                }
            }
        }
    }

    /// The unterminated last line, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

/// The last few lines a worker wrote to stderr.
pub type Tail = Arc<Mutex<VecDeque<String>>>;

pub fn new_tail() -> Tail {
    Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)))
}

pub fn tail_lines(tail: &Tail) -> Vec<String> {
    // A poisoned lock only means a reader panicked mid-push; the lines are still useful.
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    t.iter().cloned().collect()
}

fn push_tail(tail: &Tail, line: &[u8]) {
    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
    if t.len() == TAIL_LINES {
        t.pop_front();
    }
    t.push_back(String::from_utf8_lossy(line).into_owned());
}

/// Which of the launcher's streams a worker stream goes to.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The launcher's stdout and stderr, each fed by a channel and written by its own thread.
pub struct Output {
    out: mpsc::Sender<Vec<u8>>,
    err: mpsc::Sender<Vec<u8>>,
    threads: Vec<JoinHandle<()>>,
}

impl Output {
    pub fn start() -> Output {
        // Bounded so that a stalled consumer applies back-pressure to the workers' pipes
        // instead of growing the launcher's memory.
        let (out, out_rx) = mpsc::channel(1024);
        let (err, err_rx) = mpsc::channel(1024);
        let threads = vec![
            std::thread::spawn(move || write_all(out_rx, std::io::stdout())),
            std::thread::spawn(move || write_all(err_rx, std::io::stderr())),
        ];
        Output { out, err, threads }
    }

    pub fn sender(&self, stream: Stream) -> mpsc::Sender<Vec<u8>> {
        match stream {
            Stream::Stdout => self.out.clone(),
            Stream::Stderr => self.err.clone(),
        }
    }

    /// Writes out what is queued and stops the threads. Every sender handed out must be gone
    /// first (reader tasks finished or dropped), or this waits for them.
    pub fn finish(self) {
        let Output { out, err, threads } = self;
        drop(out);
        drop(err);
        for t in threads {
            let _ = t.join();
        }
    }
}

fn write_all<W: Write>(mut rx: mpsc::Receiver<Vec<u8>>, sink: W) {
    let mut sink = sink;
    let mut broken = false;
    while let Some(buf) = rx.blocking_recv() {
        // After a write error (the consumer went away: EPIPE) keep draining, so the
        // workers never block on a full pipe because of it.
        if !broken {
            broken = sink.write_all(&buf).and_then(|_| sink.flush()).is_err();
        }
    }
}

/// Forwards `reader` line by line to `sink` with `[rank{rank}]: ` in front, keeping the
/// last lines in `tail` when given. Returns at end of stream.
pub async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    rank: u32,
    sink: mpsc::Sender<Vec<u8>>,
    tail: Option<Tail>,
) {
    let prefix = format!("[rank{rank}]: ");
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines: Vec<Vec<u8>> = Vec::new();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        splitter.push(&buf[..n], |l| lines.push(l.to_vec()));
        forward(&mut lines, &prefix, &sink, tail.as_ref()).await;
    }
    splitter.finish(|l| lines.push(l.to_vec()));
    forward(&mut lines, &prefix, &sink, tail.as_ref()).await;
}

async fn forward(
    lines: &mut Vec<Vec<u8>>,
    prefix: &str,
    sink: &mpsc::Sender<Vec<u8>>,
    tail: Option<&Tail>,
) {
    for line in lines.drain(..) {
        if let Some(t) = tail {
            push_tail(t, &line);
        }
        let mut msg = Vec::with_capacity(prefix.len() + line.len() + 1);
        msg.extend_from_slice(prefix.as_bytes());
        msg.extend_from_slice(&line);
        msg.push(b'\n');
        // The writer thread only stops once every sender is gone, so this cannot fail
        // while we hold one; ignore it all the same rather than stop draining the pipe.
        let _ = sink.send(msg).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        s.finish(|l| out.push(String::from_utf8_lossy(l).into_owned()));
        out
    }

    #[test]
    fn splits_on_newline_and_carriage_return() {
        assert_eq!(split(&[b"a\nb\r\nc\rd"]), ["a", "b", "c", "d"]);
        assert_eq!(split(&[b"\n\n\r\r"]), Vec::<String>::new());
    }

    #[test]
    fn lines_span_chunks() {
        assert_eq!(split(&[b"hel", b"lo\nwor", b"ld"]), ["hello", "world"]);
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE + 5];
        let out = split(&[&long]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(out[1].len(), 5);
    }

    #[test]
    fn pump_prefixes_and_keeps_the_tail() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let tail = new_tail();
        let input: Vec<u8> = (0..15)
            .map(|i| format!("line {i}\r"))
            .collect::<String>()
            .into_bytes();
        rt.block_on(pump(&input[..], 3, tx, Some(tail.clone())));
        let mut got = Vec::new();
        while let Ok(m) = rx.try_recv() {
            got.push(String::from_utf8(m).unwrap());
        }
        assert_eq!(got.len(), 15);
        assert_eq!(got[0], "[rank3]: line 0\n");
        let t = tail_lines(&tail);
        assert_eq!(t.len(), TAIL_LINES);
        assert_eq!(t[0], "line 5");
        assert_eq!(t[9], "line 14");
    }
}
