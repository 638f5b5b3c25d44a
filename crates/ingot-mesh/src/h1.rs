//! The HTTP/1.1 fast path: a client connection's plain requests are
//! forwarded by one task that reads the head once (httparse), writes it to
//! a pooled replica connection with the hop-by-hop headers dropped and the
//! client added to `X-Forwarded-For` and `Forwarded`, and copies the response back, its
//! head rewritten the same way and its body passed through byte for byte
//! (a chunked body too: [`Chunks`] only follows its framing to find the
//! end). No header map is built, nothing is boxed per request, and no other
//! task is woken in between.
//!
//! What it does not take, it hands over before touching: a request that is
//! not HTTP/1.1 in origin form, has a `Transfer-Encoding`, an `Upgrade`, an
//! `Expect`, more than one `Content-Length`, a body over [`REPLAY_BODY`] or
//! a head over [`MAX_REQUEST_HEAD`] goes, with the rest of its connection
//! and every byte read of it so far, to the hyper path
//! ([`Served::Handoff`]), which streams, upgrades and refuses as before.
//!
//! The same rules as the hyper path: a request is sent again (to another
//! connection or replica) only when it was not written, or when it is
//! idempotent (its body, at most [`REPLAY_BODY`], is in hand); a replica
//! that sends no response head within the listener's response timeout
//! costs a 504; a response whose framing is ambiguous (several different
//! `Content-Length`s) or broken is a 502 and its connection is dropped, so
//! one response cannot bleed into another client's.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{InFlight, Pool, Tally, Target, REPLAY_BODY};

