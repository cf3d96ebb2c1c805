//! A small async client of memcached's meta protocol (`mg`, `ms`, `ma`,
//! `md`, `mn`) over tokio TCP streams, with a pool of connections.
//!
//! Commands are sent in pipelines: one write, then one reply per command in
//! order (memcached answers a connection's commands in the order it got
//! them). A pipeline either returns every reply or fails as a whole; a
//! failed connection is dropped, never reused, so a late reply can never be
//! read as the answer to another command. Nothing is ever resent: a request
//! whose reply was lost may have been executed, and resending an increment
//! would count it twice.
//!
//! Concurrent callers' pipelines share writes (see [`Client::run`]): the
//! caller that gets a connection sends every pipeline waiting in one write.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use counter_core::{Error, ErrorKind, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore, oneshot};

/// How a meta command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `VA`: a value follows.
    Value,
    /// `HD`: done (stored, deleted, found without value).
    Done,
    /// `EN`: miss (`mg`).
    Miss,
    /// `NF`: not found (`ma`, `md`, `ms` with a compare token).
    NotFound,
    /// `NS`: not stored (`ms` in add mode on an existing key, append to a missing one).
    NotStored,
    /// `EX`: the compare-and-swap token did not match.
    Exists,
    /// `MN`: the no-op marker.
    Noop,
    /// An error reply (`SERVER_ERROR ...`, `CLIENT_ERROR ...`, `ERROR`);
    /// the reply's value holds its text.
    Refused(ErrorKind),
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: Status,
    /// The value of a `VA` reply.
    pub(crate) value: Option<Vec<u8>>,
    /// The item's compare-and-swap token, when asked for with the `c` flag.
    pub(crate) cas: Option<u64>,
}

impl Reply {
    /// A reply with a value (for results computed without a reply).
    pub(crate) fn value(value: Vec<u8>) -> Reply {
        Reply { status: Status::Value, value: Some(value), cas: None }
    }

    /// A reply with a status only.
    pub(crate) fn status(status: Status) -> Reply {
        Reply { status, value: None, cas: None }
    }

    /// Whether the command succeeded (`VA` or `HD`).
    pub(crate) fn ok(&self) -> bool {
        matches!(self.status, Status::Value | Status::Done)
    }

    /// The value as text, trailing spaces and all.
    pub(crate) fn text(&self) -> Option<&str> {
        self.value.as_deref().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// This reply, or the server's refusal as an error.
    pub(crate) fn check(&self) -> Result<&Reply> {
        match self.status {
            Status::Refused(kind) => Err(Error::new(
                kind,
                format!(
                    "memcached refused a command: {}",
                    String::from_utf8_lossy(self.value.as_deref().unwrap_or(&[]))
                ),
            )),
            _ => Ok(self),
        }
    }
}

/// Commands to send in one write.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    buf: Vec<u8>,
    count: usize,
}

/// The buffer a new pipeline starts with, bytes.
const PIPELINE_START_BYTES: usize = 512;

impl Pipeline {
    pub(crate) fn new() -> Pipeline {
        // Room for an increment's two commands without growing.
        Pipeline { buf: Vec::with_capacity(PIPELINE_START_BYTES), ..Pipeline::default() }
    }

    /// Number of commands.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn line(&mut self, verb: &str, key: &str, flags: &str) {
        debug_assert!(key_is_safe(key), "unsafe memcached key {key:?}");
        self.buf.extend_from_slice(verb.as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(key.as_bytes());
        if !flags.is_empty() {
            self.buf.push(b' ');
            self.buf.extend_from_slice(flags.as_bytes());
        }
        self.buf.extend_from_slice(b"\r\n");
        self.count += 1;
    }

    /// `mg key flags`: a read (`v` value, `c` token).
    pub(crate) fn get(&mut self, key: &str, flags: &str) -> &mut Self {
        self.line("mg", key, flags);
        self
    }

