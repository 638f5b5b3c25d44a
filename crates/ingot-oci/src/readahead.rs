//! Reading a stream on a thread of its own, ahead of its consumer.
//!
//! Unpacking a layer is two kinds of work: decompressing and hashing the
//! stream (CPU), and creating its files (system calls). [`ReadAhead`] runs
//! the first on a second thread and hands over filled chunks through a
//! bounded channel, so both go on at once and at most `depth` chunks are
//! held in memory.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

/// Bytes per chunk handed over.
pub const CHUNK: usize = 1 << 20;
/// Chunks read ahead of the consumer at most.
pub const DEPTH: usize = 4;

/// A reader whose inner reader runs on its own thread, ahead of the caller.
pub struct ReadAhead<R> {
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    /// The stream's error, given again to every later read.
    failed: Option<(io::ErrorKind, String)>,
    thread: Option<JoinHandle<R>>,
}

impl<R: Read + Send + 'static> ReadAhead<R> {
    /// Starts reading `inner` on a new thread.
    pub fn new(inner: R) -> io::Result<Self> {
        let (tx, rx) = sync_channel(DEPTH);
        let thread = std::thread::Builder::new()
            .name("ingot-readahead".into())
            .spawn(move || {
                let mut inner = inner;
                loop {
                    let mut chunk = vec![0u8; CHUNK];
                    let mut filled = 0;
                    let result = loop {
                        match inner.read(&mut chunk[filled..]) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                filled += n;
                                if filled == chunk.len() {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    chunk.truncate(filled);
                    let end = filled == 0;
                    let sent = match result {
                        Err(e) => {
                            // What was read before the error still goes first.
                            if filled > 0 && tx.send(Ok(chunk)).is_err() {
                                return inner;
                            }
                            let _ = tx.send(Err(e));
                            return inner;
                        }
                        Ok(()) => tx.send(Ok(chunk)),
                    };
                    // An empty chunk is the end; a gone receiver, a consumer
                    // that stopped early.
                    if end || sent.is_err() {
                        return inner;
                    }
                }
            })?;
        Ok(ReadAhead {
            rx: Some(rx),
            cur: Vec::new(),
            pos: 0,
            done: false,
            failed: None,
            thread: Some(thread),
        })
    }

    /// Reads what is left to the end (so the inner reader has seen the whole
    /// stream), then returns the inner reader.
    pub fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        self.rx = None;
        let thread = self.thread.take().expect("joined once");
        thread
            .join()
            .map_err(|_| io::Error::other("the read-ahead thread panicked"))
    }
}

impl<R> Read for ReadAhead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if self.done {
                return Ok(0);
            }
            let rx = self.rx.as_ref().expect("not finished");
            match rx.recv() {
                Ok(Ok(chunk)) => {
                    if chunk.is_empty() {
                        self.done = true;
                    }
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
                // The thread ended without an empty chunk: it stopped early.
                Err(_) => {
                    self.failed = Some((io::ErrorKind::Other, "the read-ahead thread stopped".into()));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R> Drop for ReadAhead<R> {
    fn drop(&mut self) {
        // Closing the channel stops the thread at its next chunk; it is not
        // waited for (it may be blocked reading a slow source).
        self.rx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_byte_in_order_and_returns_the_inner_reader() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        let mut ahead = ReadAhead::new(io::Cursor::new(data.clone())).unwrap();
        let mut head = vec![0u8; 1000];
        ahead.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..1000]);
        // finish reads the rest through the inner reader.
        let inner = ahead.finish().unwrap();
        assert_eq!(inner.position() as usize, data.len());

        let mut all = Vec::new();
        ReadAhead::new(io::Cursor::new(data.clone()))
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, data);
    }

    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad stream"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn an_inner_error_reaches_the_reader_after_the_bytes_before_it() {
        let mut ahead = ReadAhead::new(Failing(10)).unwrap();
        let mut got = Vec::new();
        let err = ahead.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(got, vec![1u8; 10]);
        // Never mistaken for the end of the stream afterwards.
        let again = ahead.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
        assert!(ahead.finish().is_err());
    }

    struct Endless(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(0);
            Ok(buf.len())
        }
    }
    impl Drop for Endless {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_reader_dropped_early_stops_the_thread() {
        let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut ahead = ReadAhead::new(Endless(gone.clone())).unwrap();
        let mut some = [1u8; 10];
        ahead.read_exact(&mut some).unwrap();
        drop(ahead);
        // The thread ends (dropping its endless source) at its next send.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !gone.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the read-ahead thread kept running"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
