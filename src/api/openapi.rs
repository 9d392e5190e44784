//! The OpenAPI 3.1 document served at `/openapi.json`, derived from the
//! handlers: each carries its route, parameters, body and answers
//! (`#[utoipa::path]`), and the bodies are the types the handlers send and
//! take (`ToSchema`), so the document cannot drift from the code. What
//! every route shares is added here: the guard's answers (401, 403, 421,
//! 429), a failing store's 503 and an internal 500, the bearer token, and
//! the limits of this server's configuration.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{HttpMethod, RefOr, Response, ResponseBuilder, Schema};

use super::error::ErrorBody;
use super::{bars, features, jobs, status};
use crate::config::ServeConfig;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kiln",
        description = "Precomputed trading features: submit, read, follow. Every route but \
            /health takes `Authorization: Bearer <token>` when the server has a token; the \
            dashboard's session cookie also opens /v1/events and /metrics."
    ),
    paths(
        jobs::compute_batch,
        jobs::list_jobs,
        jobs::retry_matching,
        jobs::cancel_matching,
        jobs::pause_priority,
        jobs::resume_priority,
        jobs::get_job,
        jobs::cancel_job,
        jobs::retry_job,
        bars::post_bars,
        bars::list_symbols,
        bars::get_bars,
        features::query_features,
        features::latest_features,
        features::get_feature,
        status::events,
        status::stats,
        status::health,
        status::metrics,
        status::openapi,
    ),
    components(schemas(
        super::schema::SymbolName,
        super::schema::StateName,
        super::schema::PriorityName,
        super::schema::FeatureSpecText,
        super::schema::FeatureList,
        super::schema::TimeText,
        super::schema::TimeValue,
        super::schema::StateFilter,
        super::schema::PriorityFilter,
        super::schema::SymbolFilter,
        super::schema::Whole,
    )),
    security(("bearer" = [])),
)]
struct Doc;

/// The document for a server with `config`.
pub fn document(config: &ServeConfig) -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    for name in ["BatchRequest", "TableRequest"] {
        bound_symbols(components.schemas.get_mut(name), config.batch_symbols_max);
    }
    for item in doc.paths.paths.values_mut() {
        for (method, op) in [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
        ] {
            let Some(op) = op else { continue };
            // `security(())` (an empty requirement) marks a public route.
            let public = op
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
            let answers = &mut op.responses.responses;
            let mut add = |code: u16, what: &str| {
                answers
                    .entry(code.to_string())
                    .or_insert_with(|| error(what));
            };
            if !public {
                add(
                    401,
                    "No or a wrong bearer token (or dashboard session), when the server has a token",
                );
            }
            if method != HttpMethod::Get {
                add(
                    403,
                    "A browser's request from another origin (Origin or Sec-Fetch-Site)",
                );
            }
            add(
                421,
                "A Host that is not an IP address, localhost or a name given with --host",
            );
            add(
                429,
                "The client is over requests_per_s (Retry-After says when to try again)",
            );
            add(500, "An internal failure");
            add(503, "The store is failing or closing");
        }
    }
    doc
}

/// An answer with an error body.
fn error(what: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(what)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    <ErrorBody as utoipa::ToSchema>::name(),
                ))))
                .build(),
        )
        .into()
}

/// Bounds the `symbols` array of a request body to `max` items.
fn bound_symbols(schema: Option<&mut RefOr<Schema>>, max: usize) {
    let Some(RefOr::T(Schema::Object(body))) = schema else {
        return;
    };
    if let Some(RefOr::T(Schema::Array(symbols))) = body.properties.get_mut("symbols") {
        symbols.max_items = Some(max);
    }
}