    /// `ms key len flags` and the data: a write (`ME` add, `MA` append,
    /// `C<token>` compare-and-swap, `c` return the new token).
    pub(crate) fn set(&mut self, key: &str, data: &[u8], flags: &str) -> &mut Self {
        let head = if flags.is_empty() { data.len().to_string() } else { format!("{} {flags}", data.len()) };
        self.line("ms", key, &head);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// `ma key flags`: arithmetic (`D<delta>`, `v` return the value).
    pub(crate) fn arith(&mut self, key: &str, flags: &str) -> &mut Self {
        self.line("ma", key, flags);
        self
    }

    /// `md key flags`: a delete (`C<token>` only if unchanged).
    pub(crate) fn delete(&mut self, key: &str, flags: &str) -> &mut Self {
        self.line("md", key, flags);
        self
    }

    /// `mn`: the no-op marker.
    pub(crate) fn noop(&mut self) -> &mut Self {
        self.buf.extend_from_slice(b"mn\r\n");
        self.count += 1;
        self
    }
}

/// Whether `key` is a key memcached accepts as it is: 1 to 250 bytes of
/// printable ASCII, no space.
pub(crate) fn key_is_safe(key: &str) -> bool {
    !key.is_empty() && key.len() <= 250 && key.bytes().all(|b| b.is_ascii_graphic())
}

type Conn = BufReader<TcpStream>;

/// Where to connect and how long to wait.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) addr: String,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// A client of one memcached server: a handle on its pool of connections.
#[derive(Debug)]
pub(crate) struct Client {
    pool: Arc<Pool>,
}

impl Client {
    pub(crate) fn new(config: ClientConfig) -> Client {
        Client { pool: Arc::new(Pool::new(config)) }
    }

    /// How many times the server was seen restarted (a new instance behind
    /// the address). Anything remembered about the server's content from
    /// before is void.
    pub(crate) fn restarts(&self) -> u64 {
        self.pool.restarts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The server's address (`host:port`).
    pub(crate) fn addr(&self) -> &str {
        &self.pool.config.addr
    }

    /// Sends `pipeline` and returns one reply per command, in order.
    /// Timeouts and I/O failures are [`Unavailable`](ErrorKind::Unavailable);
    /// an error reply of the server is [`Permanent`](ErrorKind::Permanent)
    /// (or `Unavailable` when the server is out of memory).
    ///
    /// Pipelines of concurrent callers share writes: a pipeline waits in a
    /// queue, and whoever gets a connection has every pipeline waiting (up
    /// to [`MAX_SHARED_COMMANDS`]) sent in one write, by a task of its own
    /// (so that a caller that gives up does not fail the others), which
    /// hands each caller its own replies. memcached answers a connection's
    /// commands in order, so each pipeline still runs as a unit, in its own
    /// order. A failure fails the pipelines whose replies were not all
    /// read, and each of those may have run (as with a pipeline of its
    /// own). An error reply is one command's (memcached goes on with the
    /// next; the cache handles refusals such as an `ma` it will not apply),
    /// but the connection that saw it is not reused; a reply this client
    /// cannot read is `Permanent` for its pipeline and fails the ones after
    /// it as `Unavailable`.
    /// Under load this turns many small round trips into a few large ones,
    /// which is what a memcached server spends its time on.
    pub(crate) async fn run(&self, pipeline: &Pipeline) -> Result<Vec<Reply>> {
        self.pool.run(pipeline).await
    }
}

/// The connections to one memcached server.
#[derive(Debug)]
struct Pool {
    config: ClientConfig,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    /// Pipelines waiting for a connection (see [`Client::run`]).
    waiting: std::sync::Mutex<VecDeque<Waiting>>,
    /// Writes sent (shared ones count once).
    #[cfg(test)]
    writes: std::sync::atomic::AtomicU64,
    /// The server instance last connected to (its pid and start time), and
    /// how many times it changed: a restarted server has lost everything.
    instance: std::sync::Mutex<Option<(u64, u64)>>,
    restarts: std::sync::atomic::AtomicU64,
}

/// Longest reply line accepted (a `VA` header or a status line).
const MAX_LINE: usize = 4096;

impl Pool {
    fn new(config: ClientConfig) -> Pool {
        let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Pool {
            config,
            idle: Mutex::new(Vec::new()),
            permits,
            waiting: std::sync::Mutex::new(VecDeque::new()),
            #[cfg(test)]
            writes: std::sync::atomic::AtomicU64::new(0),
            instance: std::sync::Mutex::new(None),
            restarts: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Reads the server's pid and start time from `stats` on a new
    /// connection, and counts a restart when they changed.
    async fn identify(&self, conn: &mut Conn) -> std::io::Result<()> {
        conn.get_mut().write_all(b"stats\r\n").await?;
        let (mut pid, mut time, mut uptime) = (0u64, 0u64, 0u64);
        let mut line = String::new();
        loop {
            line.clear();
            if (&mut *conn).take(MAX_LINE as u64).read_line(&mut line).await? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "stats cut short"));
            }
            let text = line.trim_end();
            if text == "END" {
                break;
            }
            let mut fields = text.split(' ').skip(1);
            let (Some(name), Some(value)) = (fields.next(), fields.next()) else { continue };
            let value = value.parse().unwrap_or(0);
            match name {
                "pid" => pid = value,
                "time" => time = value,
                "uptime" => uptime = value,
                _ => {}
            }
        }
        // The start time can read one second off between two calls: compare loosely.
        let started = time.saturating_sub(uptime);
        let mut instance = self.instance.lock().expect("instance lock");
        match *instance {
            Some((known_pid, known_start)) if known_pid == pid && known_start.abs_diff(started) <= 2 => {}
            Some(_) => {
                self.restarts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                *instance = Some((pid, started));
            }
            None => *instance = Some((pid, started)),
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Conn> {
        let addr = &self.config.addr;
        let stream = tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                Error::new(ErrorKind::Unavailable, format!("memcached at {addr} did not accept a connection"))
            })?
            .map_err(|e| Error::unavailable(format!("cannot connect to memcached at {addr}"), e))?;
        stream.set_nodelay(true).map_err(|e| Error::unavailable("cannot configure the memcached connection", e))?;
        let mut conn = BufReader::new(stream);
        tokio::time::timeout(self.config.timeout, self.identify(&mut conn))
            .await
            .map_err(|_| Error::new(ErrorKind::Unavailable, format!("memcached at {addr} did not answer in time")))?
            .map_err(|e| Error::unavailable(format!("memcached at {addr} failed"), e))?;
        Ok(conn)
    }

