//! The reference for `/health` (benches/http_vs_nginx.sh): a bare actix-web
//! server that answers `GET /health` with the bytes of a file, read once, on
//! as many workers as the daemon runs (one per core, at least two), with
//! the headers the daemon's probe sends (JSON, `Cache-Control: no-store`).
//! No routing table, no middleware, no health snapshot: what the daemon's
//! probe costs beyond this is the price of its own path.
//!
//! Usage: `http_reference ADDR BODY_FILE`

use actix_web::http::header::{ContentType, HeaderValue, CACHE_CONTROL};
use actix_web::web::Bytes;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, body_file] = args.as_slice() else {
        bail!("usage: http_reference ADDR BODY_FILE");
    };
    let body =
        Bytes::from(std::fs::read(body_file).with_context(|| format!("reading {body_file}"))?);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let body = body.clone();
            App::new().route(
                "/health",
                web::get().to(move || {
                    let body = body.clone();
                    async move {
                        HttpResponse::Ok()
                            .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
                            .content_type(ContentType::json())
                            .body(body)
                    }
                }),
            )
        })
        .workers(workers)
        .bind(addr.as_str())
        .with_context(|| format!("binding {addr}"))?
        .run()
        .await
        .context("serving")
    })
}