/// The largest request head the fast path reads; a larger one (or one
/// still incomplete at this size) goes to hyper with its connection.
pub const MAX_REQUEST_HEAD: usize = 16 << 10;
/// The largest response head (interim ones included) a replica may send.
pub const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Headers per message the fast path parses (hyper's limit too): a
/// request with more goes to hyper, a response with more is refused.
const HEADERS: usize = 100;
/// The buffer a response head is read into, per request in flight.
const COPY: usize = 32 << 10;
/// What the buffer of a long response body grows to (about hyper's own
/// read buffer's limit): it doubles from
/// [`COPY`] each time a read fills it (fewer system calls for a large
/// download, little memory for a small one).
const MAX_COPY: usize = 256 << 10;

/// How a connection left the fast path.
pub(crate) enum Served {
    /// It is over (closed by either side, or timed out).
    Closed,
    /// A request the fast path does not take: these bytes, read from the
    /// client and not acted on, start what hyper is to serve.
    Handoff(Vec<u8>),
}

/// A request ready to go to a replica.
#[derive(Debug)]
pub struct Outgoing {
    /// Its head and body as the replica gets them.
    pub bytes: Vec<u8>,
    /// How many bytes of the client's stream it took.
    pub taken: usize,
    /// Whether it may be sent again after a replica lost it.
    pub idempotent: bool,
    /// A HEAD request: its response has no body whatever it says.
    pub head_only: bool,
    /// The client asked to close the connection after it.
    pub close: bool,
}

/// What the client's bytes so far make.
#[derive(Debug)]
pub enum Request {
    /// Not a whole head yet.
    Partial,
    /// A whole head; the body is not all there: the request takes this
    /// many bytes.
    Body(usize),
    /// Not for the fast path.
    Handoff,
    Ready(Outgoing),
}

/// Request headers that describe the connection, not the message.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether a header frames a message's body.
fn framing(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// A `Content-Length` value: decimal digits only (no sign, no list).
fn length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The tokens of a `Connection` header value, `close` aside (whether it
/// was there); None when it is not text.
fn connection_tokens<'a>(v: &'a [u8], named: &mut Vec<&'a str>) -> Option<bool> {
    let mut close = false;
    for t in std::str::from_utf8(v).ok()?.split(',').map(str::trim) {
        if t.eq_ignore_ascii_case("close") {
            close = true;
        } else if !t.is_empty() && !t.eq_ignore_ascii_case("keep-alive") {
            named.push(t);
        }
    }
    Some(close)
}

/// Parses the client's bytes into a request for a replica.
pub fn request(buf: &[u8], client: IpAddr) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => return Request::Partial,
        _ => return Request::Handoff,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Request::Handoff;
    };
    if !path.starts_with('/') || method == "CONNECT" {
        return Request::Handoff;
    }
    let mut body: Option<u64> = None;
    let mut close = false;
    let mut named = Vec::new();
    for h in req.headers.iter() {
        let n = h.name;
        if ["transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|x| n.eq_ignore_ascii_case(x))
        {
            return Request::Handoff;
        }
        if n.eq_ignore_ascii_case("content-length") {
            if body.is_some() {
                return Request::Handoff;
            }
            match length(h.value) {
                Some(l) => body = Some(l),
                None => return Request::Handoff,
            }
        } else if n.eq_ignore_ascii_case("connection") {
            match connection_tokens(h.value, &mut named) {
                Some(c) => close |= c,
                None => return Request::Handoff,
            }
        }
    }
    // A Connection header naming a header that frames or routes the
    // message would have it dropped while the body still goes: hyper's.
    if named.iter().any(|n| framing(n) || n.eq_ignore_ascii_case("host")) {
        return Request::Handoff;
    }
    let body = body.unwrap_or(0);
    if body > REPLAY_BODY as u64 {
        return Request::Handoff;
    }
    let body = body as usize;
    if buf.len() < head + body {
        return Request::Body(head + body);
    }
    let mut out = Vec::with_capacity(head + body + 64);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The prior hops of X-Forwarded-For and Forwarded, this one added last.
    let (mut forwarded, mut hops) = (Vec::new(), Vec::new());
    for h in req.headers.iter() {
        if hop_by_hop(h.name) || named.iter().any(|x| h.name.eq_ignore_ascii_case(x)) {
            continue;
        }
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded.extend(crate::hop_list(std::iter::once(h.value)));
            continue;
        }
        if h.name.eq_ignore_ascii_case("forwarded") {
            hops.extend(crate::hop_list(std::iter::once(h.value)));
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(&forwarded);
    let _ = write!(out, "{client}\r\nforwarded: ");
    out.extend_from_slice(&hops);
    out.extend_from_slice(crate::forwarded_element(client).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&buf[head..head + body]);
    let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE");
    Request::Ready(Outgoing {
        bytes: out,
        taken: head + body,
        idempotent,
        head_only: method == "HEAD",
        close,
    })
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// It has none (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// When the replica closes the connection.
    Close,
}

/// A replica's response head as the client gets it.
#[derive(Debug)]
pub struct Answer {
    /// The rewritten head.
    pub head: Vec<u8>,
    /// How many bytes of the replica's stream the head took.
    pub taken: usize,
    pub status: u16,
    pub framing: Framing,
    /// The replica keeps the connection open after the body.
    pub keep_alive: bool,
}

/// What the replica's bytes so far make.
#[derive(Debug)]
pub enum Response {
    Partial,
    /// An interim (1xx) head: the bytes it took, and the head rewritten
    /// for the client.
    Interim(usize, Vec<u8>),
    Ready(Answer),
}

/// Parses a replica's bytes into the response head for the client;
/// `head_only`: the request was HEAD; `close`: the client's connection
/// closes after this response. An error names what is wrong with it.
pub fn response(buf: &[u8], head_only: bool, close: bool) -> Result<Response, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let taken = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Ok(Response::Partial),
        Ok(httparse::Status::Partial) => return Err("response head too large"),
        Err(_) => return Err("malformed response head"),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err("malformed response head");
    };
    match status {
        0..=99 => return Err("malformed status"),
        101 => return Err("switched protocols unasked"),
        _ => {}
    }
    let mut lengths: Option<u64> = None;
    let mut chunked = None;
    let mut keep_alive = version == 1;
    let mut named = Vec::new();
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let l = length(h.value).ok_or("bad Content-Length")?;
            if lengths.is_some_and(|x| x != l) {
                return Err("conflicting Content-Length");
            }
            lengths = Some(l);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked, or read until close.
            let v = std::str::from_utf8(h.value).map_err(|_| "bad Transfer-Encoding")?;
            let last = v
                .split(',')
                .map(str::trim)
                .rfind(|t| !t.is_empty())
                .ok_or("empty Transfer-Encoding")?;
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection")
            && connection_tokens(h.value, &mut named).ok_or("bad Connection")?
        {
            keep_alive = false;
        }
    }
    // The headers that frame the body stay, whatever Connection names.
    named.retain(|n| !framing(n));
    // Both: the length is wrong (RFC 9112 6.3), and so may be the replica.
    if chunked.is_some() && lengths.is_some() {
        keep_alive = false;
    }
    if (100..200).contains(&status) {
        let mut head = Vec::with_capacity(taken);
        let _ = write!(head, "HTTP/1.1 {status} {}\r\n", resp.reason.unwrap_or(""));
        copy_headers(&mut head, resp.headers, &named, false);
        head.extend_from_slice(b"\r\n");
        return Ok(Response::Interim(taken, head));
    }
    let framing = if head_only || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, lengths) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(l)) => Framing::Length(l),
            (None, None) => Framing::Close,
        }
    };
    let close = close || framing == Framing::Close;
    let mut head = Vec::with_capacity(taken + 32);
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", resp.reason.unwrap_or(""));
    copy_headers(&mut head, resp.headers, &named, chunked.is_some());
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(Response::Ready(Answer {
        head,
        taken,
        status,
        framing,
        keep_alive: keep_alive && framing != Framing::Close,
    }))
}