    /// See [`Client::run`].
    async fn run(self: &Arc<Self>, pipeline: &Pipeline) -> Result<Vec<Reply>> {
        if pipeline.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, mut replies) = oneshot::channel();
        let waiting = Waiting { buf: pipeline.buf.clone(), count: pipeline.count, reply };
        self.waiting.lock().expect("waiting lock").push_back(waiting);
        loop {
            let permit = tokio::select! {
                biased;
                done = &mut replies => return done.unwrap_or_else(|_| Err(self.lost())),
                permit = self.permits.clone().acquire_owned() => {
                    permit.map_err(|_| Error::new(ErrorKind::Unavailable, "client closed"))?
                }
            };
            let mut batch = self.take_waiting();
            if batch.is_empty() {
                // Another caller took this pipeline: its replies are on the way.
                drop(permit);
                return replies.await.unwrap_or_else(|_| Err(self.lost()));
            }
            // Sent by a task of its own: if this caller gives up, the others
            // in the batch still get their replies.
            let pool = self.clone();
            tokio::spawn(async move {
                pool.send(&mut batch).await;
                drop(permit);
            });
        }
    }

    /// The pipelines waiting, oldest first, up to [`MAX_SHARED_COMMANDS`]
    /// (at least one); those whose caller gave up are dropped unsent.
    fn take_waiting(&self) -> VecDeque<Waiting> {
        let mut waiting = self.waiting.lock().expect("waiting lock");
        let mut batch = VecDeque::new();
        let (mut commands, mut bytes) = (0, 0);
        while let Some(next) = waiting.front() {
            if !batch.is_empty()
                && (commands + next.count > MAX_SHARED_COMMANDS || bytes + next.buf.len() > MAX_SHARED_BYTES)
            {
                break;
            }
            let next = waiting.pop_front().expect("front exists");
            if !next.reply.is_closed() {
                commands += next.count;
                bytes += next.buf.len();
                batch.push_back(next);
            }
        }
        batch
    }

    /// Sends `batch` on one connection and hands out the replies; what
    /// is left in `batch` after a failure gets the error.
    async fn send(&self, batch: &mut VecDeque<Waiting>) {
        let pooled = self.idle.lock().await.pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match self.connect().await {
                Ok(conn) => conn,
                Err(e) => return fail_all(batch, &e),
            },
        };
        #[cfg(test)]
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = tokio::time::timeout(self.config.timeout, exchange(&mut conn, batch)).await;
        let error = match outcome {
            Ok(Ok(Refusal::Clean)) => {
                let mut idle = self.idle.lock().await;
                if idle.len() < self.config.max_connections {
                    idle.push(conn);
                }
                return;
            }
            // memcached goes on with the next command after an error reply
            // (every reply was read, each pipeline has its own), but a
            // connection that saw one is not reused.
            Ok(Ok(Refusal::Seen)) => return,
            Ok(Err(Failure::Io(e))) => {
                // The server went away: every pooled connection is likely dead too.
                self.idle.lock().await.clear();
                Error::unavailable(format!("memcached at {} failed", self.config.addr), e)
            }
            Ok(Err(Failure::Malformed(line))) => {
                // The pipeline whose reply it was gets it as a refusal; the
                // ones after it may have run.
                if let Some(first) = batch.pop_front() {
                    let _ = first.reply.send(Err(Error::new(
                        ErrorKind::Permanent,
                        format!("memcached at {} sent a reply this client cannot read: {line:?}", self.config.addr),
                    )));
                }
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "memcached at {} sent a reply this client cannot read; these may have run",
                        self.config.addr
                    ),
                )
            }
            Err(_) => {
                Error::new(ErrorKind::Unavailable, format!("memcached at {} did not answer in time", self.config.addr))
            }
        };
        fail_all(batch, &error);
    }

    /// The error of a caller whose pipeline was taken by another caller
    /// that stopped (was cancelled) before handing out the replies.
    fn lost(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!("the connection to memcached at {} was dropped before the replies were read", self.config.addr),
        )
    }
}

