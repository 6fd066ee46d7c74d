//! A function's routes as data. Each API function lists its routes once, in `routes()`: one
//! [`Route`] per method and path, naming the handler (`Route::get(PATH, handler)`). Its
//! `router()` is built from that list with [`router`], the local server merges the same
//! routers, and the template checks (`tests/tests/template.rs`) compare the list with the
//! `HttpApi` events of `infra/template.yaml`, so code and template cannot drift apart.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{self, MethodRouter};
use axum::Router;

/// One route: method, path (axum and API Gateway share the `{param}` syntax) and handler.
pub struct Route<S> {
    pub method: Method,
    pub path: &'static str,
    endpoint: MethodRouter<S>,
}

macro_rules! constructor {
    ($name:ident, $method:ident) => {
        #[doc = concat!("`", stringify!($method), " path` served by `handler`.")]
        pub fn $name<H, T>(path: &'static str, handler: H) -> Self
        where
            H: Handler<T, S>,
            T: 'static,
        {
            Route {
                method: Method::$method,
                path,
                endpoint: routing::$name(handler),
            }
        }
    };
}

impl<S> Route<S>
where
    S: Clone + Send + Sync + 'static,
{
    constructor!(get, GET);
    constructor!(post, POST);
    constructor!(put, PUT);
    constructor!(patch, PATCH);
    constructor!(delete, DELETE);
}

/// The router serving exactly `routes` (routes sharing a path are merged; the same method twice
/// on one path panics when the router is built, i.e. at start).
pub fn router<S>(routes: Vec<Route<S>>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.into_iter().fold(Router::new(), |router, route| {
        router.route(route.path, route.endpoint)
    })
}

/// `(method, path)` of each route, e.g. `("GET", "/api/.../{id}")`, as the template writes them.
pub fn signatures<S>(routes: &[Route<S>]) -> Vec<(String, String)> {
    routes
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn ok() -> &'static str {
        "ok"
    }

    #[tokio::test]
    async fn serves_exactly_the_listed_routes() {
        let routes: Vec<Route<()>> = vec![
            Route::get("/a/{id}", ok),
            Route::delete("/a/{id}", ok),
            Route::post("/b", ok),
        ];
        assert_eq!(
            signatures(&routes),
            vec![
                ("GET".to_owned(), "/a/{id}".to_owned()),
                ("DELETE".to_owned(), "/a/{id}".to_owned()),
                ("POST".to_owned(), "/b".to_owned()),
            ]
        );
        let app = router(routes).with_state(());
        let status = |method: &str, uri: &str| {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let app = app.clone();
            async move { app.oneshot(request).await.unwrap().status() }
        };
        assert_eq!(status("GET", "/a/1").await, StatusCode::OK);
        assert_eq!(status("DELETE", "/a/1").await, StatusCode::OK);
        assert_eq!(status("POST", "/b").await, StatusCode::OK);
        assert_eq!(status("PUT", "/a/1").await, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status("GET", "/c").await, StatusCode::NOT_FOUND);
    }
}