/// Copies a response's headers but the hop-by-hop ones, those `named` in
/// its Connection header and, when it has a Transfer-Encoding
/// (`chunked`), its Content-Length (wrong then: RFC 9112 6.3).
fn copy_headers(head: &mut Vec<u8>, headers: &[httparse::Header<'_>], named: &[&str], chunked: bool) {
    for h in headers {
        let n = h.name;
        let hop = ["connection", "keep-alive", "proxy-connection", "te", "upgrade"]
            .iter()
            .any(|x| n.eq_ignore_ascii_case(x));
        let stale = chunked && n.eq_ignore_ascii_case("content-length");
        if hop || stale || named.iter().any(|x| n.eq_ignore_ascii_case(x)) {
            continue;
        }
        head.extend_from_slice(n.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
}

/// Where [`Chunks`] is in a chunked body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum At {
    /// A chunk's size, `digits` hex digits of it read.
    #[default]
    Size,
    /// After the size: extensions up to the line's end.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line (or of the final empty one).
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Follows a chunked body (RFC 9112 7.1) as it streams past, to find where
/// it ends; the bytes themselves are passed on unchanged. Strict: lines
/// end in CRLF, sizes are hex without overflow, a size line with its
/// extensions is at most [`Chunks::LINE`] bytes and the trailers at most
/// [`Chunks::TRAILERS`].
#[derive(Debug, Default)]
pub struct Chunks {
    at: At,
    size: u64,
    digits: usize,
    line: usize,
    trailers: usize,
}

impl Chunks {
    pub const LINE: usize = 4096;
    pub const TRAILERS: usize = 16 << 10;

    /// Reads on in `b`; how many of its bytes belong to the body (all of
    /// them unless it ended within `b`).
    pub fn feed(&mut self, b: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < b.len() && self.at != At::Done {
            if self.at == At::Data {
                let n = (self.size.min((b.len() - i) as u64)) as usize;
                self.size -= n as u64;
                i += n;
                if self.size == 0 {
                    self.at = At::DataCr;
                }
                continue;
            }
            let c = b[i];
            i += 1;
            self.at = match self.at {
                At::Size => {
                    self.line += 1;
                    if let Some(d) = (c as char).to_digit(16) {
                        if self.size > u64::MAX >> 4 {
                            return Err("chunk size overflows");
                        }
                        self.size = self.size << 4 | d as u64;
                        self.digits += 1;
                        At::Size
                    } else if self.digits == 0 {
                        return Err("chunk size missing");
                    } else if c == b'\r' {
                        At::SizeLf
                    } else if matches!(c, b';' | b' ' | b'\t') {
                        At::Extension
                    } else {
                        return Err("bad chunk size");
                    }
                }
                At::Extension => {
                    self.line += 1;
                    match c {
                        b'\r' => At::SizeLf,
                        b'\n' => return Err("bare LF in a chunk extension"),
                        _ => At::Extension,
                    }
                }
                At::SizeLf if c == b'\n' => {
                    self.line = 0;
                    self.digits = 0;
                    if self.size == 0 {
                        At::TrailerStart
                    } else {
                        At::Data
                    }
                }
                At::DataCr if c == b'\r' => At::DataLf,
                At::DataLf if c == b'\n' => At::Size,
                At::TrailerStart if c == b'\r' => At::EndLf,
                At::TrailerStart | At::Trailer => {
                    self.trailers += 1;
                    match c {
                        b'\r' => At::TrailerLf,
                        b'\n' => return Err("bare LF in a trailer"),
                        _ => At::Trailer,
                    }
                }
                At::TrailerLf if c == b'\n' => At::TrailerStart,
                At::EndLf if c == b'\n' => At::Done,
                _ => return Err("chunk framing broken"),
            };
            if self.line > Self::LINE {
                return Err("chunk size line too long");
            }
            if self.trailers > Self::TRAILERS {
                return Err("trailers too large");
            }
        }
        Ok(i)
    }

    /// Whether the body has ended.
    pub fn done(&self) -> bool {
        self.at == At::Done
    }
}

/// Serves plain HTTP/1.1 requests on `stream` until it closes, times out,
/// or brings a request for the hyper path.
pub(crate) async fn serve(
    stream: &mut TcpStream,
    client: SocketAddr,
    pool: &Arc<Pool>,
    target: Target,
    draining: &mut tokio::sync::watch::Receiver<bool>,
) -> Served {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    // Whether the listener's drain can still be heard of.
    let mut listening = true;
    loop {
        // Parsed again only when that can change the answer: a head once
        // a line has ended in what came since, a body once it is all
        // there (a client trickling bytes costs no parse per byte).
        let mut fresh = 0;
        let mut need = 0;
        // The whole request must come within the header timeout (a second
        // once draining), however it trickles in.
        let mut deadline = crate::later(
            tokio::time::Instant::now(),
            if *draining.borrow() {
                Duration::from_secs(1)
            } else {
                target.header_timeout
            },
        );
        let req = loop {
            let line = buf[fresh..].contains(&b'\n') || buf.len() >= MAX_REQUEST_HEAD;
            if !buf.is_empty() && buf.len() >= need && (need > 0 || line) {
                match request(&buf, client.ip()) {
                    Request::Ready(r) => break r,
                    Request::Handoff => return Served::Handoff(buf),
                    Request::Body(n) => {
                        // The head is whole: the body (at most 64 KiB)
                        // gets a header timeout of its own, once.
                        if need == 0 {
                            deadline = deadline.max(crate::later(tokio::time::Instant::now(), target.header_timeout));
                        }
                        need = n;
                    }
                    Request::Partial => {}
                }
            }
            fresh = buf.len();
            let drained = *draining.borrow();
            buf.reserve(4096);
            let read = tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => r,
                c = draining.changed(), if listening && !drained => {
                    listening = c.is_ok();
                    if *draining.borrow() {
                        deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                    continue;
                }
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Served::Closed,
            }
        };
        buf.drain(..req.taken);
        let close = req.close || *draining.borrow();
        if !exchange(stream, &req, close, pool, target).await || close {
            let _ = stream.shutdown().await;
            return Served::Closed;
        }
    }
}

/// How one attempt to have a replica answer went wrong.
enum Failure {
    /// Nothing came back; `written`: the whole request had been written.
    Unanswered { written: bool, why: String },
    /// No response head within the response timeout.
    TimedOut,
    /// The replica answered with something that is not a response head.
    Broken(&'static str),
    /// The exchange broke after the client got the response head (or the
    /// client went away): its connection must close.
    Cut,
}

/// One request to a replica and its response to the client, with the
/// hyper path's retry rules; whether the client's connection stays open.
async fn exchange(client: &mut TcpStream, req: &Outgoing, close: bool, pool: &Arc<Pool>, target: Target) -> bool {
    pool.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t0 = tokio::time::Instant::now();
    let candidates = pool.pick_p2c(target.port);
    if candidates.is_empty() {
        return own(client, req, close, pool, 503, "no healthy replica".into(), t0).await;
    }
    let mut last = String::new();
    'replicas: for (addr, active) in candidates {
        let guard = InFlight::new(active);
        // A pooled connection may turn out closed: then another.
        for _ in 0..3 {
            let (mut up, pooled) = match pool.checkout_raw(addr) {
                Some(s) => (s, true),
                None => match connect(pool, addr).await {
                    Ok(s) => (s, false),
                    Err(e) => {
                        pool.report(addr, false);
                        last = format!("{addr}: {e}");
                        tracing::warn!(%addr, "replica unreachable, trying the next: {e}");
                        continue 'replicas;
                    }
                },
            };
            match relay(client, &mut up, req, close, target, pool, addr, &guard, t0).await {
                Ok((reusable, keep)) => {
                    if reusable {
                        pool.checkin_raw(addr, up);
                    }
                    return keep;
                }
                Err(Failure::Unanswered { written, why }) => {
                    last = format!("{addr}: {why}");
                    if written && !req.idempotent {
                        tracing::warn!(%addr, "request to replica failed after it was sent: {last}");
                        break 'replicas;
                    }
                    tracing::debug!(%addr, pooled, "request to replica failed, trying again: {last}");
                    if !pooled {
                        continue 'replicas;
                    }
                }
                Err(Failure::TimedOut) => {
                    pool.report(addr, false);
                    tracing::warn!(%addr, "replica did not answer within {:?}", target.response_timeout);
                    let msg = "the replica did not answer in time".into();
                    return own(client, req, close, pool, 504, msg, t0).await;
                }
                Err(Failure::Broken(why)) => {
                    pool.report(addr, false);
                    tracing::warn!(%addr, "replica's response refused: {why}");
                    let msg = format!("the replica's response was broken ({addr}: {why})");
                    return own(client, req, close, pool, 502, msg, t0).await;
                }
                Err(Failure::Cut) => return false,
            }
        }
    }
    own(
        client,
        req,
        close,
        pool,
        502,
        format!("no replica answered ({last})"),
        t0,
    )
    .await
}

/// An answer the mesh makes itself; whether the connection stays open.
async fn own(
    client: &mut TcpStream,
    req: &Outgoing,
    close: bool,
    pool: &Pool,
    code: u16,
    msg: String,
    t0: tokio::time::Instant,
) -> bool {
    let status = hyper::StatusCode::from_u16(code).expect("a status the mesh makes");
    crate::refused(pool, status, t0);
    let mut out = Vec::with_capacity(128 + msg.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n",
        msg.len() + 1,
        if close { "connection: close\r\n" } else { "" }
    );
    if !req.head_only {
        let _ = writeln!(out, "{msg}");
    }
    client.write_all(&out).await.is_ok()
}

/// Opens a connection to a replica (on a local bridge: one that takes
/// long to connect to is gone).
async fn connect(pool: &Pool, addr: SocketAddr) -> Result<TcpStream, String> {
    let s = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    pool.connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(s)
}

/// Writes `req` to `up` and copies the response to `client`: whether `up`
/// can take another request, and whether `client`'s connection stays open.
#[allow(clippy::too_many_arguments)]
async fn relay(
    client: &mut TcpStream,
    up: &mut TcpStream,
    req: &Outgoing,
    close: bool,
    target: Target,
    pool: &Pool,
    addr: SocketAddr,
    guard: &InFlight<Tally>,
    t0: tokio::time::Instant,
) -> Result<(bool, bool), Failure> {
    // Any byte of it written may have reached the replica.
    let mut sent = 0;
    while sent < req.bytes.len() {
        match up.write(&req.bytes[sent..]).await {
            Ok(n) if n > 0 => sent += n,
            r => {
                let why = r.err().map_or("connection closed".into(), |e| e.to_string());
                return Err(Failure::Unanswered { written: sent > 0, why });
            }
        }
    }
    let mut buf: Vec<u8> = Vec::with_capacity(COPY);
    let deadline = crate::later(tokio::time::Instant::now(), target.response_timeout);
    let mut interim = false;
    // As for requests: parsed again once a line has ended since.
    let mut fresh = 0;
    let answer = loop {
        if !buf.is_empty() && (buf[fresh..].contains(&b'\n') || buf.len() >= MAX_RESPONSE_HEAD) {
            match response(&buf, req.head_only, close).map_err(Failure::Broken)? {
                Response::Ready(a) => break a,
                Response::Interim(n, head) => {
                    client.write_all(&head).await.map_err(|_| Failure::Cut)?;
                    buf.drain(..n);
                    interim = true;
                    fresh = 0;
                    continue;
                }
                Response::Partial => {}
            }
        }
        fresh = buf.len();
        if buf.capacity() == buf.len() {
            buf.reserve(COPY);
        }
        match tokio::time::timeout_at(deadline, up.read_buf(&mut buf)).await {
            Err(_) => return Err(Failure::TimedOut),
            Ok(Ok(n)) if n > 0 => {}
            Ok(r) if buf.is_empty() && !interim => {
                let why = r.err().map_or("connection closed".into(), |e| e.to_string());
                return Err(Failure::Unanswered { written: true, why });
            }
            Ok(_) => return Err(Failure::Broken("the replica closed mid-head")),
        }
    };
    pool.report(addr, !(500..600).contains(&answer.status));
    guard.0.record(answer.status, t0.elapsed());
    let Answer {
        mut head,
        taken,
        framing,
        keep_alive,
        ..
    } = answer;
    let rest = &buf[taken..];
    // What of `rest` is this body's; the body's end (None: read on).
    let mut chunks = Chunks::default();
    let (now, mut left) = match framing {
        Framing::Empty => (0, Some(0)),
        Framing::Length(n) => {
            let now = (n.min(rest.len() as u64)) as usize;
            (now, Some(n - now as u64))
        }
        Framing::Chunked => {
            let now = chunks.feed(rest).map_err(Failure::Broken)?;
            (now, None)
        }
        Framing::Close => (rest.len(), None),
    };
    // Bytes past the body: the connection is out of step, not reused.
    let mut stray = rest.len() > now;
    head.extend_from_slice(&rest[..now]);
    drop(buf);
    client.write_all(&head).await.map_err(|_| Failure::Cut)?;
    drop(head);
    let ended = |left: Option<u64>, chunks: &Chunks| match framing {
        Framing::Chunked => chunks.done(),
        _ => left == Some(0),
    };
    if !ended(left, &chunks) {
        // A replica that stops sending its body, or a client that stops
        // taking it, for a response timeout cuts the response (nginx's
        // proxy_read_timeout and send_timeout), so neither holds the task.
        let stall = target.response_timeout;
        let mut copy = vec![0u8; COPY];
        loop {
            let want = match left {
                Some(n) => (n.min(copy.len() as u64)) as usize,
                None => copy.len(),
            };
            let n = match tokio::time::timeout(stall, up.read(&mut copy[..want])).await {
                Ok(Ok(n)) => n,
                _ => return Err(Failure::Cut),
            };
            if n == 0 {
                if framing == Framing::Close {
                    break;
                }
                // Cut short: the client must see it was.
                return Err(Failure::Cut);
            }
            let mine = match framing {
                Framing::Chunked => chunks.feed(&copy[..n]).map_err(|_| Failure::Cut)?,
                _ => n,
            };
            stray |= mine < n;
            match tokio::time::timeout(stall, client.write_all(&copy[..mine])).await {
                Ok(Ok(())) => {}
                _ => return Err(Failure::Cut),
            }
            if let Some(l) = left.as_mut() {
                *l -= n as u64;
            }
            if ended(left, &chunks) {
                break;
            }
            if n == copy.len() && copy.len() < MAX_COPY {
                copy.resize(copy.len() * 2, 0);
            }
        }
    }
    let reusable = keep_alive && !stray;
    Ok((reusable, framing != Framing::Close))
}

/// A connection that starts with bytes already read from it.
pub(crate) struct Prefixed {
    pub(crate) read: Vec<u8>,
    pub(crate) at: usize,
    pub(crate) stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.read.len() {
            let n = (self.read.len() - self.at).min(buf.remaining());
            buf.put_slice(&self.read[self.at..self.at + n]);
            self.at += n;
            if self.at == self.read.len() {
                self.read = Vec::new();
                self.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> IpAddr {
        "10.0.0.9".parse().unwrap()
    }

    fn ready(buf: &[u8]) -> Outgoing {
        match request(buf, ip()) {
            Request::Ready(r) => r,
            other => panic!("not ready: {other:?}"),
        }
    }

    #[test]
    fn requests_lose_hop_by_hop_headers_and_gain_the_client() {
        let input = b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
              Keep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\r\nGET /next";
        let r = ready(input);
        assert_eq!(
            String::from_utf8(r.bytes.clone()).unwrap(),
            "GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nx-forwarded-for: 1.2.3.4, 10.0.0.9\r\n\
             forwarded: for=10.0.0.9;proto=http\r\n\r\n"
        );
        // The client's head is taken; a pipelined request stays.
        assert_eq!(r.taken, input.len() - b"GET /next".len());
        assert!(r.idempotent && !r.head_only && !r.close);
    }

    #[test]
    fn a_body_comes_whole_and_close_is_heard() {
        let buf = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhel";
        assert!(matches!(request(buf, ip()), Request::Body(n) if n == buf.len() + 2));
        assert!(matches!(request(&buf[..20], ip()), Request::Partial));
        let mut whole = buf.to_vec();
        whole.extend_from_slice(b"loGET");
        let r = ready(&whole);
        assert_eq!(r.taken, whole.len() - 3);
        assert!(r.bytes.ends_with(b"\r\n\r\nhello"));
        assert!(r.close && !r.idempotent);
    }

    #[test]
    fn what_the_fast_path_does_not_take_goes_to_hyper() {
        for buf in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nConnection: content-length\r\nContent-Length: 1\r\n\r\nx",
            b"GET / HTTP/1.1\r\nConnection: Host\r\nHost: x\r\n\r\n",
            b"CONNECT /x HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(request(buf, ip()), Request::Handoff),
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
        // A head that is still incomplete at the limit.
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_REQUEST_HEAD, b'a');
        assert!(matches!(request(&long, ip()), Request::Handoff));
        long.truncate(MAX_REQUEST_HEAD - 1);
        assert!(matches!(request(&long, ip()), Request::Partial));
    }

    fn answer(buf: &[u8], head_only: bool, close: bool) -> Answer {
        match response(buf, head_only, close) {
            Ok(Response::Ready(a)) => a,
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn responses_are_framed_and_rewritten() {
        let a = answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nKeep-Alive: 5\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\nabc",
            false,
            false,
        );
        assert_eq!(a.framing, Framing::Length(3));
        assert!(a.keep_alive);
        assert_eq!(a.head, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
        // HEAD and 304: no body, whatever the length says; close asked.
        let a = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, true);
        assert_eq!(a.framing, Framing::Empty);
        assert!(a.head.ends_with(b"connection: close\r\n\r\n"));
        assert_eq!(answer(b"HTTP/1.1 304 No\r\n\r\n", false, false).framing, Framing::Empty);
        // Chunked wins over a length, which is dropped.
        let a = answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
            false,
        );
        assert_eq!(a.framing, Framing::Chunked);
        assert!(!String::from_utf8_lossy(&a.head).contains("Content-Length"));
        // No length: until the replica closes, and the client's closes too.
        let a = answer(b"HTTP/1.1 200 OK\r\n\r\n", false, false);
        assert_eq!(a.framing, Framing::Close);
        assert!(!a.keep_alive && a.head.ends_with(b"connection: close\r\n\r\n"));
        // HTTP/1.0 and Connection: close are not reused.
        assert!(!answer(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, false).keep_alive);
        assert!(
            !answer(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false,
                false
            )
            .keep_alive
        );
        // A Connection header cannot take the framing away.
        let a = answer(
            b"HTTP/1.1 200 OK\r\nConnection: content-length, transfer-encoding\r\nContent-Length: 2\r\n\r\n",
            false,
            false,
        );
        assert_eq!(a.head, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        // Chunked and a length: served chunked, the connection not reused.
        let a = answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            false,
        );
        assert!(a.framing == Framing::Chunked && !a.keep_alive);
        // Interim heads pass; ambiguous or broken ones are refused.
        assert!(matches!(
            response(b"HTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 200", false, false),
            Ok(Response::Interim(31, ref h)) if h == b"HTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            assert!(response(bad, false, false).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(
            response(b"HTTP/1.1 200 OK\r\nX", false, false),
            Ok(Response::Partial)
        ));
    }

    #[test]
    fn chunked_bodies_end_where_they_end_however_they_are_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\ngrpc-status: 0\r\n\r\nNEXT";
        let end = body.len() - 4;
        let mut whole = Chunks::default();
        assert_eq!(whole.feed(body).unwrap(), end);
        assert!(whole.done());
        for split in 1..body.len() {
            let mut c = Chunks::default();
            let a = c.feed(&body[..split]).unwrap();
            assert_eq!(a, split.min(end));
            let b = c.feed(&body[split..]).unwrap();
            assert_eq!(a + b, end, "split at {split}");
            assert!(c.done());
        }
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloXX",
            b"fffffffffffffffff\r\n",
            b"0\r\nbad\ntrailer",
        ] {
            assert!(Chunks::default().feed(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let mut long = b"1;".to_vec();
        long.resize(Chunks::LINE + 1, b'e');
        assert!(Chunks::default().feed(&long).is_err());
    }
}
