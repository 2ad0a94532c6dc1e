//! Faults and abuse at the transport: the codes a caller gets for a request that runs out of
//! time, an oversized or malformed message, and contended updates.

use std::time::Duration;

use bytes::{Buf, BufMut};
use gatehouse::{Config, proto::v1 as pb};
use prost::Message;
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::helpers::TestApp;

/// Sends `body` as the raw request message of `path`, bypassing the generated client's
/// encoding, and returns the answer's raw message.
async fn raw_call(app: &TestApp, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
}

/// A codec that passes bytes through unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

const SIGN_IN: &str = "/gatehouse.v1.AuthService/SignIn";

mod messages {
    use super::*;

    crate::both_backends!(malformed_messages_are_invalid_argument, oversized_messages_are_resource_exhausted);
}

/// Bytes that are not a valid protobuf message are the caller's fault.
async fn malformed_messages_are_invalid_argument(app: &TestApp) {
    let cases: [(&str, Vec<u8>); 3] = [
        // Field 1 (email), length-delimited, claims 100 bytes and has 1.
        ("truncated", vec![0x0a, 100, b'a']),
        // Field 1 with invalid UTF-8 in a string.
        ("invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        // Wire type 7 does not exist.
        ("bad wire type", vec![0x0f, 0x00]),
    ];
    for (what, bytes) in cases {
        let status = raw_call(app, SIGN_IN, bytes).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().contains("protobuf"), "{what}: {status:?}");
    }
    // A well-formed message on the same path is decoded and answered as usual.
    let good = pb::SignInRequest { email: "nobody@example.com".into(), password: "whatever it is".into() };
    let status = raw_call(app, SIGN_IN, good.encode_to_vec()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

/// A message over GATEHOUSE_MAX_REQUEST_BYTES is refused before it is decoded.
async fn oversized_messages_are_resource_exhausted(app: &TestApp) {
    let limit = Config::default_for_test().max_request_bytes;
    let huge = pb::SignInRequest { email: "big@example.com".into(), password: "x".repeat(limit) };
    let status = raw_call(app, SIGN_IN, huge.encode_to_vec()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(&limit.to_string()), "{status:?}");
    // The generated client gets the same.
    let status = app.auth().sign_in(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// Hashing slow enough that a sign-in outlasts a short request timeout.
mod deadlines {
    use super::*;

    pub fn slow_hashing(c: &mut Config) {
        c.argon2_memory_kib = 8192;
        c.argon2_iterations = 200;
        c.hash_threads = Some(1);
        c.request_timeout = Duration::from_millis(200);
    }

    crate::both_backends_with!(super::deadlines::slow_hashing; requests_past_their_deadline_are_deadline_exceeded);
}

/// The server's own bound ends a call with DEADLINE_EXCEEDED, not CANCELLED.
async fn requests_past_their_deadline_are_deadline_exceeded(app: &TestApp) {
    let slow = || pb::SignInRequest { email: "slow@example.com".into(), password: "slow hashing here".into() };
    let started = std::time::Instant::now();
    let status = app.auth().sign_in(slow()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "server limit: {status:?}");
    assert!(status.message().contains("200ms"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at the limit, took {:?}", started.elapsed());

    // A client's own `grpc-timeout` is shorter-lived than this: tonic's client ends the call
    // itself at that deadline (with CANCELLED, its choice). The server's answer to it is
    // checked in `grpc::transport_status`'s unit tests, and that the work is dropped in
    // `abandoned_sign_ins_are_not_hashed`.

    // Health is unaffected.
    let health = app.health().check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    assert!(health.is_ok(), "{health:?}");
}
