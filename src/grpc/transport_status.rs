//! Statuses that come from the transport rather than from a handler, with the codes the gRPC
//! status-code guide gives them: a request that runs past its deadline is `DEADLINE_EXCEEDED`
//! (tonic's own timeout answers `CANCELLED` "Timeout expired"), and a request message over the
//! size limit is `RESOURCE_EXHAUSTED` (tonic's decoder answers `OUT_OF_RANGE`).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::{Code, Status};

/// Applies the request deadline (the sooner of the server's bound and the client's
/// `grpc-timeout`) and corrects the code of an oversized request.
#[derive(Debug, Clone, Copy)]
pub struct TransportStatusLayer {
    /// The server's bound on any request.
    pub request_timeout: Duration,
    /// The largest request message, for the message of the refusal.
    pub max_request_bytes: usize,
}

impl<S> tower::Layer<S> for TransportStatusLayer {
    type Service = TransportStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TransportStatus { inner, settings: *self }
    }
}

/// See [`TransportStatusLayer`].
#[derive(Debug, Clone)]
pub struct TransportStatus<S> {
    inner: S,
    settings: TransportStatusLayer,
}

/// tonic's decoder refuses a message over `max_decoding_message_size` with this message.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Tonic's own timeout layer (outside every user layer) also starts a timer on the client's
/// `grpc-timeout`, a few microseconds before this one; ending ours a millisecond early makes
/// sure the caller gets this layer's answer, not tonic's `CANCELLED`.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_millis(1);

impl<S, B, R> tower::Service<http::Request<B>> for TransportStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = self.settings.request_timeout;
        let client = request.headers().get("grpc-timeout").and_then(parse_grpc_timeout);
        let (limit, clients) = match client {
            Some(client) if client < server => (client.saturating_sub(CLIENT_DEADLINE_MARGIN), true),
            _ => (server, false),
        };
        let max_bytes = self.settings.max_request_bytes;
        // Dropping the handler's future at the deadline also drops anything it waits for, such
        // as a queued password hash, so no work is done for a caller who has gone.
        let response = tokio::time::timeout(limit, self.inner.call(request));
        Box::pin(async move {
            let Ok(response) = response.await else {
                let status = if clients {
                    Status::deadline_exceeded("the deadline the client set passed")
                } else {
                    Status::deadline_exceeded(format!(
                        "the request did not finish within the server's limit of {}",
                        humantime::format_duration(server)
                    ))
                };
                return Ok(status.into_http());
            };
            let response = response?;
            if let Some(refused) = response.extensions().get::<Status>()
                && refused.code() == Code::OutOfRange
                && refused.message().starts_with(TONIC_TOO_LARGE)
            {
                return Ok(Status::resource_exhausted(format!(
                    "the request message is larger than the limit of {max_bytes} bytes"
                ))
                .into_http());
            }
            Ok(response.map(tonic::body::Body::new))
        })
    }
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (gRPC over HTTP/2).
fn parse_grpc_timeout(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use tower::{Layer, Service};

    use super::*;

    /// A handler that never answers.
    #[derive(Clone)]
    struct Stuck;

    impl Service<http::Request<()>> for Stuck {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Pending<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::pending()
        }
    }

    async fn answer(client_timeout: Option<&'static str>) -> Status {
        let layer = TransportStatusLayer { request_timeout: Duration::from_millis(200), max_request_bytes: 10 };
        let mut service = layer.layer(Stuck);
        let mut request = http::Request::new(());
        if let Some(t) = client_timeout {
            request.headers_mut().insert("grpc-timeout", http::HeaderValue::from_static(t));
        }
        let response = service.call(request).await.unwrap();
        Status::from_header_map(response.headers()).unwrap()
    }

    #[tokio::test]
    async fn deadlines_are_deadline_exceeded() {
        let started = std::time::Instant::now();
        let status = answer(Some("50m")).await;
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("client"), "{status:?}");
        assert!(started.elapsed() < Duration::from_millis(150));
        let status = answer(Some("10S")).await;
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("200ms"), "{status:?}");
        assert_eq!(answer(None).await.code(), Code::DeadlineExceeded);
    }

    #[test]
    fn parses_grpc_timeouts() {
        let parse = |s: &'static str| parse_grpc_timeout(&http::HeaderValue::from_static(s));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("S"), None);
        assert_eq!(parse("5x"), None);
    }
}