/// Most commands sent in one shared write (a single pipeline may be
/// larger, and goes alone). Kept small: the whole write is sent before any
/// reply is read.
pub(crate) const MAX_SHARED_COMMANDS: usize = 512;

/// Most request bytes in one shared write (as above).
const MAX_SHARED_BYTES: usize = 128 * 1024;

/// Whether an exchange saw an error reply.
enum Refusal {
    /// No error reply.
    Clean,
    /// Some pipeline got an error reply (every pipeline has its replies).
    Seen,
}

/// A pipeline waiting to be sent, and where its replies go.
#[derive(Debug)]
struct Waiting {
    buf: Vec<u8>,
    count: usize,
    reply: oneshot::Sender<Result<Vec<Reply>>>,
}

fn fail_all(batch: &mut VecDeque<Waiting>, error: &Error) {
    for waiting in batch.drain(..) {
        let _ = waiting.reply.send(Err(error.clone()));
    }
}

enum Failure {
    Io(std::io::Error),
    Malformed(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Writes every pipeline of `batch` in one write, then reads the replies
/// in order, handing each pipeline its own as soon as they are all read
/// (and taking it out of `batch`).
async fn exchange(conn: &mut Conn, batch: &mut VecDeque<Waiting>) -> std::result::Result<Refusal, Failure> {
    if batch.len() == 1 {
        conn.get_mut().write_all(&batch[0].buf).await?;
    } else {
        let mut buf = Vec::with_capacity(batch.iter().map(|w| w.buf.len()).sum());
        batch.iter().for_each(|w| buf.extend_from_slice(&w.buf));
        conn.get_mut().write_all(&buf).await?;
    }
    let mut refused = false;
    let mut line = Vec::new();
    while let Some(waiting) = batch.front() {
        let mut replies = Vec::with_capacity(waiting.count);
        for _ in 0..waiting.count {
            line.clear();
            let n = (&mut *conn).take(MAX_LINE as u64).read_until(b'\n', &mut line).await?;
            if n == 0 || !line.ends_with(b"\r\n") {
                return Err(Failure::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "memcached closed the connection or sent a malformed line",
                )));
            }
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let reply = parse_reply(conn, &text).await?;
            refused |= matches!(reply.status, Status::Refused(_));
            replies.push(reply);
        }
        let waiting = batch.pop_front().expect("front exists");
        let _ = waiting.reply.send(Ok(replies));
    }
    Ok(if refused { Refusal::Seen } else { Refusal::Clean })
}

