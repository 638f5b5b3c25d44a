//! Hostile clients and replicas never panic the mesh's HTTP/1.1 fast path:
//! a request it takes is HTTP/1.1 again, whole, with its body; a response
//! head it writes parses again, with the same status; a chunked body ends
//! at the same byte however the stream is split.
#![no_main]
use ingot_mesh::h1::{self, Chunks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let client = std::net::IpAddr::from([192, 0, 2, 7]);
    if let h1::Request::Ready(r) = h1::request(data, client) {
        assert!(r.taken <= data.len());
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut again = httparse::Request::new(&mut headers);
        let head = match again.parse(&r.bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("the request for the replica does not parse: {other:?}"),
        };
        assert_eq!(again.version, Some(1));
        assert!(again.headers.iter().all(|h| !h.name.eq_ignore_ascii_case("connection")));
        // The replica reads the body the mesh read: its length says so.
        let body = r.bytes.len() - head;
        let lengths: Vec<&[u8]> = again
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| h.value)
            .collect();
        assert!(again.headers.iter().all(|h| !h.name.eq_ignore_ascii_case("transfer-encoding")));
        match lengths[..] {
            [] => assert_eq!(body, 0),
            [l] => assert_eq!(std::str::from_utf8(l).unwrap().parse::<usize>().unwrap(), body),
            _ => panic!("several lengths went to the replica"),
        }
        // What follows the head is the client's body, nothing else.
        assert!(r.bytes.len() - head <= ingot_mesh::REPLAY_BODY);
        assert!(data[..r.taken].ends_with(&r.bytes[head..]));
    }
    let flags = data.first().copied().unwrap_or(0);
    if let Ok(h1::Response::Ready(a)) = h1::response(data, flags & 1 == 1, flags & 2 == 2) {
        assert!(a.taken <= data.len());
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut again = httparse::Response::new(&mut headers);
        assert!(matches!(again.parse(&a.head), Ok(httparse::Status::Complete(n)) if n == a.head.len()));
        assert_eq!(again.code, Some(a.status));
    }
    // Chunks: fed whole or in two pieces, the same end or the same error.
    let mut whole = Chunks::default();
    let one = whole.feed(data);
    let split = (flags as usize).min(data.len());
    let mut two = Chunks::default();
    let parts = two
        .feed(&data[..split])
        .and_then(|a| if two.done() { Ok(a) } else { two.feed(&data[split..]).map(|b| a + b) });
    assert_eq!(one.is_ok(), parts.is_ok());
    if let (Ok(a), Ok(b)) = (one, parts) {
        assert_eq!(a, b);
        assert_eq!(whole.done(), two.done());
    }
});
