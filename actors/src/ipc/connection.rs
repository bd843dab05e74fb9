//! One client connection: read a request line, answer it, repeat.
//!
//! The shape is mini-redis's: a [`Connection`] that reads bounded lines and
//! buffers writes, a [`Shutdown`] signal raced against the wait for the next
//! line, and a loop ([`serve`]) that ends this connection only, whatever the
//! client does. Requests are answered one after the other, so pipelined
//! requests are answered in order; answers are flushed once no complete
//! request is waiting, so a pipelined burst costs few writes.
//!
//! Bounds: a line longer than the limit is refused and the connection
//! closed (at most the limit plus one read buffer is ever held); a client
//! that sends nothing for the idle timeout is disconnected; a client that
//! stops reading its answers is disconnected after the write timeout.

use super::metrics::IpcMetrics;
use super::protocol::{encode_error, ErrorBody, ErrorCode, MAX_LINE};
use serde_json::Value;
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::watch;

/// How long a connection may stay silent before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long writing one answer may take before the client is given up.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line: usize,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: MAX_LINE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// Turns one request line into one answer line.
pub(crate) trait Answer {
    /// Appends the answer to `line`, newline included, to `out`.
    async fn answer(&self, line: &[u8], out: &mut Vec<u8>);
}

/// The shutdown signal as one connection sees it (mini-redis's `Shutdown`):
/// once received it stays received.
pub(crate) struct Shutdown {
    received: bool,
    notify: watch::Receiver<bool>,
}

impl Shutdown {
    pub(crate) fn new(notify: watch::Receiver<bool>) -> Self {
        let received = *notify.borrow();
        Shutdown { received, notify }
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.received
    }

    /// Waits for the signal. A dropped sender (the actor is gone) counts as
    /// the signal too.
    pub(crate) async fn recv(&mut self) {
        if !self.received {
            let _ = self.notify.wait_for(|stop| *stop).await;
            self.received = true;
        }
    }
}

/// Why a line could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    TooLong,
    Io(io::Error),
}

/// A byte stream read as bounded lines, written through a buffer.
pub(crate) struct Connection<R, W> {
    reader: BufReader<R>,
    writer: BufWriter<W>,
    /// The line being assembled; kept across cancelled reads.
    line: Vec<u8>,
    max_line: usize,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    pub(crate) fn new(reader: R, writer: W, max_line: usize) -> Self {
        Connection {
            reader: BufReader::new(reader),
            writer: BufWriter::new(writer),
            line: Vec::with_capacity(256),
            max_line,
        }
    }

    /// Reads the next line into `self.line` (without its newline). False at
    /// the end of the stream; a last line without a newline still counts.
    ///
    /// Cancel safe: what was read stays in the reader's buffer or in
    /// `self.line`, so racing this against the shutdown signal loses nothing.
    async fn read_line(&mut self) -> Result<bool, ReadError> {
        loop {
            let available = self.reader.fill_buf().await.map_err(ReadError::Io)?;
            if available.is_empty() {
                return Ok(!self.line.is_empty());
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            if self.line.len() + chunk.len() > self.max_line {
                return Err(ReadError::TooLong);
            }
            self.line.extend_from_slice(chunk);
            let used = chunk.len() + usize::from(newline.is_some());
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(true);
            }
        }
    }

    /// A complete request already waits in the read buffer.
    fn has_buffered_line(&self) -> bool {
        self.reader.buffer().contains(&b'\n')
    }

    async fn write(&mut self, bytes: &[u8], timeout: Duration) -> io::Result<()> {
        let write = async {
            self.writer.write_all(bytes).await?;
            if !self.has_buffered_line() {
                self.writer.flush().await?;
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client does not read its answers",
            )),
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client closed it.
    Closed,
    Shutdown,
    IdleTimeout,
    LineTooLong,
}

impl End {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            End::Closed => "client_closed",
            End::Shutdown => "shutdown",
            End::IdleTimeout => "idle_timeout",
            End::LineTooLong => "line_too_long",
        }
    }
}

/// Serves one connection until the client leaves, the daemon stops, or a
/// limit is hit. An I/O error (e.g. the client vanished mid-answer) ends
/// this connection only.
pub(crate) async fn serve<R, W, A>(
    conn: &mut Connection<R, W>,
    answer: &A,
    shutdown: &mut Shutdown,
    limits: Limits,
    metrics: &IpcMetrics,
) -> io::Result<End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    A: Answer,
{
    let mut out = Vec::with_capacity(1024);
    loop {
        // A request that fully arrived before the signal is in flight: it
        // is answered; nothing more is read after it.
        if shutdown.is_shutdown() && !conn.has_buffered_line() {
            return Ok(End::Shutdown);
        }
        let read = tokio::select! {
            biased;
            read = tokio::time::timeout(limits.idle_timeout, conn.read_line()) => read,
            _ = shutdown.recv() => continue,
        };
        match read {
            Err(_) => {
                metrics.idle_timeout();
                return Ok(End::IdleTimeout);
            }
            Ok(Err(ReadError::Io(e))) => return Err(e),
            Ok(Err(ReadError::TooLong)) => {
                metrics.oversized_line();
                metrics.record(None, Duration::ZERO, Some(ErrorCode::InvalidRequest));
                let error = ErrorBody::invalid(format!(
                    "request line longer than {} bytes; closing the connection",
                    limits.max_line
                ));
                out.clear();
                encode_error(&Value::Null, &error, &mut out);
                conn.write(&out, limits.write_timeout).await?;
                conn.writer.flush().await?;
                return Ok(End::LineTooLong);
            }
            Ok(Ok(false)) => return Ok(End::Closed),
            Ok(Ok(true)) => {}
        }
        // Taken out so that answering can borrow it while the connection
        // writes; put back afterwards to reuse its allocation.
        let line = std::mem::take(&mut conn.line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.clear();
            answer.answer(&line, &mut out).await;
        }
        conn.line = line;
        conn.line.clear();
        if !out.is_empty() {
            conn.write(&out, limits.write_timeout).await?;
            out.clear();
        }
    }
}

