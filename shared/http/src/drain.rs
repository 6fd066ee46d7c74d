//! For servers that stream request bodies (the local server): reads what is left of a refused
//! request's body before the answer goes out, so a client still writing a large body reads the
//! 413 (or other 4xx) instead of a broken pipe when the server closes the connection under it.
//! API Gateway buffers whole bodies before Lambda sees them, so the functions never need this.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;

/// At most this much of a refused body is read (API Gateway's payload limit is 10 MB); a client
/// sending more gets the connection closed, as before.
pub const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// And for at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Middleware: the handler reads the body through a shared handle; when it answers 4xx without
/// having read all of it, the rest is read and dropped (within [`DRAIN_LIMIT`], [`DRAIN_TIME`]).
pub async fn drain_refused_bodies(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let shared = Arc::new(Mutex::new(Some(body.into_data_stream())));
    let handler_side = shared.clone();
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| {
        let mut guard = handler_side.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(stream) => stream.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }));
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.status().is_client_error() {
        let rest = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(rest) = rest {
            let _ = tokio::time::timeout(DRAIN_TIME, drain(rest)).await;
        }
    }
    response
}

async fn drain(mut rest: BodyDataStream) {
    let mut read = 0;
    while let Some(Ok(chunk)) = rest.next().await {
        read += chunk.len();
        if read > DRAIN_LIMIT {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn refused_bodies_are_read_and_accepted_ones_reach_the_handler() -> anyhow::Result<()> {
        let read = Arc::new(Mutex::new(0usize));
        let counted = read.clone();
        let chunks = futures::stream::iter((0..4).map(move |_| {
            *counted.lock().unwrap_or_else(PoisonError::into_inner) += 1;
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"xxxx"))
        }));
        let app = Router::new()
            .route(
                "/refuse",
                post(|| async { axum::http::StatusCode::PAYLOAD_TOO_LARGE }),
            )
            .route("/echo", post(|body: String| async move { body }))
            .layer(axum::middleware::from_fn(drain_refused_bodies));
        let refused = app
            .clone()
            .oneshot(Request::post("/refuse").body(Body::from_stream(chunks))?)
            .await?;
        assert_eq!(refused.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(*read.lock().unwrap_or_else(PoisonError::into_inner), 4);
        let echoed = app
            .oneshot(Request::post("/echo").body(Body::from("hello"))?)
            .await?;
        assert_eq!(echoed.into_body().collect().await?.to_bytes(), "hello");
        Ok(())
    }
}