async fn parse_reply(conn: &mut Conn, text: &str) -> std::result::Result<Reply, Failure> {
    let mut tokens = text.split(' ');
    let code = tokens.next().unwrap_or("");
    let status = match code {
        "VA" => Status::Value,
        "HD" => Status::Done,
        "EN" => Status::Miss,
        "NF" => Status::NotFound,
        "NS" => Status::NotStored,
        "EX" => Status::Exists,
        "MN" => Status::Noop,
        // memcached goes on with the next command after an error reply, so
        // the pipeline's other replies are still read.
        "SERVER_ERROR" if text.contains("out of memory") => Status::Refused(ErrorKind::Unavailable),
        "SERVER_ERROR" | "CLIENT_ERROR" | "ERROR" => Status::Refused(ErrorKind::Permanent),
        _ => return Err(Failure::Malformed(text.to_string())),
    };
    if let Status::Refused(_) = status {
        return Ok(Reply { status, value: Some(text.as_bytes().to_vec()), cas: None });
    }
    let mut value = None;
    if status == Status::Value {
        let size: usize =
            tokens.next().and_then(|s| s.parse().ok()).ok_or_else(|| Failure::Malformed(text.to_string()))?;
        let mut data = vec![0; size + 2];
        conn.read_exact(&mut data).await?;
        if !data.ends_with(b"\r\n") {
            return Err(Failure::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "value without CRLF")));
        }
        data.truncate(size);
        value = Some(data);
    }
    let cas = tokens.find_map(|t| t.strip_prefix('c')).and_then(|c| c.parse().ok());
    Ok(Reply { status, value, cas })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_write_meta_commands() {
        let mut p = Pipeline::new();
        p.get("a", "v c").set("b", b"x y", "ME").arith("c", "D5 v").delete("d", "").noop();
        assert_eq!(p.len(), 5);
        assert_eq!(String::from_utf8(p.buf).unwrap(), "mg a v c\r\nms b 3 ME\r\nx y\r\nma c D5 v\r\nmd d\r\nmn\r\n");
    }

    /// A configuration of one connection to the test server, or `None`
    /// after a loud message (a panic under `CI=true`).
    fn one_connection_to_the_test_server() -> Option<ClientConfig> {
        let url = conformance::service_url("COUNTERS_TEST_MEMCACHE_URL")?;
        Some(ClientConfig {
            addr: crate::MemcacheTarget::parse(&url).unwrap().addr(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_connections: 1,
        })
    }

    /// Against the test server: with one connection, 200 concurrent
    /// callers' pipelines go out in shared writes, and each caller gets
    /// its own replies, in its own order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pipelines_share_writes_and_each_gets_its_own_replies() {
        let Some(config) = one_connection_to_the_test_server() else { return };
        let client = std::sync::Arc::new(Client::new(config));
        let prefix = format!("client-{:016x}", rand::random::<u64>());
        let mut p = Pipeline::new();
        p.set(&format!("{prefix}:n"), b"0", "");
        assert!(client.run(&p).await.unwrap()[0].ok());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (client, prefix) = (client.clone(), prefix.clone());
                tokio::spawn(async move {
                    let (key, value) = (format!("{prefix}:{i}"), format!("value {i}"));
                    let mut p = Pipeline::new();
                    p.set(&key, value.as_bytes(), "").get(&key, "v").arith(&format!("{prefix}:n"), "v");
                    let replies = client.run(&p).await.unwrap();
                    assert_eq!(replies.len(), 3);
                    assert!(replies[0].ok());
                    assert_eq!(replies[1].text(), Some(value.as_str()), "caller {i} got its own value");
                    replies[2].text().unwrap().trim_end().parse::<u64>().unwrap()
                })
            })
            .collect();
        let mut counts = Vec::new();
        for task in tasks {
            counts.push(task.await.unwrap());
        }
        counts.sort();
        assert_eq!(counts, (1..=200).collect::<Vec<u64>>(), "every increment once");
        let writes = client.pool.writes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(writes < 200, "{writes} writes for 201 pipelines on one connection: none was shared");
    }

    /// Against the test server: in a shared write, an error reply is its
    /// own command's (the cache handles refusals such as memcached's
    /// occasional refusal of an `ma`): the pipelines before and after it
    /// get their replies, and the connection is not reused.
    #[tokio::test]
    async fn an_error_reply_in_a_shared_write_is_one_commands_and_the_connection_is_dropped() {
        let Some(config) = one_connection_to_the_test_server() else { return };
        let pool = Pool::new(config);
        let mut batch = VecDeque::new();
        let mut receivers = Vec::new();
        for request in [&b"mn\r\n"[..], b"mg refused-flag !\r\nmn\r\n", b"mn\r\n"] {
            let (reply, replies) = oneshot::channel();
            let count = request.windows(2).filter(|w| w == b"\r\n").count();
            batch.push_back(Waiting { buf: request.to_vec(), count, reply });
            receivers.push(replies);
        }
        pool.send(&mut batch).await;
        assert!(batch.is_empty(), "every pipeline got an answer");
        let before = receivers.remove(0).await.unwrap().unwrap();
        assert_eq!(before[0].status, Status::Noop);
        let refused = receivers.remove(0).await.unwrap().unwrap();
        assert!(matches!(refused[0].status, Status::Refused(ErrorKind::Permanent)), "{refused:?}");
        assert_eq!(refused[1].status, Status::Noop);
        let after = receivers.remove(0).await.unwrap().unwrap();
        assert_eq!(after[0].status, Status::Noop);
        assert!(pool.idle.lock().await.is_empty(), "the connection is not reused");
    }

    #[test]
    fn keys_must_be_printable_ascii_without_spaces() {
        assert!(key_is_safe("a:b%20c"));
        assert!(!key_is_safe("a b"));
        assert!(!key_is_safe("a\r\nflush_all"));
        assert!(!key_is_safe(""));
        assert!(!key_is_safe(&"x".repeat(251)));
        assert!(!key_is_safe("ü"));
    }
}