/// Answers one connection from start to end, for the listener's tasks.
pub(crate) async fn run<R, W, A>(
    reader: R,
    writer: W,
    answer: &A,
    mut shutdown: Shutdown,
    limits: Limits,
    metrics: &IpcMetrics,
) -> (io::Result<End>, Duration)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    A: Answer,
{
    let started = Instant::now();
    let mut conn = Connection::new(reader, writer, limits.max_line);
    metrics.connection_opened();
    let end = serve(&mut conn, answer, &mut shutdown, limits, metrics).await;
    metrics.connection_closed();
    (end, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// Answers each line with `<line>!`, or sleeps first when asked to.
    struct Echo;

    impl Answer for Echo {
        async fn answer(&self, line: &[u8], out: &mut Vec<u8>) {
            if line == b"slow" {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"!\n");
        }
    }

    fn limits() -> Limits {
        Limits {
            max_line: 64,
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(1),
        }
    }

    /// Runs `serve` over an in-memory pipe; returns the client side, the
    /// shutdown sender and the serving task.
    fn start(
        limits: Limits,
    ) -> (
        tokio::io::DuplexStream,
        watch::Sender<bool>,
        tokio::task::JoinHandle<io::Result<End>>,
    ) {
        let (client, server) = duplex(256);
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let (r, w) = tokio::io::split(server);
            let mut conn = Connection::new(r, w, limits.max_line);
            let metrics = IpcMetrics::new();
            serve(&mut conn, &Echo, &mut Shutdown::new(rx), limits, &metrics).await
        });
        (client, tx, task)
    }

    async fn read_lines(client: &mut BufReader<tokio::io::DuplexStream>, n: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..n {
            let mut line = String::new();
            client.read_line(&mut line).await.unwrap();
            lines.push(line.trim_end().to_string());
        }
        lines
    }

    #[tokio::test]
    async fn pipelined_lines_are_answered_in_order_and_blank_lines_skipped() {
        let (client, _tx, task) = start(limits());
        let mut client = BufReader::new(client);
        client
            .get_mut()
            .write_all(b"a\nslow\n\n  \nb\r\nc")
            .await
            .unwrap();
        client.get_mut().shutdown().await.unwrap();
        assert_eq!(
            read_lines(&mut client, 4).await,
            ["a!", "slow!", "b\r!", "c!"]
        );
        assert_eq!(task.await.unwrap().unwrap(), End::Closed);
    }

    #[tokio::test]
    async fn a_line_over_the_limit_gets_an_error_and_ends_the_connection() {
        let (client, _tx, task) = start(limits());
        let mut client = BufReader::new(client);
        client.get_mut().write_all(b"ok\n").await.unwrap();
        client.get_mut().write_all(&[b'x'; 100]).await.unwrap();
        let lines = read_lines(&mut client, 2).await;
        assert_eq!(lines[0], "ok!");
        let error: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(error["error"]["code"], "INVALID_REQUEST");
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 64 bytes"));
        assert_eq!(task.await.unwrap().unwrap(), End::LineTooLong);
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_accepted() {
        let (client, _tx, _task) = start(limits());
        let mut client = BufReader::new(client);
        let mut line = vec![b'y'; 64];
        line.push(b'\n');
        client.get_mut().write_all(&line).await.unwrap();
        assert_eq!(read_lines(&mut client, 1).await[0].len(), 65);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_disconnected_after_the_idle_timeout() {
        let (client, _tx, task) = start(limits());
        let mut client = BufReader::new(client);
        client.get_mut().write_all(b"hello\n").await.unwrap();
        assert_eq!(read_lines(&mut client, 1).await, ["hello!"]);
        // A partial line does not keep the connection alive either.
        client.get_mut().write_all(b"half").await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(task.await.unwrap().unwrap(), End::IdleTimeout);
    }

    #[tokio::test]
    async fn shutdown_ends_an_idle_connection_but_finishes_a_request_in_flight() {
        let (client, tx, task) = start(limits());
        let mut client = BufReader::new(client);
        client.get_mut().write_all(b"slow\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send_replace(true);
        assert_eq!(read_lines(&mut client, 1).await, ["slow!"]);
        assert_eq!(task.await.unwrap().unwrap(), End::Shutdown);
    }

    #[tokio::test]
    async fn a_client_that_vanishes_mid_request_only_ends_its_own_connection() {
        let (client, _tx, task) = start(limits());
        let mut client = client;
        client.write_all(b"slow\n").await.unwrap();
        drop(client);
        // The answer cannot be delivered: an error for this connection, no panic.
        assert!(task.await.unwrap().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_given_up_after_the_write_timeout() {
        let (client, _tx, task) = start(limits());
        let mut client = client;
        // Far more answers than the 256-byte pipe holds, never read. The
        // write itself blocks too, so it runs beside the check.
        let burst = b"0123456789abcdef0123456789\n".repeat(100);
        let _writer = tokio::spawn(async move {
            let _ = client.write_all(&burst).await;
            client
        });
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
