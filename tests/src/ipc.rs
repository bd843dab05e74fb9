//! A plain IPC client for tests: newline-delimited JSON over the daemon's
//! Unix socket, written from the protocol's documentation rather than from
//! the daemon's code, with a bounded wait on every read.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a test waits for one answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

pub struct IpcClient {
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl IpcClient {
    pub fn connect(path: &Path) -> Result<IpcClient> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(IpcClient {
            reader: BufReader::new(stream),
            next_id: 1,
        })
    }

    /// Writes raw bytes (requests, garbage, halves of lines).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.reader.get_mut().write_all(bytes)?;
        Ok(())
    }

    /// Reads one answer line as JSON; fails at the end of the stream.
    pub fn read_answer(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("the daemon closed the connection");
        }
        serde_json::from_str(&line).with_context(|| format!("answer is not JSON: {line:?}"))
    }

    /// True when the daemon has closed the connection (nothing more to read).
    pub fn is_closed(&mut self) -> Result<bool> {
        let mut line = String::new();
        Ok(self.reader.read_line(&mut line)? == 0)
    }

    /// Sends a request and returns the whole answer (`id`, `result`, `error`),
    /// after checking that it answers this request.
    pub fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = format!("t{}", self.next_id);
        self.next_id += 1;
        let mut line = serde_json::to_vec(&json!({"id": id, "method": method, "params": params}))?;
        line.push(b'\n');
        self.send_raw(&line)?;
        let answer = self.read_answer()?;
        if answer["id"] != json!(id) {
            bail!("answer {answer} does not carry id {id}");
        }
        Ok(answer)
    }

    /// The result of a call that must succeed.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let answer = self.request(method, params)?;
        if !answer["error"].is_null() {
            bail!("{method} failed: {}", answer["error"]);
        }
        Ok(answer["result"].clone())
    }

    /// The error of a call that must fail: `(code, message)`.
    pub fn call_err(&mut self, method: &str, params: Value) -> Result<(String, String)> {
        let answer = self.request(method, params)?;
        if !answer["result"].is_null() {
            bail!("{method} succeeded: {answer}");
        }
        let code = answer["error"]["code"]
            .as_str()
            .context("error without a code")?
            .to_string();
        let message = answer["error"]["message"]
            .as_str()
            .context("error without a message")?
            .to_string();
        Ok((code, message))
    }
}
